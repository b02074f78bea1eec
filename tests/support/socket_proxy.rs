//! A unix-socket proxy between the binary's `--haproxy-master-socket` and a real HAProxy
//! master CLI, for fault tests of runtime updates. It passes every session through, line by
//! line, except the first runtime session (one that opens with `prompt`) after it is armed:
//! that one it breaks at a chosen command line, closing both sides, or stalls there until the
//! client is gone (the test kills it). It tells the test through a channel what each runtime
//! session sent and when it stalls, so the test never waits on time. After a break it can
//! refuse every later session too (accepted and closed at once), which breaks the fallback
//! reload as well, or hold one of them (the fallback reload's `show proc` or `reload`).
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The master CLI's prompt, which ends every answer of a session in prompt mode.
const PROMPT: &[u8] = b"master> ";

/// Longest any read or write of the proxy may block: every session thread ends by itself.
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest command line or answer the proxy handles.
const MAX_BYTES: usize = 16 * 1024 * 1024;

/// Where, at the chosen command line, the session is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// The line is received and not forwarded: HAProxy never sees it; both sides close.
    Unsent,
    /// The line is forwarded and HAProxy's whole answer read, but not passed on; both close.
    Unanswered,
    /// The line is forwarded and half of HAProxy's answer passed on; then both close.
    MidAnswer,
    /// The line is held (not forwarded), the test told, and the session kept open until the
    /// client is gone.
    StallUnsent,
    /// The line is forwarded, HAProxy's answer read and held, the test told, and the session
    /// kept open until the client is gone.
    StallAnswered,
}

impl Break {
    /// Whether HAProxy receives the line at which the session breaks.
    pub fn forwards(self) -> bool {
        matches!(
            self,
            Break::Unanswered | Break::MidAnswer | Break::StallAnswered
        )
    }

    fn stalls(self) -> bool {
        matches!(self, Break::StallUnsent | Break::StallAnswered)
    }
}

/// What happens to the sessions that come after a break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Later {
    /// Passed through: the fallback reload reaches HAProxy.
    Pass,
    /// Accepted and closed at once, until the proxy is armed again: the reload fails too.
    Refuse,
    /// The `session`th later session (1-based; the fallback reload's `show proc` is the first,
    /// its `reload` the second) is held as [`Break::StallUnsent`] or, when `forwarded`,
    /// [`Break::StallAnswered`] would hold it; the others pass.
    Stall { session: usize, forwarded: bool },
}

/// A fault for the next runtime session: at its `line`th command line (1 = `prompt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub line: usize,
    pub how: Break,
    pub later: Later,
}

/// What the proxy tells the test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A runtime session opened (its `prompt` is read, not yet forwarded).
    Opened,
    /// A session is held: a runtime session at the fault's line, or a later one-shot session
    /// ([`Later::Stall`]); the command as the client sent it.
    Stalled { command: String },
    /// A runtime session ended.
    Session(Session),
}

/// A runtime session the proxy saw to its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Every line the client sent, in order (the last is `quit` when it ended normally).
    pub lines: Vec<String>,
    /// The line (1-based) at which the proxy broke it, if it did.
    pub broken_at: Option<usize>,
    /// When the client connected.
    pub opened: Instant,
    /// When both sides were closed.
    pub closed: Instant,
}

#[derive(Default)]
struct Control {
    armed: Option<Fault>,
    /// What happens to later sessions, once a runtime session was broken.
    after_break: Option<Later>,
    /// Sessions opened since the break.
    later_sessions: usize,
    /// Sessions being served now.
    open: usize,
}

