//! Marathon's event stream (`GET /v2/events`, Server-Sent Events): one blocking reader thread
//! that only ever says "look now". It never interprets what changed (Marathon does not promise
//! event order, and a missed event must not leave HAProxy wrong); the caller answers every piece
//! of news with a full, normal run. It never prints: what happened is in the news it sends.
//!
//! The stream goes through the same agent as `fetch` (sources, credentials, TLS roots, connect
//! timeout), follows one redirect to the leader, and is taken for dead when it stays silent
//! longer than `EventsConfig::stream_timeout` (Marathon sends a heartbeat line every 10 s).

use std::io::Read;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ureq::{Agent, Body, ResponseExt};

use super::http::{self, RequestBudget};
use crate::config::{EventsConfig, FetchConfig, MarathonSource};

/// The event types that can change what HAProxy routes to, asked for with `event_type=` (Marathon
/// 1.3.7 and later filter on it) and checked again here for Marathons that ignore the filter:
/// task state and health, app definitions (created, changed, deleted) and deployments.
pub const RELEVANT_EVENTS: &[&str] = &[
    "status_update_event",
    "health_status_changed_event",
    "api_post_event",
    "app_terminated_event",
    "deployment_success",
    "deployment_failed",
    "deployment_step_success",
    "deployment_step_failure",
];

/// The path and query asked for. `plan-format=light` (as marathon-lb asks) keeps Marathon from
/// putting whole group trees into deployment events, which we would only throw away.
pub fn events_path_and_query() -> String {
    let mut query = String::from("/v2/events?plan-format=light");
    for event_type in RELEVANT_EVENTS {
        query.push_str("&event_type=");
        query.push_str(event_type);
    }
    query
}

/// Redirects followed: a non-leader Marathon (1.7 and later) redirects `/v2/events` to the leader.
const MAX_REDIRECTS: u32 = 1;

/// Largest line or `data` kept of one event; the rest is dropped. Only the event's type matters
/// here, and it comes first (`event:`), so a huge deployment event cannot exhaust memory.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What the reader tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamNews {
    /// The stream is open at `url` (after any redirect). Events may have been missed while it
    /// was not, so this calls for a run too.
    Connected { url: String },
    /// A relevant event arrived.
    Changed { event_type: String },
    /// The stream could not be opened from any source, or ended; the reader tries again after
    /// `retry_in`.
    Lost { reason: String, retry_in: Duration },
}

/// The running reader thread. Dropping it asks the thread to stop: at once when it is waiting
/// to reconnect, otherwise at its next read (at most `stream_timeout`). It is never joined, so
/// it cannot hold up shutdown; the process ends when `main` returns.
pub struct EventReader {
    _stop: mpsc::Sender<()>,
}

/// Starts the reader of `config.sources`' URLs (in order, like `fetch`), sending every piece of
/// news to `notify`; the thread ends when `notify` returns false or the [`EventReader`] is
/// dropped. Fails at once when no source is a URL or the CA bundle cannot be read.
pub fn spawn_reader(
    fetch: &FetchConfig,
    events: &EventsConfig,
    notify: impl FnMut(StreamNews) -> bool + Send + 'static,
) -> Result<EventReader> {
    let targets: Vec<(String, http::Target)> = fetch
        .sources
        .iter()
        .filter_map(|source| match source {
            MarathonSource::Url(base) => Some((
                source.redacted(),
                http::Target::new(
                    base,
                    fetch.credentials.as_ref(),
                    fetch.credentials_from.as_deref(),
                ),
            )),
            MarathonSource::Snapshot(_) => None,
        })
        .collect();
    if targets.is_empty() {
        bail!("--sse needs a Marathon URL: a snapshot directory has no event stream");
    }
    let (stop_tx, stop_rx) = mpsc::channel();
    let reader = Reader {
        agent: http::agent(fetch, "text/event-stream")?,
        dcos: fetch.dcos_service_account.clone(),
        trusted: http::trusted_origins(fetch),
        targets,
        request_timeout: fetch.request_timeout,
        settings: events.clone(),
        stop: stop_rx,
    };
    thread::Builder::new()
        .name("marathon-events".to_string())
        .spawn(move || reader.run(notify))
        .context("starting the event stream reader thread")?;
    Ok(EventReader { _stop: stop_tx })
}

