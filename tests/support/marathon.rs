//! A stand-in Marathon for tests: a small std-only HTTP/1.1 server on 127.0.0.1 that serves
//! `GET /v2/apps` and `GET /v2/tasks` from bodies the test sets, and can be scripted to misbehave
//! (a status, a hang, a truncated or stalled body, broken JSON, basic auth, a redirect). It counts
//! and records every request so tests can assert who was asked, in which order.
//!
//! `GET /v2/events` is an event stream (chunked `text/event-stream`, as Marathon's Jetty sends
//! it): the test pushes `event:`/`data:` blocks or raw bytes to every open stream, picks CRLF or
//! LF, turns heartbeats on, and can end, drop or silence the open streams.
//!
//! Each connection is answered in its own thread with `Connection: close`. Nothing here sleeps to
//! synchronise: hangs wait on a condition variable that `Drop` signals, and every wait is bounded.
#![allow(dead_code)] // Each test binary uses a different part of this helper.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// `/v2/apps` with one app, `/web` in group `external` on service port 10000, for tests about
/// how the answer is fetched rather than what it holds.
pub const ONE_APP: &str = r#"{"apps": [
  {"id": "/web", "labels": {"HAPROXY_GROUP": "external"}, "portDefinitions": [{"port": 10000}]}
]}"#;

/// `/v2/tasks` with `/web`'s one task, at 10.0.0.1:31000 (rendered as `server 10_0_0_1_31000`).
pub const ONE_TASK: &str = r#"{"tasks": [
  {"id": "web.1", "appId": "/web", "host": "10.0.0.1", "ports": [31000], "state": "TASK_RUNNING"}
]}"#;

pub const APPS_PATH: &str = "/v2/apps";
pub const TASKS_PATH: &str = "/v2/tasks";
pub const EVENTS_PATH: &str = "/v2/events";

/// Longest a scripted hang or stall holds its connection when the server is not dropped first.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);
/// Longest a connection may take to send its request head.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `Drop` waits for connection threads to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// How the server answers a request (after the basic-auth check, when one is required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// `200` with the current apps or tasks body (the default); `404` for other paths.
    Serve,
    /// This status with a short JSON `message` body.
    Status(u16),
    /// Read the request, then answer nothing and hold the connection open until the server is
    /// dropped (at most [`HANG_LIMIT`]).
    Hang,
    /// Read the request, then close the connection without answering.
    CloseEarly,
    /// Send the whole body with a `Content-Length` 64 bytes larger than it, then close.
    Truncate,
    /// Send the headers and half the body, then stall like [`Behaviour::Hang`].
    SlowBody,
    /// `200` with a body that is not JSON (`{"apps": [{"id": "/br` ...).
    BrokenJson,
    /// `200` with exactly this body.
    Body(String),
    /// `307 Temporary Redirect` to this base URL with the request's path and query appended.
    Redirect(String),
}

/// How lines end in what the event stream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnding {
    /// `\r\n`, as Marathon's Jetty sends (the default).
    Crlf,
    /// `\n`, as Marathon's documentation shows.
    Lf,
}

impl LineEnding {
    fn text(self) -> &'static str {
        match self {
            LineEnding::Crlf => "\r\n",
            LineEnding::Lf => "\n",
        }
    }
}