/// The proxy: listening on [`SocketProxy::path`] until dropped.
pub struct SocketProxy {
    pub path: PathBuf,
    /// The listening socket, kept to wake the accept loop when dropped.
    listener: UnixListener,
    control: Arc<Mutex<Control>>,
    events: Receiver<Event>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SocketProxy {
    /// Listens on `path`, passing sessions on to the master CLI at `upstream`.
    pub fn start(path: &Path, upstream: &Path) -> SocketProxy {
        let listener = UnixListener::bind(path).expect("binding the proxy's socket");
        let control = Arc::new(Mutex::new(Control::default()));
        let stopping = Arc::new(AtomicBool::new(false));
        let (sender, events) = mpsc::channel();
        let kept = listener.try_clone().expect("keeping the proxy's socket");
        let thread = {
            let (control, stopping) = (control.clone(), stopping.clone());
            let upstream = upstream.to_path_buf();
            thread::spawn(move || {
                for client in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (control, sender, upstream) =
                        (control.clone(), sender.clone(), upstream.clone());
                    control.lock().unwrap().open += 1;
                    thread::spawn(move || {
                        let _ = serve(client, &upstream, &control, &sender);
                        control.lock().unwrap().open -= 1;
                    });
                }
            })
        };
        SocketProxy {
            path: path.to_path_buf(),
            listener: kept,
            control,
            events,
            stopping,
            thread: Some(thread),
        }
    }