struct Reader {
    agent: Agent,
    dcos: Option<crate::config::DcosServiceAccount>,
    /// Each URL source as named in messages (password redacted) and as asked.
    targets: Vec<(String, http::Target)>,
    trusted: Vec<String>,
    request_timeout: Duration,
    settings: EventsConfig,
    stop: mpsc::Receiver<()>,
}

/// How one pass over the sources ended.
enum Pass {
    /// No source opened a stream.
    Failed { reason: String },
    /// A stream was open for `lasted`, then ended.
    Ended { reason: String, lasted: Duration },
    /// The owner is gone.
    Stopped,
}

/// How one open stream ended.
enum StreamEnd {
    Ended(String),
    Stopped,
}

impl Reader {
    fn run(self, mut notify: impl FnMut(StreamNews) -> bool) {
        let mut failures_in_a_row: u32 = 0;
        loop {
            let reason = match self.pass(&mut notify) {
                Pass::Stopped => return,
                Pass::Failed { reason } => {
                    failures_in_a_row += 1;
                    reason
                }
                Pass::Ended { reason, lasted } => {
                    // A stream that lived long ended for a reason of its own (a leader
                    // change, a restart): reopen at once. One that ended early is failing.
                    if lasted >= self.settings.reconnect_max {
                        failures_in_a_row = 0;
                    } else {
                        failures_in_a_row += 1;
                    }
                    reason
                }
            };
            let retry_in = backoff(&self.settings, failures_in_a_row);
            if !notify(StreamNews::Lost { reason, retry_in }) {
                return;
            }
            match self.stop.recv_timeout(retry_in) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    /// Tries each source in order until one opens a stream, and follows that stream to its end.
    fn pass(&self, notify: &mut impl FnMut(StreamNews) -> bool) -> Pass {
        let mut failures = Vec::new();
        for (name, target) in &self.targets {
            if matches!(self.stop.try_recv(), Err(mpsc::TryRecvError::Disconnected)) {
                return Pass::Stopped;
            }
            match self.open(target) {
                Ok((url, body)) => {
                    if !notify(StreamNews::Connected { url: url.clone() }) {
                        return Pass::Stopped;
                    }
                    let opened = Instant::now();
                    return match self.follow(body, notify) {
                        StreamEnd::Stopped => Pass::Stopped,
                        StreamEnd::Ended(reason) => Pass::Ended {
                            reason: format!("{url}: {reason}"),
                            lasted: opened.elapsed(),
                        },
                    };
                }
                Err(error) => failures.push(format!("{name}: {error:#}")),
            }
        }
        Pass::Failed {
            reason: failures.join("; "),
        }
    }

    /// Opens the stream at one source; the URL it ended up at (without the query) and the body.
    fn open(&self, target: &http::Target) -> Result<(String, Body)> {
        let url = format!("{}{}", target.base, events_path_and_query());
        let budget =
            RequestBudget::new(self.request_timeout, Instant::now() + self.request_timeout)?;
        let send = |url: &str, authorization: Option<&str>| {
            let mut request = self
                .agent
                .get(url)
                // Proxies between us and Marathon must not answer from a cache.
                .header("Cache-Control", "no-cache");
            if let Some(authorization) = authorization {
                request = request.header("Authorization", authorization);
            }
            // No global or body timeout: the body never ends. Opening is bounded by --timeout;
            // after that, each read by the stream timeout, which heartbeats keep resetting.
            let opening = Some(self.request_timeout);
            request
                .config()
                .timeout_resolve(opening)
                .timeout_connect(opening)
                .timeout_send_request(opening)
                .timeout_recv_response(opening)
                .timeout_per_read(Some(self.settings.stream_timeout))
                .build()
                .call()
        };
        // DC/OS: a fresh login for each opening, so a token that expired meanwhile is renewed.
        let dcos_authorization = match &self.dcos {
            Some(account) => Some(
                super::dcos::Login::new(account, self.request_timeout)
                    .authorization(&self.agent, Instant::now() + self.request_timeout)?,
            ),
            None => None,
        };
        let mut redirects = http::Redirects::new(&self.trusted);
        let authorization = dcos_authorization
            .as_deref()
            .or(target.authorization.as_deref());
        let response =
            http::follow_redirects(&url, authorization, MAX_REDIRECTS, &mut redirects, send)
                .map_err(|error| match error {
                    ureq::Error::TooManyRedirects => anyhow!(
                        "redirected more than once (a Marathon that is not the leader redirects \
                     once, to the leader)"
                    ),
                    other => anyhow!(http::describe_transport_error(&other, &budget)),
                })
                .context("GET /v2/events")?;
        let status = response.status();
        let final_uri = response.get_uri().clone();
        let shown = without_query(&final_uri.to_string());
        if !status.is_success() {
            let message = http::marathon_message(response.into_body());
            let credentials = http::CredentialsSent {
                from: match &self.dcos {
                    Some(_) => Some("--dcos-auth-credentials"),
                    None => target.from.as_deref(),
                },
                held_back_at: redirects.held_back_at.as_deref(),
            };
            let text = http::describe_status(status, message, &final_uri, &url, credentials);
            bail!("GET /v2/events: {text}");
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("none")
            .to_string();
        if !content_type.starts_with("text/event-stream") {
            bail!("GET /v2/events at {shown}: not an event stream (Content-Type: {content_type})");
        }
        Ok((shown, response.into_body()))
    }

    /// Reads the open stream until it ends, fails or stays silent too long.
    fn follow(&self, body: Body, notify: &mut impl FnMut(StreamNews) -> bool) -> StreamEnd {
        // Unlimited on purpose: the stream never ends; the parser bounds what it keeps.
        let mut reader = body.into_reader();
        let mut parser = Parser::new();
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let read = match reader.read(&mut buffer) {
                Ok(0) => return StreamEnd::Ended("Marathon closed the event stream".to_string()),
                Ok(read) => read,
                Err(error) => return StreamEnd::Ended(self.describe_read_error(&error)),
            };
            for event in parser.feed(&buffer[..read]) {
                let Some(event_type) = relevant_type(&event) else {
                    continue;
                };
                if !notify(StreamNews::Changed { event_type }) {
                    return StreamEnd::Stopped;
                }
            }
            if matches!(self.stop.try_recv(), Err(mpsc::TryRecvError::Disconnected)) {
                return StreamEnd::Stopped;
            }
        }
    }

    fn describe_read_error(&self, error: &std::io::Error) -> String {
        let inner = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ureq::Error>());
        let timed_out = matches!(inner, Some(ureq::Error::Timeout(_)))
            || matches!(
                error.kind(),
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
            );
        if timed_out {
            return format!(
                "no event and no heartbeat for {:?} (--sse-timeout); the stream is taken for dead",
                self.settings.stream_timeout
            );
        }
        match error.kind() {
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                "connection reset by the server".to_string()
            }
            std::io::ErrorKind::UnexpectedEof => "the connection closed mid-stream".to_string(),
            _ => format!("reading the event stream failed: {error}"),
        }
    }
}

