//! Runs a validation or reload command with a deadline and captures what it printed. Owns the
//! process handling: own process group, output to unnamed temp files, kill the group on timeout,
//! and an environment without our own settings (credentials above all). Every process the tool
//! starts goes through [`run`].

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Longest stretch of one output stream kept for an error message: HAProxy can print thousands
/// of warnings, and the end is where the reason usually is.
const KEPT_OUTPUT_BYTES: u64 = 64 * 1024;

/// Prefix of our own settings' environment variables (`--help` lists them).
const OWN_VARIABLE_PREFIX: &str = "HAPROXY_MARATHON_SYNC_";

/// Variables outside our prefix that hold credentials in marathon-lb's setups:
/// `DCOS_SERVICE_ACCOUNT_CREDENTIAL` is marathon-lb's default for `--dcos-auth-credentials`.
const CREDENTIAL_VARIABLES: &[&str] = &["DCOS_SERVICE_ACCOUNT_CREDENTIAL"];

/// True for a variable a child must not inherit: our settings, and credentials.
///
/// HAProxy expands `${NAME}` and `env(NAME)` from its own environment, and `haproxy -c` prints
/// what it could not parse: a config line naming our variable would hand the Marathon password
/// to whoever reads the error, the run record or (through a running HAProxy) an HTTP answer.
/// The operator's `HAPROXY_<TEMPLATE>` variables stay: they are configuration text this tool
/// already pasted into `haproxy.cfg`, so HAProxy learns nothing new from them, and the operator
/// may rely on them (or on HAProxy's own `HAPROXY_*` names) in a reload command.
pub fn withheld_from_children(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.starts_with(OWN_VARIABLE_PREFIX.as_bytes())
        || CREDENTIAL_VARIABLES
            .iter()
            .any(|withheld| name == withheld.as_bytes())
}

/// Removes every [`withheld_from_children`] variable of this process from `command`'s
/// environment; the rest is inherited as usual.
fn withhold_own_environment(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if withheld_from_children(&name) {
            command.env_remove(name);
        }
    }
}

/// Why a command did not succeed, with everything it printed, framed for an operator
/// (ripgrep's `CommandError` shape).
#[derive(Debug)]
pub struct CommandError {
    /// Short name for the frame, e.g. `haproxy -c` or `reload command`.
    pub name: String,
    /// The command line as run.
    pub command_line: String,
    pub kind: FailureKind,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
pub enum FailureKind {
    /// It could not be started (missing binary, not executable, ...).
    Spawn(io::Error),
    /// It ran and ended unsuccessfully.
    Exit(ExitStatus),
    /// It ran past the deadline; its whole process group was killed.
    TimedOut(Duration),
    /// Waiting for it or reading its output failed.
    Io(io::Error),
}

impl CommandError {
    /// It ran to its end and said no (as opposed to not starting, hanging or breaking down).
    pub fn ran_and_failed(&self) -> bool {
        matches!(self.kind, FailureKind::Exit(_))
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            FailureKind::Spawn(err) => {
                return write!(f, "could not run `{}`: {err}", self.command_line);
            }
            FailureKind::Io(err) => write!(f, "`{}` failed: {err}", self.command_line)?,
            FailureKind::Exit(status) => write!(f, "`{}` failed ({status})", self.command_line)?,
            FailureKind::TimedOut(limit) => write!(
                f,
                "`{}` did not finish within {:?} and was killed",
                self.command_line, limit
            )?,
        }
        write_framed(f, &format!(" {} stderr ", self.name), &self.stderr)?;
        if !self.stdout.trim().is_empty() {
            write_framed(f, &format!(" {} stdout ", self.name), &self.stdout)?;
        }
        Ok(())
    }
}

impl std::error::Error for CommandError {}

fn write_framed(f: &mut fmt::Formatter<'_>, title: &str, text: &str) -> fmt::Result {
    let text = text.trim_end();
    let text = if text.is_empty() { "<empty>" } else { text };
    write!(f, "\n{title:-^79}\n{text}\n{:-^79}", "")
}

/// Runs `command` (stdin closed, without our own environment variables) and waits at most
/// `timeout`. What a successful command printed is dropped (HAProxy's warnings on a valid
/// config are not ours to repeat on every run); a failure carries both streams. On timeout the
/// command's whole process group is killed, so a shell's children die with it.
///
/// Output goes to unnamed temp files rather than pipes: a daemon started by a reload command
/// may keep its inherited stdout open forever, and reading a pipe would then never end.
pub fn run(mut command: Command, name: &str, timeout: Duration) -> Result<(), CommandError> {
    let command_line = describe(&command);
    let fail = |kind, stdout: String, stderr: String| CommandError {
        name: name.to_string(),
        command_line: command_line.clone(),
        kind,
        stdout,
        stderr,
    };
    let (mut stdout_file, mut stderr_file) = match (tempfile::tempfile(), tempfile::tempfile()) {
        (Ok(out), Ok(err)) => (out, err),
        (Err(e), _) | (_, Err(e)) => {
            return Err(fail(FailureKind::Io(e), String::new(), String::new()))
        }
    };
    let streams = stdout_file
        .try_clone()
        .and_then(|out| Ok((out, stderr_file.try_clone()?)));
    let (child_out, child_err) = match streams {
        Ok(streams) => streams,
        Err(e) => return Err(fail(FailureKind::Io(e), String::new(), String::new())),
    };
    withhold_own_environment(&mut command);
    command
        .stdin(Stdio::null())
        .stdout(child_out)
        .stderr(child_err)
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Err(fail(FailureKind::Spawn(e), String::new(), String::new())),
    };
    drop(command); // closes our copies of the child's output files

    let deadline = Instant::now() + timeout;
    let exit = ExitNotice::of(child.id());
    let mut pause = Duration::from_millis(1);
    let ended = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() >= deadline => {
                // The child is not reaped yet, so its pid (= its group id) cannot have been
                // reused: killing the group hits only what this command started.
                kill_process_group(child.id());
                let _ = child.wait();
                break Err(FailureKind::TimedOut(timeout));
            }
            Ok(None) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match &exit {
                    Some(exit) => exit.wait(left),
                    None => {
                        thread::sleep(pause.min(left));
                        pause = (pause * 2).min(Duration::from_millis(50));
                    }
                }
            }
            Err(e) => {
                kill_process_group(child.id());
                let _ = child.wait();
                break Err(FailureKind::Io(e));
            }
        }
    };
    let stdout = read_tail(&mut stdout_file);
    let stderr = read_tail(&mut stderr_file);
    match ended {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(fail(FailureKind::Exit(status), stdout, stderr)),
        Err(kind) => Err(fail(kind, stdout, stderr)),
    }
}