/// One open `/v2/events` stream.
#[derive(Default)]
struct EventStream {
    id: u64,
    /// Bytes pushed and not yet written.
    pending: Vec<u8>,
    ending: Option<StreamEnding>,
    /// Sends nothing any more, heartbeats included, but stays open.
    silent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnding {
    /// The last chunk, then close: a clean end of the body.
    Clean,
    /// Close mid-body.
    Drop,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The path without the query string, e.g. `/v2/apps`.
    pub path: String,
    pub query: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
}

struct State {
    apps: String,
    tasks: String,
    global: Behaviour,
    per_path: HashMap<String, Behaviour>,
    /// The `Authorization` value demanded, when basic auth is required.
    expected_authorization: Option<String>,
    requests: Vec<RecordedRequest>,
    streams: Vec<EventStream>,
    next_stream_id: u64,
    streams_opened: usize,
    line_ending: LineEnding,
    /// A bare line ending sent on each open stream after this long without other output.
    heartbeat: Option<Duration>,
    active_connections: usize,
    shutting_down: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on every change of `state`: a request recorded, a connection ended, shutdown.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take every later assertion down with it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The running server; dropped, it stops accepting, releases hung connections and waits (bounded)
/// for its threads.
pub struct FakeMarathon {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl FakeMarathon {
    /// Starts a server on `127.0.0.1:0` serving empty `{"apps": []}` and `{"tasks": []}`.
    pub fn start() -> FakeMarathon {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the fake Marathon");
        let addr = listener.local_addr().expect("fake Marathon address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                apps: r#"{"apps": []}"#.to_string(),
                tasks: r#"{"tasks": []}"#.to_string(),
                global: Behaviour::Serve,
                per_path: HashMap::new(),
                expected_authorization: None,
                requests: Vec::new(),
                streams: Vec::new(),
                next_stream_id: 0,
                streams_opened: 0,
                line_ending: LineEnding::Crlf,
                heartbeat: None,
                active_connections: 0,
                shutting_down: false,
            }),
            changed: Condvar::new(),
        });
        let accept_shared = Arc::clone(&shared);
        let accept_thread = thread::Builder::new()
            .name(format!("fake-marathon-{}", addr.port()))
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawning the fake Marathon");
        FakeMarathon {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the bodies served for `/v2/apps` and `/v2/tasks`.
    pub fn set_state(&self, apps_json: impl Into<String>, tasks_json: impl Into<String>) {
        let mut state = self.shared.lock();
        state.apps = apps_json.into();
        state.tasks = tasks_json.into();
    }

    /// [`FakeMarathon::set_state`] from one JSON object per app and one per task (see
    /// [`http_app`](super::workspace::http_app) and
    /// [`running_task`](super::workspace::running_task)).
    pub fn set_apps(&self, apps: &[String], tasks: &[String]) {
        self.set_state(
            format!(r#"{{"apps":[{}]}}"#, apps.join(",")),
            format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")),
        );
    }

    /// Serves `dir/apps.json` and `dir/tasks.json` (the compatibility corpus layout).
    pub fn set_state_from_dir(&self, dir: &Path) {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        };
        self.set_state(read("apps.json"), read("tasks.json"));
    }

    /// How every path is answered unless [`FakeMarathon::set_path_behaviour`] says otherwise.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        self.shared.lock().global = behaviour;
    }

    /// How requests to `path` (without query, e.g. [`APPS_PATH`]) are answered.
    pub fn set_path_behaviour(&self, path: &str, behaviour: Behaviour) {
        self.shared
            .lock()
            .per_path
            .insert(path.to_string(), behaviour);
    }

    /// Back to serving the state normally on every path (auth requirements stay).
    pub fn clear_behaviours(&self) {
        let mut state = self.shared.lock();
        state.global = Behaviour::Serve;
        state.per_path.clear();
    }

    /// Answers `401` unless the request carries exactly these basic-auth credentials.
    pub fn require_basic_auth(&self, user: &str, password: &str) {
        let token = base64_encode(format!("{user}:{password}").as_bytes());
        self.shared.lock().expected_authorization = Some(format!("Basic {token}"));
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many requests for `path` (without query) arrived so far.
    pub fn request_count(&self, path: &str) -> usize {
        count_path(&self.shared.lock(), path)
    }

    pub fn total_requests(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Waits until at least `count` requests for `path` arrived, or `timeout` passes; returns
    /// whether they did.
    pub fn wait_for_requests(&self, path: &str, count: usize, timeout: Duration) -> bool {
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |state| count_path(state, path) < count)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        count_path(&state, path) >= count
    }
}

/// The event stream side.
impl FakeMarathon {
    /// How lines end in events and heartbeats from now on. Default CRLF.
    pub fn set_line_ending(&self, ending: LineEnding) {
        self.shared.lock().line_ending = ending;
    }

