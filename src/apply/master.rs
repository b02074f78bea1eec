//! Reloads HAProxy through its master CLI (`haproxy -W -S <socket>`) and verifies the reload
//! with `show proc`: the master's reload counter moved on, its failed-reload counter is zero and
//! a worker born of this reload (reload age 0) is up. Never guesses from PIDs.
//!
//! What HAProxy 2.6 shows (checked on Debian's 2.6.12): `show proc` lists
//! `<pid> master <reloads> [failed: <n>] <uptime> <version>`, then under `# workers` the
//! current worker and under `# old workers` those still finishing connections after a reload,
//! each as `<pid> worker <reloads> <uptime> <version>`, where `<reloads>` is how many reloads
//! the worker has outlived (0 = born of the latest reload). `failed` counts reloads that failed
//! since the last successful one, so it is back to 0 after a success. The `reload` command
//! itself answers nothing in 2.6 (the master re-executes and drops the connection); 2.7 and
//! later answer `Success=0|1` followed by the startup logs, which is used when present. A failed
//! reload in 2.6 leaves the old workers serving and the reason only in HAProxy's own log.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// Longest a single exchange with the master may block; the overall deadline bounds the rest.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read from the master (a `show proc` with hundreds of old workers is far less).
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// How long a socket that refuses connections is retried: the master refuses them for a moment
/// while it re-executes after a reload (someone else's, or one a killed run had sent), and a
/// run starting then would otherwise fail for nothing. A socket that is not there fails at once.
const REFUSED_PATIENCE: Duration = Duration::from_secs(2);

/// The parts of `show proc` the verification reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessTable {
    /// Reloads the master has done since it started.
    pub reloads: u64,
    /// Failed reloads since the last successful one.
    pub failed: u64,
    /// Workers as `(pid, reloads outlived)`; the current worker has 0.
    pub workers: Vec<(u32, u64)>,
}

impl ProcessTable {
    /// Parses `show proc`; `None` when there is no master line.
    pub fn parse(text: &str) -> Option<ProcessTable> {
        let mut master = None;
        let mut workers = Vec::new();
        let mut section = "";
        for line in text.lines() {
            let line = line.trim();
            if let Some(heading) = line.strip_prefix('#') {
                section = heading.trim();
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, "master", reloads, rest @ ..] => {
                    let reloads = reloads.parse().ok()?;
                    // `[failed: N]` is two fields: `[failed:` and `N]`.
                    let failed = match rest {
                        ["[failed:", count, ..] => count.trim_end_matches(']').parse().ok()?,
                        _ => 0,
                    };
                    master = Some((reloads, failed));
                }
                [pid, "worker", reloads, ..] if section != "programs" => {
                    if let (Ok(pid), Ok(reloads)) = (pid.parse(), reloads.parse()) {
                        workers.push((pid, reloads));
                    }
                }
                _ => {}
            }
        }
        let (reloads, failed) = master?;
        Some(ProcessTable {
            reloads,
            failed,
            workers,
        })
    }

    /// Workers that outlived at least one reload: still finishing old connections.
    pub fn old_workers(&self) -> usize {
        self.workers.iter().filter(|(_, age)| *age > 0).count()
    }

    fn has_current_worker(&self) -> bool {
        self.workers.iter().any(|(_, age)| *age == 0)
    }
}

/// Why a reload through the master CLI is not confirmed.
#[derive(Debug)]
pub struct ReloadError {
    /// `reload` or `rollback reload`, for messages.
    pub name: String,
    pub socket: PathBuf,
    pub reason: String,
    /// The last `show proc` seen, when there was one.
    pub last_seen: Option<String>,
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} through HAProxy's master socket {}: {}",
            self.name,
            self.socket.display(),
            self.reason
        )?;
        if let Some(seen) = &self.last_seen {
            let seen = seen.trim_end();
            write!(f, "\n{:-^79}\n{seen}\n{:-^79}", " show proc ", "")?;
        }
        Ok(())
    }
}

