//! Executes a [`Plan`] through HAProxy's master CLI (`haproxy -W -S <socket>`): one session in
//! prompt mode, commands pinned to the current worker with `@!<pid>`, every reply matched
//! exactly. Plans against what the worker runs (`show servers state <backend>`), so servers
//! left from an earlier run are reused or finished off. Never cuts a connection: a removed
//! server goes to maintenance and is deleted once its connections end (`shutdown sessions` is
//! never sent); [`retry_deletions`] finishes such servers off on later runs, in the same worker
//! only. Any other reply, a socket error or a timeout is a [`RuntimeError`], on which the caller
//! reloads the validated file, so HAProxy and the file never disagree.
//!
//! What HAProxy 2.6.12 answers (docs/RUNTIME.md has the full table): after `prompt`, every
//! answer ends in `master> `; `add server` answers `New server registered.` and a blank line;
//! `enable health`, `enable server` and `set server` answer an empty line; `del server` answers
//! `Server deleted.`, or `Server still has connections attached to it, cannot remove it.` while
//! connections (or idle ones kept for reuse) remain.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::master::ProcessTable;
use super::runtime_plan::{Plan, Server};

/// The master CLI's prompt, which closes every answer in prompt mode.
const PROMPT: &[u8] = b"master> ";

/// Longest one read from the master may block; the overall deadline bounds the session.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer read (a `show servers state` of a backend with thousands of servers is less).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

const ADDED: &str = "New server registered.\n\n";
const DONE: &str = "\n";
const DELETED: &str = "Server deleted.\n";
const STILL_CONNECTED: &str = "Server still has connections attached to it, cannot remove it.\n";

/// `srv_admin_state` bit for a server forced into maintenance (`set server ... state maint`,
/// `disabled`, or a server just added); the other maintenance causes are not ours to change.
const FORCED_MAINTENANCE: u32 = 0x01;

/// Bounds of one execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The whole session, retries included.
    pub timeout: Duration,
    /// How long removed servers still holding connections are retried before being reported
    /// as pending deletion (the next run retries them).
    pub delete_wait: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            timeout: Duration::from_secs(10),
            delete_wait: Duration::from_secs(2),
        }
    }
}

/// What an execution did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The worker the commands went to.
    pub worker: u32,
    /// Commands sent, `show` commands included.
    pub commands: usize,
    /// `backend/server` added.
    pub added: Vec<String>,
    /// Running servers the candidate wants and HAProxy still had (e.g. in maintenance after a
    /// deletion that did not finish): brought back with `set server` instead of added.
    pub reused: Vec<String>,
    /// Servers whose weight or maintenance state was set.
    pub changed: Vec<String>,
    pub deleted: Vec<String>,
    /// In maintenance, not yet deleted because connections remain; retry on the next run.
    pub pending_deletion: Vec<String>,
}

/// Why an execution stopped; the caller reloads the validated file instead.
#[derive(Debug)]
pub enum RuntimeError {
    /// Connecting, writing or reading failed.
    Socket { socket: PathBuf, source: io::Error },
    /// No answer within the deadline.
    Timeout { socket: PathBuf, command: String },
    /// HAProxy answered something other than what the command answers on success.
    Unexpected { command: String, reply: String },
    /// `show proc` named no current worker.
    NoWorker { reply: String },
    /// The worker changed during the session (HAProxy was reloaded meanwhile).
    WorkerChanged { before: u32, after: u32 },
    /// A running server has the candidate's name but another address or id.
    Mismatch { server: String, running: String },
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Socket { socket, source } => {
                write!(f, "HAProxy's master socket {}: {source}", socket.display())
            }
            RuntimeError::Timeout { socket, command } => write!(
                f,
                "HAProxy's master socket {} did not answer `{command}` in time",
                socket.display()
            ),
            RuntimeError::Unexpected { command, reply } => {
                write!(f, "HAProxy answered `{command}` with {reply:?}")
            }
            RuntimeError::NoWorker { reply } => {
                write!(f, "`show proc` named no current worker: {reply:?}")
            }
            RuntimeError::WorkerChanged { before, after } => write!(
                f,
                "HAProxy's worker changed from {before} to {after} during the runtime update"
            ),
            RuntimeError::Mismatch { server, running } => write!(
                f,
                "HAProxy runs a server {server} that differs from the file's ({running})"
            ),
        }
    }
}