/// The wait before the next try after `failures_in_a_row` failures: none after a healthy
/// stream ended, then `reconnect_min` doubling up to `reconnect_max`.
fn backoff(settings: &EventsConfig, failures_in_a_row: u32) -> Duration {
    if failures_in_a_row == 0 {
        return Duration::ZERO;
    }
    let doublings = (failures_in_a_row - 1).min(16);
    settings
        .reconnect_min
        .saturating_mul(1 << doublings)
        .min(settings.reconnect_max)
}

fn without_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

/// The event's type when it is one of [`RELEVANT_EVENTS`]. Marathon names it in `event:`; when a
/// proxy or an old version leaves that out, the JSON's `eventType` says it.
fn relevant_type(event: &Event) -> Option<String> {
    let named = if event.event_type == "message" {
        #[derive(serde::Deserialize)]
        struct Typed {
            #[serde(rename = "eventType")]
            event_type: String,
        }
        serde_json::from_str::<Typed>(&event.data).ok()?.event_type
    } else {
        event.event_type.clone()
    };
    RELEVANT_EVENTS.contains(&named.as_str()).then_some(named)
}

/// One Server-Sent Event as dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; `message` when the event had none.
    pub event_type: String,
    /// The `data:` lines joined with `\n` (cut at 1 MiB).
    pub data: String,
}