impl std::error::Error for ReloadError {}

/// Reloads through `socket` and waits, until `timeout` has passed, for `show proc` to confirm it.
pub fn reload(socket: &Path, name: &str, timeout: Duration) -> Result<(), ReloadError> {
    let deadline = Instant::now() + timeout;
    let fail = |reason: String, last_seen: Option<String>| ReloadError {
        name: name.to_string(),
        socket: socket.to_path_buf(),
        reason,
        last_seen,
    };
    let before_text = exchange(socket, "show proc", deadline).map_err(|e| {
        fail(
            format!("`show proc` failed before the reload: {e} (is HAProxy running with -S?)"),
            None,
        )
    })?;
    let before =
        ProcessTable::parse(&before_text).ok_or_else(|| fail(not_a_master(&before_text), None))?;

    // The master re-executes on `reload` and drops the connection: an error reading the answer
    // is expected; the `show proc` polling below is what decides.
    let answer = exchange(socket, "reload", deadline).unwrap_or_default();
    if answer.contains("Success=0") {
        return Err(fail(
            format!(
                "HAProxy refused the new configuration and keeps the previous workers:\n{}",
                answer.trim_end()
            ),
            None,
        ));
    }

    let mut pause = Duration::from_millis(10);
    let mut last_seen: Option<String> = None;
    loop {
        if let Ok(text) = exchange(socket, "show proc", deadline) {
            if let Some(now) = ProcessTable::parse(&text) {
                if now.reloads > before.reloads {
                    if now.failed > 0 {
                        return Err(fail(
                            "HAProxy reports the reload failed and keeps the previous workers \
                             (its own log, e.g. `journalctl -u haproxy`, says why)"
                                .to_string(),
                            Some(text),
                        ));
                    }
                    if now.has_current_worker() {
                        return Ok(());
                    }
                }
            }
            last_seen = Some(text);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(fail(
                format!(
                    "no new worker was reported within {timeout:?} (reload counter was {} before)",
                    before.reloads
                ),
                last_seen,
            ));
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// `show proc` on `socket`, parsed.
pub fn show_proc(socket: &Path, timeout: Duration) -> io::Result<ProcessTable> {
    let text = exchange(socket, "show proc", Instant::now() + timeout)?;
    ProcessTable::parse(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, not_a_master(&text)))
}

/// Why an answer to `show proc` without a master line is not the master CLI, in one line. A
/// stats socket (one worker's runtime API) answers `Unknown command` and its whole help text:
/// that is named, not pasted.
fn not_a_master(answer: &str) -> String {
    if answer.contains("Unknown command") {
        return "this is a stats socket (`stats socket` in the global section, one worker's \
                runtime API), not the master CLI: give --haproxy-master-socket the socket of \
                `haproxy -W -S PATH` (Debian's unit uses /run/haproxy-master.sock)"
            .to_string();
    }
    let first = answer
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let first: String = first.chars().take(120).collect();
    format!("`show proc` listed no master process (it answered {first:?}): is this HAProxy's master CLI?")
}

/// Sends one command (followed by `quit`, or the master keeps the session open) and reads the
/// answer to the end, bounded by `deadline` and [`EXCHANGE_TIMEOUT`].
fn exchange(socket: &Path, command: &str, deadline: Instant) -> io::Result<String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    let limit = left.min(EXCHANGE_TIMEOUT);
    let mut stream = connect(socket, deadline)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    stream.write_all(format!("{command}; quit\n").as_bytes())?;
    let mut answer = Vec::new();
    stream.take(MAX_ANSWER_BYTES).read_to_end(&mut answer)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// Connects to `socket`, retrying a refused connection (a master re-executing) for
/// [`REFUSED_PATIENCE`] at most, and never past `deadline`.
pub(super) fn connect(socket: &Path, deadline: Instant) -> io::Result<UnixStream> {
    let until = deadline.min(Instant::now() + REFUSED_PATIENCE);
    let mut pause = Duration::from_millis(5);
    loop {
        match UnixStream::connect(socket) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(e);
                }
                thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            connected => return connected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER_FAILED: &str = "\
#<PID>          <type>          <reloads>       <uptime>        <version>      
10646           master          2 [failed: 1]   0d00h00m04s     2.6.12-1+deb12u4
# workers
11032           worker          1               0d00h00m01s     2.6.12-1+deb12u4
# programs

";

    const AFTER_SUCCESS: &str = "\
#<PID>          <type>          <reloads>       <uptime>        <version>      
18357           master          1 [failed: 0]   0d00h00m02s     2.6.12-1+deb12u4
# workers
18373           worker          0               0d00h00m01s     2.6.12-1+deb12u4
# old workers
18359           worker          1               0d00h00m02s     2.6.12-1+deb12u4
# programs

";

    #[test]
    fn show_proc_of_haproxy_2_6_parses() {
        let failed = ProcessTable::parse(AFTER_FAILED).unwrap();
        assert_eq!(
            failed,
            ProcessTable {
                reloads: 2,
                failed: 1,
                workers: vec![(11032, 1)]
            }
        );
        assert!(!failed.has_current_worker());
        let ok = ProcessTable::parse(AFTER_SUCCESS).unwrap();
        assert_eq!((ok.reloads, ok.failed), (1, 0));
        assert_eq!(ok.workers, vec![(18373, 0), (18359, 1)]);
        assert!(ok.has_current_worker());
        assert_eq!(ok.old_workers(), 1);
    }

    #[test]
    fn show_proc_without_master_is_refused() {
        assert_eq!(ProcessTable::parse("Unknown command.\n"), None);
        assert_eq!(ProcessTable::parse(""), None);
    }

    #[test]
    fn a_stats_socket_is_named_as_such_without_its_help_text() {
        let help = "Unknown command: 'show proc'\nThe following commands are valid at this \
                    level:\n  help           : full commands list\n  show info      : report \
                    information about the running process\n";
        let said = not_a_master(help);
        assert!(said.starts_with("this is a stats socket"), "{said}");
        assert!(!said.contains("show info"), "{said}");
        assert_eq!(
            not_a_master("hello\n"),
            "`show proc` listed no master process (it answered \"hello\"): is this HAProxy's \
             master CLI?"
        );
    }

    /// A master re-executing refuses connections for a moment: `show proc` waits for it to
    /// listen again instead of failing the run.
    #[test]
    fn a_socket_that_refuses_for_a_moment_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("master.sock");
        // A socket file nobody listens on: connecting is refused, as while HAProxy re-executes.
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert_eq!(
            UnixStream::connect(&socket).unwrap_err().kind(),
            io::ErrorKind::ConnectionRefused
        );
        let path = socket.clone();
        let master = thread::spawn(move || {
            // The window in which the master is away; the retry, not this pause, is under test.
            thread::sleep(Duration::from_millis(100));
            std::fs::remove_file(&path).unwrap();
            let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            let (mut stream, _) = listener.accept().unwrap();
            let mut command = [0u8; 64];
            let _ = stream.read(&mut command).unwrap();
            stream.write_all(AFTER_SUCCESS.as_bytes()).unwrap();
        });
        let table = show_proc(&socket, Duration::from_secs(5)).unwrap();
        assert_eq!(table.reloads, 1);
        master.join().unwrap();
    }

    #[test]
    fn a_socket_refusing_past_the_patience_fails() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("master.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let err = show_proc(&socket, Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn missing_socket_fails_before_reloading() {
        let err = reload(
            Path::new("/nonexistent/master.sock"),
            "reload",
            Duration::from_secs(1),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/master.sock"), "{text}");
        assert!(text.contains("before the reload"), "{text}");
    }
}