    /// Sends a heartbeat (a bare line ending) on each open stream after `every` without other
    /// output; `None` (the default) sends none.
    pub fn set_heartbeat(&self, every: Option<Duration>) {
        self.shared.lock().heartbeat = every;
        self.shared.changed.notify_all();
    }

    /// Sends `event: TYPE` and `data: DATA` (one `data:` line per line of `data`) and the blank
    /// line to every open, non-silent stream; returns how many streams it went to.
    pub fn push_event(&self, event_type: &str, data: &str) -> usize {
        let ending = self.shared.lock().line_ending.text();
        let mut block = format!("event: {event_type}{ending}");
        for line in data.lines() {
            block.push_str(&format!("data: {line}{ending}"));
        }
        block.push_str(ending);
        self.push_raw(block.as_bytes())
    }

    /// Sends these bytes as they are to every open, non-silent stream; returns how many.
    pub fn push_raw(&self, bytes: &[u8]) -> usize {
        let mut state = self.shared.lock();
        let mut reached = 0;
        for stream in state.streams.iter_mut().filter(|s| !s.silent) {
            stream.pending.extend_from_slice(bytes);
            reached += 1;
        }
        drop(state);
        self.shared.changed.notify_all();
        reached
    }

    /// Closes every open stream mid-body, as a crashed Marathon or a cut network does.
    pub fn drop_streams(&self) {
        self.end_open_streams(StreamEnding::Drop);
    }

    /// Ends every open stream cleanly (the last chunk, then close), as a restarting Marathon does.
    pub fn end_streams(&self) {
        self.end_open_streams(StreamEnding::Clean);
    }

    /// Every open stream stays open but sends nothing more, heartbeats included. Streams opened
    /// later behave normally.
    pub fn silence_streams(&self) {
        for stream in self.shared.lock().streams.iter_mut() {
            stream.silent = true;
            stream.pending.clear();
        }
    }

    /// How many streams are open now.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().streams.len()
    }

    /// How many streams were opened so far (answered `200`, open or since ended).
    pub fn streams_opened(&self) -> usize {
        self.shared.lock().streams_opened
    }

    /// Waits until at least `count` streams were opened and one is open, or `timeout` passes;
    /// returns whether they were. An event pushed after this returns `true` reaches a stream.
    pub fn wait_for_streams_opened(&self, count: usize, timeout: Duration) -> bool {
        let ready = |state: &State| state.streams_opened >= count && !state.streams.is_empty();
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |state| !ready(state))
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ready(&state)
    }

    fn end_open_streams(&self, ending: StreamEnding) {
        for stream in self.shared.lock().streams.iter_mut() {
            stream.ending = Some(ending);
        }
        self.shared.changed.notify_all();
    }
}

impl Drop for FakeMarathon {
    fn drop(&mut self) {
        self.shared.lock().shutting_down = true;
        self.shared.changed.notify_all();
        // Wake the accept loop, which checks the flag after each accepted connection.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        let state = self.shared.lock();
        let _ = self
            .shared
            .changed
            .wait_timeout_while(state, SHUTDOWN_WAIT, |state| state.active_connections > 0);
    }
}

/// A `http://127.0.0.1:PORT` URL that refuses connections for the rest of the test process:
/// the port stays reserved (bound, never listening; see [`super::ports`]), so no other test
/// can start listening there. Prefer [`super::ports::Port::refused_url`].
pub fn refused_url() -> String {
    super::ports::Port::reserve().leak_refused_url()
}