impl std::error::Error for RuntimeError {}

/// A server as `show servers state` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningServer {
    pub name: String,
    pub id: u32,
    pub ip: IpAddr,
    pub port: u16,
    pub admin_state: u32,
    pub weight: u32,
}

impl RunningServer {
    fn in_maintenance(&self) -> bool {
        self.admin_state & FORCED_MAINTENANCE != 0
    }
}

/// Parses the answer of `show servers state <backend>` (format version 1): the servers of
/// `backend`, or `None` when the answer is not that table.
pub fn parse_servers_state(answer: &str, backend: &str) -> Option<Vec<RunningServer>> {
    let mut lines = answer.lines();
    if lines.next()? != "1" || !lines.next()?.starts_with("# be_id ") {
        return None;
    }
    let mut servers = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 19 {
            return None;
        }
        if fields[1] != backend {
            continue;
        }
        servers.push(RunningServer {
            name: fields[3].to_string(),
            id: fields[2].parse().ok()?,
            ip: fields[4].parse().ok()?,
            admin_state: fields[6].parse().ok()?,
            weight: fields[7].parse().ok()?,
            port: fields[18].parse().ok()?,
        });
    }
    Some(servers)
}

/// Runs `plan` on the HAProxy whose master CLI listens on `socket`.
pub fn execute(
    socket: &Path,
    plan: &Plan,
    options: &RuntimeOptions,
) -> Result<Report, RuntimeError> {
    let deadline = Instant::now() + options.timeout;
    let mut session = Session::open(socket, deadline)?;
    let worker = session.current_worker()?;
    let mut report = Report {
        worker,
        ..Report::default()
    };
    let mut removals = Vec::new();
    for backend in &plan.backends {
        let name = &backend.backend;
        let command = format!("show servers state {name}");
        let answer = session.worker(worker, &command)?;
        let running = parse_servers_state(&answer, name).ok_or(RuntimeError::Unexpected {
            command,
            reply: answer.clone(),
        })?;
        let mut running: BTreeMap<String, RunningServer> =
            running.into_iter().map(|s| (s.name.clone(), s)).collect();
        // Adds before removals: a moved task's backend is never left without a server.
        for server in &backend.servers {
            let what = format!("{name}/{}", server.name);
            match running.remove(&server.name) {
                None => {
                    add(&mut session, worker, &what, server)?;
                    report.added.push(what);
                }
                Some(current) => {
                    let (changed, came_back) =
                        reconcile(&mut session, worker, &what, server, &current)?;
                    if came_back {
                        report.reused.push(what);
                    } else if changed {
                        report.changed.push(what);
                    }
                }
            }
        }
        removals.extend(
            running
                .into_values()
                .map(|s| (format!("{name}/{}", s.name), s)),
        );
    }
    for (what, server) in &removals {
        if !server.in_maintenance() {
            session.expect(worker, &format!("set server {what} state maint"), DONE)?;
        }
    }
    report.pending_deletion = delete(&mut session, worker, &removals, options.delete_wait)?;
    report.deleted = removals
        .into_iter()
        .map(|(what, _)| what)
        .filter(|what| !report.pending_deletion.contains(what))
        .collect();
    let after = session.current_worker()?;
    if after != worker {
        return Err(RuntimeError::WorkerChanged {
            before: worker,
            after,
        });
    }
    report.commands = session.commands;
    Ok(report)
}

/// What [`retry_deletions`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// The worker is the one that held the servers: `deleted` are gone now, `pending` still
    /// hold connections (in maintenance still). Servers the file wants again, that HAProxy no
    /// longer has, or that are out of forced maintenance (someone's `set server`) are in
    /// neither: they are not ours to delete any more.
    Done {
        deleted: Vec<String>,
        pending: Vec<String>,
    },
    /// HAProxy runs another worker (it was reloaded): the servers went with the old one.
    Reloaded { worker: u32 },
}