    /// Sets the fault for the next runtime session (`None`: pass it through) and passes later
    /// sessions through again.
    pub fn arm(&self, fault: Option<Fault>) {
        let mut control = self.control.lock().unwrap();
        control.armed = fault;
        control.after_break = None;
        control.later_sessions = 0;
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The next event that is `wanted` (others are passed over), waiting (bounded by
    /// `timeout`) in short steps and giving up early when `gone` says the client will not
    /// produce one.
    pub fn next_event_unless(
        &self,
        timeout: Duration,
        mut gone: impl FnMut() -> bool,
        mut wanted: impl FnMut(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.events.recv_timeout(Duration::from_millis(20)) {
                Ok(event) if wanted(&event) => return Some(event),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) if gone() => {
                    // One last look: the event may have come with the client's end.
                    return self.events.try_iter().find(|event| wanted(event));
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        None
    }

    /// The next [`Event::Session`], skipping stall notices.
    pub fn next_session(&self, timeout: Duration) -> Option<Session> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_event(left)? {
                Event::Session(session) => return Some(session),
                Event::Opened | Event::Stalled { .. } => {}
            }
        }
    }

    /// Waits (bounded) until no session is being served, e.g. after its client was killed;
    /// true when none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        super::haproxy::wait_for(timeout, || self.control.lock().unwrap().open == 0)
    }

    /// Events left unread (none once every session seen has been accounted for).
    pub fn drain(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept (with an error) so the thread sees the flag, even when the
        // socket's directory is already gone.
        // SAFETY: a plain syscall on a descriptor this proxy owns and keeps open.
        unsafe {
            libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One client session: refused, passed through, or (a runtime session) proxied line by line.
fn serve(
    client: UnixStream,
    upstream: &Path,
    control: &Mutex<Control>,
    events: &Sender<Event>,
) -> io::Result<()> {
    let opened = Instant::now();
    let (after_break, nth) = {
        let mut control = control.lock().unwrap();
        if control.after_break.is_some() {
            control.later_sessions += 1;
        }
        (control.after_break, control.later_sessions)
    };
    if after_break == Some(Later::Refuse) {
        let _ = client.shutdown(Shutdown::Both);
        return Ok(());
    }
    client.set_read_timeout(Some(IO_TIMEOUT))?;
    client.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let Some(first) = read_line(&mut reader)? else {
        return Ok(());
    };
    let server = UnixStream::connect(upstream)?;
    server.set_read_timeout(Some(IO_TIMEOUT))?;
    server.set_write_timeout(Some(IO_TIMEOUT))?;
    if first != "prompt" {
        return match after_break {
            Some(Later::Stall { session, forwarded }) if session == nth => {
                stall_one_shot(&first, forwarded, reader, server, events)
            }
            _ => pass_through(&first, reader, client, server),
        };
    }
    let _ = events.send(Event::Opened);
    let fault = control.lock().unwrap().armed.take();
    let mut session = Runtime {
        client,
        server,
        lines: Vec::new(),
    };
    let broken_at = session.run(first, &mut reader, fault, events);
    if let (Some(_), Some(fault)) = (broken_at, fault) {
        let mut control = control.lock().unwrap();
        control.after_break = Some(fault.later);
        control.later_sessions = 0;
    }
    let _ = session.client.shutdown(Shutdown::Both);
    let _ = session.server.shutdown(Shutdown::Both);
    let _ = events.send(Event::Session(Session {
        lines: session.lines,
        broken_at,
        opened,
        closed: Instant::now(),
    }));
    Ok(())
}

/// A one-shot session (`show proc; quit`, `reload; quit`): the line, anything after it, and the
/// whole answer, untouched.
fn pass_through(
    first: &str,
    reader: BufReader<UnixStream>,
    mut client: UnixStream,
    mut server: UnixStream,
) -> io::Result<()> {
    server.write_all(format!("{first}\n").as_bytes())?;
    server.write_all(reader.buffer())?;
    let mut to_server = server.try_clone()?;
    let forward = thread::spawn(move || {
        let mut rest = reader.into_inner();
        let _ = io::copy(&mut rest, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    let copied = io::copy(&mut (&mut server).take(MAX_BYTES as u64), &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = server.shutdown(Shutdown::Both);
    let _ = forward.join();
    copied.map(|_| ())
}

/// A one-shot session held: its line forwarded (and the whole answer read) or not, the test
/// told, and nothing passed on until the client is gone.
fn stall_one_shot(
    first: &str,
    forwarded: bool,
    mut reader: BufReader<UnixStream>,
    mut server: UnixStream,
    events: &Sender<Event>,
) -> io::Result<()> {
    if forwarded {
        server.write_all(format!("{first}\n").as_bytes())?;
        // To its end: the master answers, or drops the session as it re-executes (`reload`).
        let mut answer = Vec::new();
        let _ = (&mut server)
            .take(MAX_BYTES as u64)
            .read_to_end(&mut answer);
    }
    let _ = events.send(Event::Stalled {
        command: first.to_string(),
    });
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    let _ = server.shutdown(Shutdown::Both);
    Ok(())
}

/// A runtime session being proxied.
struct Runtime {
    client: UnixStream,
    server: UnixStream,
    lines: Vec<String>,
}

impl Runtime {
    /// Proxies lines from `first` on until the client ends, HAProxy ends, or the fault breaks
    /// the session; returns the line number at which it broke.
    fn run(
        &mut self,
        first: String,
        reader: &mut BufReader<UnixStream>,
        fault: Option<Fault>,
        events: &Sender<Event>,
    ) -> Option<usize> {
        let mut line = Some(first);
        while let Some(command) = line.take() {
            self.lines.push(command.clone());
            let number = self.lines.len();
            let quit = command == "quit";
            match fault.filter(|f| f.line == number) {
                Some(fault) => {
                    self.break_at(&command, fault.how, reader, events);
                    return Some(number);
                }
                None => {
                    let answer = self.forward(&command, quit).ok()?;
                    self.client.write_all(&answer).ok()?;
                }
            }
            if quit {
                return None;
            }
            line = read_line(reader).ok().flatten();
        }
        None
    }

    /// Sends `command` to HAProxy and reads its answer: up to the prompt, or to the end after
    /// `quit` (HAProxy closes the session).
    fn forward(&mut self, command: &str, quit: bool) -> io::Result<Vec<u8>> {
        self.server.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        while quit || !answer.ends_with(PROMPT) {
            let read = self.server.read(&mut chunk)?;
            if read == 0 {
                if quit {
                    break;
                }
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            answer.extend_from_slice(&chunk[..read]);
            if answer.len() > MAX_BYTES {
                return Err(io::ErrorKind::InvalidData.into());
            }
        }
        Ok(answer)
    }

    fn break_at(
        &mut self,
        command: &str,
        how: Break,
        reader: &mut BufReader<UnixStream>,
        events: &Sender<Event>,
    ) {
        let answer = if how.forwards() {
            self.forward(command, command == "quit").unwrap_or_default()
        } else {
            Vec::new()
        };
        if how == Break::MidAnswer {
            let _ = self.client.write_all(&answer[..answer.len() / 2]);
        }
        if how.stalls() {
            let _ = events.send(Event::Stalled {
                command: command.to_string(),
            });
            // Until the client is gone (killed): it sends nothing while it waits for the
            // answer, so the read ends with its end (or the proxy's own timeout).
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
        }
    }
}

/// One line from the client without its newline; `None` at the end of the session.
fn read_line(reader: &mut BufReader<UnixStream>) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader
        .by_ref()
        .take(MAX_BYTES as u64)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}