fn count_path(state: &State, path: &str) -> usize {
    state.requests.iter().filter(|r| r.path == path).count()
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.lock().shutting_down {
            return;
        }
        let Ok(stream) = stream else { continue };
        shared.lock().active_connections += 1;
        let connection_shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("fake-marathon-conn".to_string())
            .spawn(move || {
                let _ = handle_connection(stream, &connection_shared);
                connection_shared.lock().active_connections -= 1;
                connection_shared.changed.notify_all();
            });
        if spawned.is_err() {
            shared.lock().active_connections -= 1;
        }
    }
}

fn handle_connection(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_READ_TIMEOUT))?;
    let Some(request) = read_request(&stream)? else {
        return Ok(());
    };
    let (behaviour, body, authorized, event_stream) = {
        let mut state = shared.lock();
        state.requests.push(request.clone());
        let behaviour = state
            .per_path
            .get(&request.path)
            .unwrap_or(&state.global)
            .clone();
        let body = match request.path.as_str() {
            APPS_PATH => Some(state.apps.clone()),
            TASKS_PATH => Some(state.tasks.clone()),
            _ => None,
        };
        let authorized = match &state.expected_authorization {
            None => true,
            Some(expected) => request.authorization.as_deref() == Some(expected.as_str()),
        };
        // Registered under the same lock that records the request, so an event pushed once
        // the request is seen reaches this stream.
        let event_stream =
            (request.path == EVENTS_PATH && authorized && behaviour == Behaviour::Serve)
                .then(|| open_event_stream(&mut state));
        (behaviour, body, authorized, event_stream)
    };
    shared.changed.notify_all();
    let mut stream = stream;
    if let Some(id) = event_stream {
        let result = serve_event_stream(&mut stream, shared, id);
        shared.lock().streams.retain(|s| s.id != id);
        shared.changed.notify_all();
        return result;
    }
    if !authorized {
        let message = r#"{"message": "invalid username or password."}"#;
        let extra = "WWW-Authenticate: Basic realm=\"Mesosphere\"\r\n";
        return write_response(&mut stream, 401, extra, message.as_bytes(), None);
    }
    match behaviour {
        Behaviour::Serve => match body {
            Some(body) => write_response(&mut stream, 200, "", body.as_bytes(), None),
            None => {
                let message = format!(r#"{{"message": "no route for {}"}}"#, request.path);
                write_response(&mut stream, 404, "", message.as_bytes(), None)
            }
        },
        Behaviour::Status(code) => {
            let message = format!(r#"{{"message": "scripted status {code}"}}"#);
            write_response(&mut stream, code, "", message.as_bytes(), None)
        }
        Behaviour::Hang => {
            hold_until_shutdown(shared);
            Ok(())
        }
        Behaviour::CloseEarly => Ok(()),
        Behaviour::Truncate => {
            let body = body.unwrap_or_default();
            let declared = body.len() + 64;
            write_response(&mut stream, 200, "", body.as_bytes(), Some(declared))
        }
        Behaviour::SlowBody => {
            let body = body.unwrap_or_default();
            let half = &body.as_bytes()[..body.len() / 2];
            write_response(&mut stream, 200, "", half, Some(body.len()))?;
            hold_until_shutdown(shared);
            Ok(())
        }
        Behaviour::BrokenJson => {
            let body = br#"{"apps": [{"id": "/broken", "labels": {"#;
            write_response(&mut stream, 200, "", body, None)
        }
        Behaviour::Body(body) => write_response(&mut stream, 200, "", body.as_bytes(), None),
        Behaviour::Redirect(base) => {
            let mut location = format!("{}{}", base.trim_end_matches('/'), request.path);
            if let Some(query) = &request.query {
                location.push('?');
                location.push_str(query);
            }
            let extra = format!("Location: {location}\r\n");
            write_response(&mut stream, 307, &extra, b"", None)
        }
    }
}

fn open_event_stream(state: &mut State) -> u64 {
    let id = state.next_stream_id;
    state.next_stream_id += 1;
    state.streams_opened += 1;
    state.streams.push(EventStream {
        id,
        ..EventStream::default()
    });
    id
}

/// Streams what is pushed, heartbeats when asked to, until the stream is ended, dropped, the
/// server shuts down, or [`HANG_LIMIT`] passes.
fn serve_event_stream(stream: &mut TcpStream, shared: &Shared, id: u64) -> std::io::Result<()> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes())?;
    stream.flush()?;
    let opened = Instant::now();
    loop {
        let left = HANG_LIMIT.saturating_sub(opened.elapsed());
        if left.is_zero() {
            return Ok(());
        }
        let (bytes, ending) = {
            let state = shared.lock();
            let wait = state.heartbeat.unwrap_or(left).min(left);
            let idle = |state: &mut State| {
                !state.shutting_down
                    && state.streams.iter().any(|s| {
                        s.id == id && s.ending.is_none() && (s.silent || s.pending.is_empty())
                    })
            };
            let (mut state, waited) = shared
                .changed
                .wait_timeout_while(state, wait, idle)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let heartbeat = state.heartbeat.is_some() && waited.timed_out();
            let ending_text = state.line_ending.text();
            let shutting_down = state.shutting_down;
            let Some(slot) = state.streams.iter_mut().find(|s| s.id == id) else {
                return Ok(());
            };
            let ending = if shutting_down {
                Some(StreamEnding::Drop)
            } else {
                slot.ending
            };
            let mut bytes = std::mem::take(&mut slot.pending);
            if slot.silent {
                bytes.clear();
            } else if bytes.is_empty() && heartbeat {
                bytes.extend_from_slice(ending_text.as_bytes());
            }
            (bytes, ending)
        };
        match ending {
            Some(StreamEnding::Drop) => return Ok(()),
            Some(StreamEnding::Clean) => {
                stream.write_all(b"0\r\n\r\n")?;
                return stream.flush();
            }
            None if bytes.is_empty() => {}
            None => {
                stream.write_all(format!("{:x}\r\n", bytes.len()).as_bytes())?;
                stream.write_all(&bytes)?;
                stream.write_all(b"\r\n")?;
                stream.flush()?;
            }
        }
    }
}