/// One `del server` for each of `servers` (`backend/server`, left pending deletion by an
/// earlier run in `worker`) that the live file no longer wants (`wanted` says false) and the
/// worker still has in forced maintenance. One try each, no waiting: the next run tries again.
pub fn retry_deletions(
    socket: &Path,
    worker: u32,
    servers: &[String],
    wanted: &dyn Fn(&str, &str) -> bool,
    timeout: Duration,
) -> Result<Retried, RuntimeError> {
    let mut session = Session::open(socket, Instant::now() + timeout)?;
    let current = session.current_worker()?;
    if current != worker {
        return Ok(Retried::Reloaded { worker: current });
    }
    let mut by_backend: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (backend, server) in servers.iter().filter_map(|what| what.split_once('/')) {
        if !wanted(backend, server) {
            by_backend.entry(backend).or_default().push(server);
        }
    }
    let mut removals = Vec::new();
    for (backend, names) in by_backend {
        let command = format!("show servers state {backend}");
        let answer = session.worker(worker, &command)?;
        let running = parse_servers_state(&answer, backend).ok_or(RuntimeError::Unexpected {
            command,
            reply: answer.clone(),
        })?;
        removals.extend(
            running
                .into_iter()
                .filter(|s| names.contains(&s.name.as_str()) && s.in_maintenance())
                .map(|s| (format!("{backend}/{}", s.name), s)),
        );
    }
    let pending = delete(&mut session, worker, &removals, Duration::ZERO)?;
    let after = session.current_worker()?;
    if after != worker {
        return Err(RuntimeError::WorkerChanged {
            before: worker,
            after,
        });
    }
    let deleted = removals
        .into_iter()
        .map(|(what, _)| what)
        .filter(|what| !pending.contains(what))
        .collect();
    Ok(Retried::Done { deleted, pending })
}

/// `add server` with the line's own options, then its health check and traffic (a server
/// added at runtime starts in maintenance with its check off).
fn add(
    session: &mut Session,
    worker: u32,
    what: &str,
    server: &Server,
) -> Result<(), RuntimeError> {
    let mut command = format!("add server {what} {}", server.address);
    for option in &server.options {
        command.push(' ');
        command.push_str(option);
    }
    session.expect(worker, &command, ADDED)?;
    if server.check {
        session.expect(worker, &format!("enable health {what}"), DONE)?;
    }
    if !server.disabled {
        session.expect(worker, &format!("enable server {what}"), DONE)?;
    }
    Ok(())
}

/// Brings a running server to what the file says; (anything changed, it was in maintenance
/// and the file wants it serving).
fn reconcile(
    session: &mut Session,
    worker: u32,
    what: &str,
    server: &Server,
    current: &RunningServer,
) -> Result<(bool, bool), RuntimeError> {
    if server.id.is_some_and(|id| id != current.id)
        || server.ip != current.ip
        || server.port != current.port
    {
        return Err(RuntimeError::Mismatch {
            server: what.to_string(),
            running: format!(
                "id {} at {}:{}, the file says {} id {}",
                current.id,
                current.ip,
                current.port,
                server.address,
                server.id.map_or("none".to_string(), |id| id.to_string())
            ),
        });
    }
    let mut changed = false;
    if current.weight != server.weight {
        let command = format!("set server {what} weight {}", server.weight);
        session.expect(worker, &command, DONE)?;
        changed = true;
    }
    let came_back = current.in_maintenance() && !server.disabled;
    if current.in_maintenance() != server.disabled {
        let state = if server.disabled { "maint" } else { "ready" };
        session.expect(worker, &format!("set server {what} state {state}"), DONE)?;
        changed = true;
    }
    // A leftover may have been added without its check; enabling a running check is a no-op.
    if came_back && server.check {
        session.expect(worker, &format!("enable health {what}"), DONE)?;
    }
    Ok((changed, came_back))
}