/// An incremental parser of the `text/event-stream` format, as the WHATWG HTML standard
/// ("Interpreting an event stream") defines it: lines end in CRLF, LF or CR, even split across
/// reads; `:` starts a comment; a blank line dispatches the event, and a blank line with no data
/// before it (Marathon's heartbeat) dispatches nothing. `id` and `retry` are read and dropped:
/// Marathon cannot resume a stream, and reconnecting is our own policy.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The last byte ended a line with CR, so an LF right after it ends nothing.
    after_cr: bool,
    /// Nothing but (a part of) a byte order mark has been seen yet.
    at_start: bool,
    event_type: String,
    data: Vec<u8>,
    has_data: bool,
}

impl Parser {
    pub fn new() -> Parser {
        Parser {
            at_start: true,
            ..Parser::default()
        }
    }

    /// Takes the next bytes of the stream; returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' => {
                    self.after_cr = true;
                    self.end_line(&mut events);
                }
                b'\n' => self.end_line(&mut events),
                _ if self.line.len() < MAX_EVENT_BYTES => self.line.push(byte),
                _ => {} // An overlong line keeps its start, where the field name is.
            }
        }
        events
    }

    fn end_line(&mut self, events: &mut Vec<Event>) {
        let mut line = std::mem::take(&mut self.line);
        if self.at_start {
            self.at_start = false;
            if line.starts_with("\u{feff}".as_bytes()) {
                line.drain(..3);
            }
        }
        if line.is_empty() {
            if let Some(event) = self.dispatch() {
                events.push(event);
            }
            return;
        }
        if line[0] == b':' {
            return; // A comment: servers use them as keep-alives.
        }
        let (field, value) = match line.iter().position(|&byte| byte == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &[][..]),
        };
        match field {
            b"event" => self.event_type = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                self.has_data = true;
                let room = MAX_EVENT_BYTES.saturating_sub(self.data.len());
                self.data.extend_from_slice(&value[..value.len().min(room)]);
                if self.data.len() < MAX_EVENT_BYTES {
                    self.data.push(b'\n');
                }
            }
            _ => {} // id, retry and unknown fields.
        }
    }

    fn dispatch(&mut self) -> Option<Event> {
        let event_type = std::mem::take(&mut self.event_type);
        let mut data = std::mem::take(&mut self.data);
        if !std::mem::take(&mut self.has_data) {
            return None;
        }
        if data.last() == Some(&b'\n') {
            data.pop();
        }
        Some(Event {
            event_type: if event_type.is_empty() {
                "message".to_string()
            } else {
                event_type
            },
            data: String::from_utf8_lossy(&data).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: &str) -> Event {
        Event {
            event_type: event_type.to_string(),
            data: data.to_string(),
        }
    }

    /// Feeds `stream` whole, then again one byte at a time (every split a socket can make).
    fn parse_both_ways(stream: &[u8]) -> Vec<Event> {
        let whole = Parser::new().feed(stream);
        let mut parser = Parser::new();
        let bytewise: Vec<Event> = stream
            .iter()
            .flat_map(|byte| parser.feed(std::slice::from_ref(byte)))
            .collect();
        assert_eq!(whole, bytewise, "splitting the input changed the events");
        whole
    }

    #[test]
    fn lf_crlf_and_cr_line_ends_give_the_same_events() {
        let expected = vec![event("status_update_event", "{\"a\":1}")];
        for ending in ["\n", "\r\n", "\r"] {
            let stream =
                format!("event: status_update_event{ending}data: {{\"a\":1}}{ending}{ending}");
            assert_eq!(parse_both_ways(stream.as_bytes()), expected, "{ending:?}");
        }
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let stream = b"event: x\r\ndata: first\r\ndata:second\r\ndata:\r\ndata:  indented\r\n\r\n";
        assert_eq!(
            parse_both_ways(stream),
            vec![event("x", "first\nsecond\n\n indented")]
        );
    }

    #[test]
    fn heartbeats_and_comments_dispatch_nothing() {
        let stream = b"\r\n\r\n: keep-alive\r\n\r\nevent: lonely\r\n\r\n\r\n";
        assert_eq!(parse_both_ways(stream), vec![]);
        // The event type does not leak from a data-less block into the next event.
        let stream = b"event: lonely\r\n\r\ndata: {}\r\n\r\n";
        assert_eq!(parse_both_ways(stream), vec![event("message", "{}")]);
    }

    #[test]
    fn an_event_is_dispatched_only_by_its_blank_line() {
        let mut parser = Parser::new();
        assert_eq!(parser.feed(b"event: a\r\ndata: 1\r\n"), vec![]);
        assert_eq!(parser.feed(b"\r"), vec![event("a", "1")]);
        // The LF completing that CRLF in the next read is not a second blank line.
        assert_eq!(parser.feed(b"\ndata: 2\n\n"), vec![event("message", "2")]);
    }

    #[test]
    fn field_syntax_follows_the_standard() {
        let stream = "\u{feff}data\nid: 7\nretry: 10\nunknown: x\nevent:no-space\n\n";
        assert_eq!(
            parse_both_ways(stream.as_bytes()),
            vec![event("no-space", "")]
        );
    }

    #[test]
    fn overlong_events_are_cut_not_buffered_whole() {
        let mut stream = b"event: deployment_info\ndata: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', MAX_EVENT_BYTES + 100));
        stream.extend_from_slice(b"\n\n");
        let events = Parser::new().feed(&stream);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "deployment_info");
        assert!(events[0].data.len() <= MAX_EVENT_BYTES);
    }

    #[test]
    fn marathons_documented_excerpt_parses_with_lf_and_with_crlf() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/marathon-samples/marathon-docs-events.txt"
        );
        let excerpt = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(!excerpt.contains('\r'), "upstream's excerpt uses LF");
        // Marathon's Jetty sends CRLF and a bare CRLF heartbeat between events.
        let as_sent = excerpt
            .replace('\n', "\r\n")
            .replace("\r\n\r\n", "\r\n\r\n\r\n");
        for text in [excerpt, as_sent] {
            let events = parse_both_ways(text.as_bytes());
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            assert_eq!(
                types,
                [
                    "event_stream_attached",
                    "status_update_event",
                    "status_update_event"
                ]
            );
            for event in &events {
                let json: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                assert_eq!(json["eventType"], event.event_type.as_str());
            }
            let relevant: Vec<Option<String>> = events.iter().map(relevant_type).collect();
            assert_eq!(
                relevant,
                [
                    None,
                    Some("status_update_event".to_string()),
                    Some("status_update_event".to_string())
                ]
            );
        }
    }

    #[test]
    fn type_comes_from_the_data_when_the_event_field_is_missing() {
        let untyped = event(
            "message",
            r#"{"eventType":"api_post_event","uri":"/v2/apps/x"}"#,
        );
        assert_eq!(relevant_type(&untyped).as_deref(), Some("api_post_event"));
        assert_eq!(relevant_type(&event("message", "not json")), None);
        assert_eq!(relevant_type(&event("framework_message_event", "{}")), None);
    }

    #[test]
    fn the_query_asks_for_every_relevant_type_and_light_plans() {
        let query = events_path_and_query();
        assert!(query.starts_with("/v2/events?plan-format=light&event_type="));
        for event_type in RELEVANT_EVENTS {
            assert!(query.contains(&format!("event_type={event_type}")));
        }
    }

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_cap() {
        let settings = EventsConfig {
            reconnect_min: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(5),
            ..EventsConfig::default()
        };
        let waits: Vec<u128> = (0..7).map(|n| backoff(&settings, n).as_millis()).collect();
        assert_eq!(waits, [0, 500, 1000, 2000, 4000, 5000, 5000]);
        assert_eq!(backoff(&settings, u32::MAX), Duration::from_secs(5));
    }
}