/// Blocks until the server is dropped, at most [`HANG_LIMIT`].
fn hold_until_shutdown(shared: &Shared) {
    let state = shared.lock();
    let _ = shared
        .changed
        .wait_timeout_while(state, HANG_LIMIT, |state| !state.shutting_down);
}

/// Reads one request head; `None` when the peer closed or sent nothing usable.
fn read_request(stream: &TcpStream) -> std::io::Result<Option<RecordedRequest>> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(None);
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (target.to_string(), None),
    };
    let mut request = RecordedRequest {
        method: method.to_string(),
        path,
        query,
        authorization: None,
        accept: None,
    };
    let started = Instant::now();
    let mut head_len = request_line.len();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line)?;
        head_len += read;
        if read == 0 || head_len > MAX_REQUEST_HEAD || started.elapsed() > REQUEST_READ_TIMEOUT {
            return Ok(None);
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok(Some(request));
        }
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim().to_string();
            if name.eq_ignore_ascii_case("authorization") {
                request.authorization = Some(value);
            } else if name.eq_ignore_ascii_case("accept") {
                // Repeated headers are kept comma-joined, so a duplicate shows in assertions.
                request.accept = Some(match request.accept.take() {
                    Some(earlier) => format!("{earlier}, {value}"),
                    None => value,
                });
            }
        }
    }
}

/// Writes a response; `declared_length` overrides `Content-Length` (to script truncation).
fn write_response(
    stream: &mut TcpStream,
    status: u16,
    extra_headers: &str,
    body: &[u8],
    declared_length: Option<usize>,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\nConnection: close\r\n{extra_headers}\r\n",
        reason = reason_phrase(status),
        length = declared_length.unwrap_or(body.len()),
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Scripted",
    }
}

/// Standard base64 with padding, for the `Authorization: Basic` value.
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