/// `del server` for each server in maintenance, retried while connections remain, until
/// `wait` has passed; returns those still connected.
fn delete(
    session: &mut Session,
    worker: u32,
    removals: &[(String, RunningServer)],
    wait: Duration,
) -> Result<Vec<String>, RuntimeError> {
    let until = Instant::now() + wait;
    let mut pending: Vec<&str> = removals.iter().map(|(what, _)| what.as_str()).collect();
    let mut pause = Duration::from_millis(5);
    loop {
        let mut still = Vec::new();
        for what in pending {
            let command = format!("del server {what}");
            let answer = session.worker(worker, &command)?;
            match answer.as_str() {
                DELETED => {}
                STILL_CONNECTED => still.push(what),
                _ => {
                    return Err(RuntimeError::Unexpected {
                        command,
                        reply: answer,
                    })
                }
            }
        }
        pending = still;
        let left = until.saturating_duration_since(Instant::now());
        if pending.is_empty() || left.is_zero() {
            return Ok(pending.into_iter().map(str::to_string).collect());
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// One master CLI connection in prompt mode.
struct Session {
    stream: UnixStream,
    socket: PathBuf,
    deadline: Instant,
    commands: usize,
}

impl Session {
    fn open(socket: &Path, deadline: Instant) -> Result<Session, RuntimeError> {
        let stream =
            super::master::connect(socket, deadline).map_err(|source| RuntimeError::Socket {
                socket: socket.to_path_buf(),
                source,
            })?;
        let mut session = Session {
            stream,
            socket: socket.to_path_buf(),
            deadline,
            commands: 0,
        };
        let answer = session.send("prompt")?;
        if !answer.is_empty() {
            return Err(RuntimeError::Unexpected {
                command: "prompt".to_string(),
                reply: answer,
            });
        }
        Ok(session)
    }

    /// The PID of the worker born of the latest reload.
    fn current_worker(&mut self) -> Result<u32, RuntimeError> {
        let answer = self.send("show proc")?;
        ProcessTable::parse(&answer)
            .and_then(|table| table.workers.iter().find(|(_, age)| *age == 0).map(|w| w.0))
            .ok_or(RuntimeError::NoWorker { reply: answer })
    }

    /// Sends `command` to `worker` and requires `expected` as the answer.
    fn expect(&mut self, worker: u32, command: &str, expected: &str) -> Result<(), RuntimeError> {
        let answer = self.worker(worker, command)?;
        if answer != expected {
            return Err(RuntimeError::Unexpected {
                command: command.to_string(),
                reply: answer,
            });
        }
        Ok(())
    }

    fn worker(&mut self, worker: u32, command: &str) -> Result<String, RuntimeError> {
        self.send(&format!("@!{worker} {command}"))
    }

    /// Sends one line and reads up to the next prompt.
    fn send(&mut self, command: &str) -> Result<String, RuntimeError> {
        self.commands += 1;
        let timeout = || RuntimeError::Timeout {
            socket: self.socket.clone(),
            command: command.to_string(),
        };
        let socket_error = |source: io::Error| RuntimeError::Socket {
            socket: self.socket.clone(),
            source,
        };
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timeout());
        }
        let limit = left.min(READ_TIMEOUT);
        self.stream
            .set_write_timeout(Some(limit))
            .and_then(|_| self.stream.set_read_timeout(Some(limit)))
            .map_err(socket_error)?;
        self.stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(socket_error)?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        while !answer.ends_with(PROMPT) {
            if Instant::now() >= self.deadline || answer.len() > MAX_ANSWER_BYTES {
                return Err(timeout());
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(socket_error(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the master closed the session after `{command}`"),
                    )))
                }
                Ok(read) => answer.extend_from_slice(&chunk[..read]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timeout())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(socket_error(e)),
            }
        }
        answer.truncate(answer.len() - PROMPT.len());
        Ok(String::from_utf8_lossy(&answer).into_owned())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.stream.write_all(b"quit\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state \
        srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
        srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id \
        srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
        srv_agent_addr srv_agent_port\n\
        3 rr 5 d_5 127.0.0.1 0 5 1 1 15 1 0 0 8 0 0 1 - 9005 - 0 0 - - 0\n\
        3 rr 7 f_7 127.0.0.1 2 0 1 1 2 8 2 2 6 0 0 1 - 9006 - 0 9100 - - 9100\n\n";

    #[test]
    fn servers_state_of_haproxy_2_6_parses() {
        let servers = parse_servers_state(STATE, "rr").unwrap();
        assert_eq!(
            servers,
            [
                RunningServer {
                    name: "d_5".into(),
                    id: 5,
                    ip: "127.0.0.1".parse().unwrap(),
                    port: 9005,
                    admin_state: 5,
                    weight: 1
                },
                RunningServer {
                    name: "f_7".into(),
                    id: 7,
                    ip: "127.0.0.1".parse().unwrap(),
                    port: 9006,
                    admin_state: 0,
                    weight: 1
                }
            ]
        );
        assert!(servers[0].in_maintenance());
        assert!(!servers[1].in_maintenance());
        assert_eq!(parse_servers_state(STATE, "other"), Some(vec![]));
    }

    #[test]
    fn other_answers_are_not_a_servers_state() {
        assert_eq!(parse_servers_state("Can't find backend.\n", "rr"), None);
        assert_eq!(parse_servers_state("", "rr"), None);
        assert_eq!(parse_servers_state("1\n# be_id\n3 rr 5\n", "rr"), None);
    }

    use std::os::unix::net::UnixListener;

    /// A stand-in master CLI: answers `prompt` with the prompt, then does what `then` says
    /// with the session. Returns the socket path (in `dir`) and the thread.
    fn fake_master(dir: &Path, then: fn(UnixStream)) -> (PathBuf, thread::JoinHandle<()>) {
        let path = dir.join("master.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let thread = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut line = [0u8; 7];
            stream.read_exact(&mut line).unwrap();
            assert_eq!(&line, b"prompt\n");
            stream.write_all(PROMPT).unwrap();
            then(stream);
        });
        (path, thread)
    }

    fn short() -> RuntimeOptions {
        RuntimeOptions {
            timeout: Duration::from_millis(300),
            delete_wait: Duration::ZERO,
        }
    }

    #[test]
    fn a_session_closed_mid_way_is_a_socket_error() {
        let dir = tempfile::tempdir().unwrap();
        // Reads the command, then closes without answering.
        let (path, thread) = fake_master(dir.path(), |mut stream| {
            let mut command = [0u8; 10];
            stream.read_exact(&mut command).unwrap();
        });
        let err = execute(&path, &Plan::default(), &short()).unwrap_err();
        thread.join().unwrap();
        assert!(matches!(err, RuntimeError::Socket { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("closed the session after `show proc`"),
            "{err}"
        );
    }

    #[test]
    fn a_master_that_stops_answering_is_a_timeout() {
        let dir = tempfile::tempdir().unwrap();
        // Reads the command, never answers, and holds the session until the client leaves.
        let (path, thread) = fake_master(dir.path(), |mut stream| {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        });
        let err = execute(&path, &Plan::default(), &short()).unwrap_err();
        assert!(matches!(err, RuntimeError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("`show proc`"), "{err}");
        thread.join().unwrap();
    }

    #[test]
    fn an_answer_without_a_worker_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, thread) = fake_master(dir.path(), |mut stream| {
            let mut command = [0u8; 10];
            stream.read_exact(&mut command).unwrap();
            stream.write_all(b"Unknown command.\nmaster> ").unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        });
        let err = execute(&path, &Plan::default(), &short()).unwrap_err();
        assert!(matches!(err, RuntimeError::NoWorker { .. }), "{err}");
        thread.join().unwrap();
    }

    #[test]
    fn a_missing_socket_is_a_socket_error() {
        let err = execute(
            Path::new("/nonexistent/master.sock"),
            &Plan::default(),
            &RuntimeOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, RuntimeError::Socket { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/master.sock"));
    }
}