/// A pidfd of a child: readable once it exits, so the wait ends when the command does rather
/// than at the next poll (a `haproxy -c` of a large config is on every run's critical path).
/// `None` where the kernel has no `pidfd_open` (before Linux 5.3): polling then.
struct ExitNotice(std::os::fd::OwnedFd);

impl ExitNotice {
    fn of(pid: u32) -> Option<ExitNotice> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain syscall with no memory arguments; on success it returns a new fd
        // that nothing else owns.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = libc::c_int::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
        Some(ExitNotice(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Returns when the child has exited or `limit` has passed (or a signal came): the caller
    /// looks again with `try_wait` either way.
    fn wait(&self, limit: Duration) {
        use std::os::fd::AsRawFd;
        let mut poll = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // Rounded up, so a wait never ends just short of the deadline and spins.
        let millis = limit.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd, for the duration of the call.
        unsafe {
            libc::poll(&mut poll, 1, millis);
        }
    }
}

fn kill_process_group(leader: u32) {
    // SAFETY: plain syscall with no memory arguments; the group was created by `process_group(0)`
    // for this child alone.
    unsafe {
        libc::kill(-(leader as libc::pid_t), libc::SIGKILL);
    }
}

/// The last [`KEPT_OUTPUT_BYTES`] of a captured stream, as text.
fn read_tail(file: &mut File) -> String {
    let Ok(len) = file.seek(SeekFrom::End(0)) else {
        return String::new();
    };
    let start = len.saturating_sub(KEPT_OUTPUT_BYTES);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::from("<output could not be read>");
    }
    let text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        format!("<{start} earlier bytes left out>\n{text}")
    } else {
        text
    }
}

/// `program arg arg` for messages; arguments with spaces are quoted.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| {
            let part = part.to_string_lossy();
            if part.is_empty() || part.contains(char::is_whitespace) {
                format!("'{}'", part.replace('\'', r"'\''"))
            } else {
                part.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    #[test]
    fn failure_captures_both_streams() {
        let err = run(
            shell("echo out; echo err >&2; false"),
            "t",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(err.stdout, "out\n");
        assert_eq!(err.stderr, "err\n");
        assert!(run(shell("echo fine"), "t", Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn failure_frames_stderr_and_names_the_command() {
        let err = run(
            shell("echo broken line >&2; exit 3"),
            "check",
            Duration::from_secs(10),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err.kind, FailureKind::Exit(_)), "{text}");
        assert!(
            text.contains("sh -c 'echo broken line >&2; exit 3'"),
            "{text}"
        );
        assert!(text.contains(" check stderr "), "{text}");
        assert!(text.contains("broken line"), "{text}");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let started = Instant::now();
        let err = run(shell(&script), "t", Duration::from_millis(1000)).unwrap_err();
        assert!(matches!(err.kind, FailureKind::TimedOut(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
        let grandchild = std::fs::read_to_string(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", grandchild.trim());
        // Gone, or a zombie waiting for init to reap it: either way no longer running.
        let dead = || match std::fs::read_to_string(&stat) {
            Err(_) => true,
            Ok(text) => text
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z'),
        };
        let until = Instant::now() + Duration::from_secs(5);
        while !dead() && Instant::now() < until {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(dead(), "the shell's child survived the kill");
    }

    #[test]
    fn our_variables_and_credentials_are_withheld_and_the_operators_are_not() {
        for name in [
            "HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS",
            "HAPROXY_MARATHON_SYNC_MARATHON_AUTH_CREDENTIAL_FILE",
            "HAPROXY_MARATHON_SYNC_GROUP",
            "DCOS_SERVICE_ACCOUNT_CREDENTIAL",
        ] {
            assert!(withheld_from_children(OsStr::new(name)), "{name}");
        }
        for name in [
            "HAPROXY_HEAD",
            "HAPROXY_MARATHON_SYNC",
            "PATH",
            "FRAMEWORK_NAME",
        ] {
            assert!(!withheld_from_children(OsStr::new(name)), "{name}");
        }
    }

    #[test]
    fn missing_program_is_a_spawn_failure() {
        let err = run(
            Command::new("/nonexistent/haproxy"),
            "t",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err.kind, FailureKind::Spawn(_)));
        assert!(err.to_string().contains("/nonexistent/haproxy"));
    }
}
