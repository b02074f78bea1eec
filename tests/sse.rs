//! The `--sse` loop (`schedule::run_on_events_until`) over real HTTP against the stand-in
//! Marathon's `/v2/events`, with a run closure that only reports each run on a channel: the
//! events it reacts to, debounce, filtering, reconnects after a drop or a silence, the polling
//! fallback, auth and redirects, and a bounded shutdown.
//!
//! Waits are bounded and wait for a condition. "No further run" can only be checked by watching
//! for a while: [`QUIET`] is several debounce ceilings, after which any run the loop still owed
//! would have started.

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use haproxy_marathon_sync::config::{
    Config, Credentials, EventsConfig, FetchConfig, MarathonSource,
};
use haproxy_marathon_sync::fetch::events::{events_path_and_query, RELEVANT_EVENTS};
use haproxy_marathon_sync::schedule::{run_on_events_until, Trigger};
use support::marathon::{Behaviour, FakeMarathon, LineEnding, EVENTS_PATH};
use support::ports::Port;
use support::process::Guarded;
use support::sync::Sync;

/// Longest any expected thing may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long "no further run" is watched for: three debounce ceilings.
const QUIET: Duration = Duration::from_millis(900);
/// A resync period no test reaches, unless it sets its own.
const NEVER: Duration = Duration::from_secs(3600);
const HEARTBEAT: Duration = Duration::from_millis(50);
/// How often a polled condition is checked.
const POLL: Duration = Duration::from_millis(5);

fn events_config() -> EventsConfig {
    EventsConfig {
        debounce: Duration::from_millis(50),
        debounce_max: Duration::from_millis(300),
        stream_timeout: Duration::from_secs(2),
        reconnect_min: Duration::from_millis(20),
        reconnect_max: Duration::from_millis(200),
    }
}

fn fetch_config(sources: Vec<MarathonSource>) -> FetchConfig {
    let mut config = Config::new(sources, PathBuf::from("/nonexistent/haproxy.cfg")).fetch;
    config.request_timeout = Duration::from_secs(2);
    config
}

fn url(marathon: &FakeMarathon) -> MarathonSource {
    MarathonSource::Url(marathon.url())
}

/// A stand-in Marathon streaming heartbeats every [`HEARTBEAT`].
fn marathon() -> FakeMarathon {
    let marathon = FakeMarathon::start();
    marathon.set_heartbeat(Some(HEARTBEAT));
    marathon
}

/// The log the loop writes, shared with the test.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

/// The loop running in a thread, each run reported on `runs`.
struct Loop {
    runs: mpsc::Receiver<(Instant, Trigger)>,
    seen: usize,
    stop: mpsc::Sender<String>,
    done: mpsc::Receiver<Result<()>>,
    log: Log,
}

impl Loop {
    fn start(fetch: FetchConfig, events: EventsConfig, interval: Duration) -> Loop {
        let (runs_tx, runs) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        let log = Log::default();
        let mut loop_log = log.clone();
        thread::spawn(move || {
            let result =
                run_on_events_until(&fetch, &events, interval, stop_rx, &mut loop_log, |why| {
                    runs_tx.send((Instant::now(), why)).ok();
                    Ok(None)
                });
            done_tx.send(result).ok();
        });
        Loop {
            runs,
            seen: 0,
            stop,
            done,
            log,
        }
    }

    /// Waits for the next run and checks why it started; returns when it started.
    fn expect_run(&mut self, expected: Trigger, what: &str) -> Instant {
        match self.runs.recv_timeout(PATIENCE) {
            Ok((at, trigger)) => {
                self.seen += 1;
                assert_eq!(
                    trigger,
                    expected,
                    "run {} ({what}); log:\n{}",
                    self.seen,
                    self.log.text()
                );
                at
            }
            Err(_) => panic!(
                "no run {} ({what}) within {PATIENCE:?}; log:\n{}",
                self.seen + 1,
                self.log.text()
            ),
        }
    }

    /// Waits for a run started by `expected`, letting runs started by `meanwhile` pass.
    fn expect_run_among(&mut self, expected: Trigger, meanwhile: Trigger, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.runs.recv_timeout(left) {
                Ok((_, trigger)) if trigger == expected => return,
                Ok((_, trigger)) if trigger == meanwhile => continue,
                Ok((_, trigger)) => panic!("a {trigger:?} run while waiting for {what}"),
                Err(_) => panic!("no run ({what}); log:\n{}", self.log.text()),
            }
        }
    }

    fn expect_no_run(&mut self, after: &str) {
        self.expect_no_run_for(QUIET, after);
    }

    fn expect_no_run_for(&mut self, window: Duration, after: &str) {
        if self.runs.recv_timeout(window).is_ok() {
            panic!(
                "an extra run (number {}) after {after}; log:\n{}",
                self.seen + 1,
                self.log.text()
            );
        }
    }

    /// Asks the loop to stop and waits (bounded) for it to return; returns the log.
    fn stop(self) -> String {
        self.stop.send("test over".to_string()).unwrap();
        match self.done.recv_timeout(PATIENCE) {
            Ok(result) => result.unwrap_or_else(|e| panic!("the loop failed: {e:#}")),
            Err(_) => panic!("the loop did not stop; log:\n{}", self.log.text()),
        }
        self.log.text()
    }
}

fn wait_for_streams(marathon: &FakeMarathon, count: usize, log: &Log) {
    assert!(
        marathon.wait_for_streams_opened(count, PATIENCE),
        "stream {count} was not opened; log:\n{}",
        log.text()
    );
}

/// Waits until `condition` holds, checking every [`POLL`], at most [`PATIENCE`].
fn wait_until(what: &str, condition: impl Fn() -> bool) {
    assert!(wait_for(condition), "timed out waiting until {what}");
}

#[test]
fn one_event_is_one_run_with_crlf_and_with_lf() {
    for ending in [LineEnding::Crlf, LineEnding::Lf] {
        let marathon = marathon();
        marathon.set_line_ending(ending);
        let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events_config(), NEVER);
        lp.expect_run(Trigger::Startup, "the first run");
        wait_for_streams(&marathon, 1, &lp.log);
        // The stream opening before the first run does not cause a second one.
        lp.expect_no_run("the first run");

        let data =
            r#"{"eventType":"status_update_event","taskId":"web.1","taskStatus":"TASK_RUNNING"}"#;
        assert_eq!(marathon.push_event("status_update_event", data), 1);
        lp.expect_run(Trigger::Events, "a status_update_event");
        lp.expect_no_run("the event's run");
        assert_eq!(marathon.streams_opened(), 1, "{ending:?}");

        let log = lp.stop();
        let stream_url = format!("{}{EVENTS_PATH}", marathon.url());
        assert!(
            log.contains(&format!(
                "listening to Marathon's events at {stream_url}; full resync every 1h"
            )),
            "{log}"
        );
        assert!(log.contains("test over, stopping"), "{log}");
    }
}

#[test]
fn the_request_asks_for_an_event_stream_of_relevant_types_only() {
    let marathon = marathon();
    let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events_config(), NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);
    let request = marathon
        .requests()
        .into_iter()
        .find(|r| r.path == EVENTS_PATH)
        .unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(request.accept.as_deref(), Some("text/event-stream"));
    let query = request.query.unwrap();
    assert_eq!(format!("{EVENTS_PATH}?{query}"), events_path_and_query());
    let types: Vec<&str> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("event_type="))
        .collect();
    assert_eq!(types, RELEVANT_EVENTS);
    for expected in [
        "status_update_event",
        "health_status_changed_event",
        "api_post_event",
        "app_terminated_event",
        "deployment_success",
        "deployment_failed",
    ] {
        assert!(types.contains(&expected), "{expected} missing from {query}");
    }
    assert!(!types.contains(&"framework_message_event"));
    lp.stop();
}

#[test]
fn a_burst_of_events_is_one_run() {
    let marathon = marathon();
    let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events_config(), NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);

    // A deployment's worth of events, some in one write and some one by one.
    let mut block = String::new();
    for n in 0..20 {
        block.push_str(&format!(
            "event: status_update_event\r\ndata: {{\"taskId\":\"web.{n}\"}}\r\n\r\n"
        ));
    }
    marathon.push_raw(block.as_bytes());
    for event_type in RELEVANT_EVENTS {
        marathon.push_event(event_type, "{}");
    }
    lp.expect_run(Trigger::Events, "the burst");
    lp.expect_no_run("the burst's run");
    lp.stop();
}

/// The quiet period counts from the last event of a burst, not the first: events spaced just
/// under the debounce start no run until the last one has been quiet for the debounce, then
/// exactly one. Asserted by order (the run starts no sooner than the last push plus the
/// debounce, which holds however slow the machine) and by count. The pushes are paced, not
/// synchronised; a spacing the scheduler stretched past the debounce would make an earlier run
/// legitimate, so such an attempt is discarded and the burst sent again (bounded).
#[test]
fn events_spaced_under_the_debounce_run_once_after_the_last() {
    const DEBOUNCE: Duration = Duration::from_millis(600);
    const SPACING: Duration = Duration::from_millis(400);
    const EVENTS: usize = 4;
    let marathon = marathon();
    let events = EventsConfig {
        debounce: DEBOUNCE,
        debounce_max: Duration::from_secs(60),
        ..events_config()
    };
    let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events, NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);
    for attempt in 1..=3 {
        let mut pushed = Vec::new();
        for n in 0..EVENTS {
            if n > 0 {
                thread::sleep(SPACING);
            }
            assert_eq!(
                marathon.push_event("status_update_event", "{}"),
                1,
                "the event reached the stream"
            );
            pushed.push(Instant::now());
        }
        let last = *pushed.last().unwrap();
        let at = lp.expect_run(Trigger::Events, "the spaced burst");
        let stretched = pushed.windows(2).any(|w| w[1] - w[0] >= DEBOUNCE);
        if stretched {
            eprintln!("attempt {attempt}: a push came late ({pushed:?}); sending the burst again");
            // Let any run the stretched burst legitimately owes pass before the next attempt.
            while lp.runs.recv_timeout(DEBOUNCE * 2).is_ok() {}
            continue;
        }
        assert!(
            at >= last + DEBOUNCE,
            "the run started {:?} after the last event, before the debounce of {DEBOUNCE:?} \
             had passed; log:\n{}",
            at.saturating_duration_since(last),
            lp.log.text()
        );
        lp.expect_no_run_for(DEBOUNCE * 2, "the spaced burst's run");
        lp.stop();
        return;
    }
    panic!("three bursts in a row were stretched past the debounce by the scheduler");
}

#[test]
fn irrelevant_events_comments_and_heartbeats_do_not_run() {
    let marathon = marathon();
    let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events_config(), NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);

    // What a Marathon that ignores `event_type=` would still send.
    marathon.push_event("event_stream_attached", r#"{"remoteAddress":"127.0.0.1"}"#);
    marathon.push_event("framework_message_event", "{}");
    marathon.push_raw(b": a comment\r\n\r\n\r\n\r\n");
    marathon.push_raw(b"data: {\"eventType\":\"deployment_info\"}\r\n\r\n");
    lp.expect_no_run("irrelevant events");

    // The stream was live all along: a relevant event without `event:` still counts.
    marathon.push_raw(b"data: {\"eventType\":\"api_post_event\"}\r\n\r\n");
    lp.expect_run(Trigger::Events, "an untyped api_post_event");
    lp.stop();
}

#[test]
fn a_dropped_or_ended_stream_is_reopened_with_a_resync_run() {
    let marathon = marathon();
    let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events_config(), NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);

    marathon.drop_streams();
    lp.expect_run(Trigger::StreamOpened, "the reopening after a drop");
    wait_for_streams(&marathon, 2, &lp.log);

    marathon.end_streams();
    lp.expect_run(Trigger::StreamOpened, "the reopening after a clean end");
    wait_for_streams(&marathon, 3, &lp.log);

    // Still reacting to events on the new stream.
    marathon.push_event("health_status_changed_event", "{}");
    lp.expect_run(Trigger::Events, "an event on the reopened stream");
    lp.expect_no_run("the event's run");

    let log = lp.stop();
    assert_eq!(
        log.matches("Marathon's event stream ended").count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches("Marathon's event stream is back").count(),
        2,
        "{log}"
    );
}

#[test]
fn a_silent_stream_is_detected_by_the_read_timeout_and_reopened() {
    let marathon = marathon();
    // Thirty heartbeat periods: only a stall of the stand-in's thread that long, not a slow
    // machine, could make the timeout fire while heartbeats flow.
    let events = EventsConfig {
        stream_timeout: HEARTBEAT * 30,
        ..events_config()
    };
    let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events, NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);
    // Heartbeats keep the timeout from firing for twice its length: no reopening, no run.
    lp.expect_no_run_for(HEARTBEAT * 60, "heartbeats alone");
    assert_eq!(marathon.streams_opened(), 1);

    marathon.silence_streams();
    lp.expect_run(Trigger::StreamOpened, "the reopening after the silence");
    wait_for_streams(&marathon, 2, &lp.log);
    let log = lp.stop();
    assert!(
        log.contains("no event and no heartbeat for 1500ms (--sse-timeout)")
            || log.contains("no event and no heartbeat for 1.5s (--sse-timeout)"),
        "{log}"
    );
}

#[test]
fn a_stream_that_never_opens_falls_back_to_polling_at_the_interval() {
    let marathon = marathon();
    marathon.set_path_behaviour(EVENTS_PATH, Behaviour::Status(503));
    let interval = Duration::from_millis(300);
    let mut lp = Loop::start(
        fetch_config(vec![url(&marathon)]),
        events_config(),
        interval,
    );
    let mut runs = vec![lp.expect_run(Trigger::Startup, "the first run")];
    for n in 2..=4 {
        runs.push(lp.expect_run(Trigger::Polling, &format!("polling run {n}")));
    }
    for pair in runs.windows(2) {
        // Polling, not a tight loop: no run comes much before its interval.
        assert!(pair[1] - pair[0] >= interval / 2, "{:?}", pair[1] - pair[0]);
    }
    assert!(
        marathon.request_count(EVENTS_PATH) >= 2,
        "the stream is retried"
    );
    let failures = "cannot open Marathon's event stream";
    assert_eq!(lp.log.count(failures), 1, "said once:\n{}", lp.log.text());
    assert!(lp.log.text().contains("HTTP 503"), "{}", lp.log.text());
    assert!(
        lp.log.text().contains("polling every 300ms"),
        "{}",
        lp.log.text()
    );

    // Marathon recovers: the stream opens, says so once, and that is a run.
    marathon.clear_behaviours();
    lp.expect_run_among(
        Trigger::StreamOpened,
        Trigger::Polling,
        "the stream opening",
    );
    wait_for_streams(&marathon, 1, &lp.log);
    wait_until("the log says the stream is back", || {
        lp.log.count("event stream is back") == 1
    });
    let log = lp.stop();
    assert_eq!(log.matches(failures).count(), 1, "{log}");
}

#[test]
fn a_refused_source_passes_the_turn_to_the_next() {
    let marathon = marathon();
    let refused = Port::reserve();
    let sources = vec![MarathonSource::Url(refused.refused_url()), url(&marathon)];
    let mut lp = Loop::start(fetch_config(sources), events_config(), NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);
    marathon.push_event("app_terminated_event", "{}");
    lp.expect_run(Trigger::Events, "an event from the second source");
    let log = lp.stop();
    assert!(!log.contains("cannot open"), "{log}");
}

#[test]
fn credentials_are_sent_and_follow_a_redirect_to_the_leader_on_the_same_host() {
    let leader = marathon();
    leader.require_basic_auth("lb", "s3cret");
    let follower = FakeMarathon::start();
    follower.set_path_behaviour(EVENTS_PATH, Behaviour::Redirect(leader.url()));
    // Credentials follow a redirect only to a listed origin (issue 9).
    let mut fetch = fetch_config(vec![url(&follower), url(&leader)]);
    fetch.credentials = Some(Credentials {
        user: "lb".to_string(),
        password: "s3cret".to_string(),
    });
    let mut lp = Loop::start(fetch, events_config(), NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&leader, 1, &lp.log);
    let expected = format!("Basic {}", support::marathon::base64_encode(b"lb:s3cret"));
    for server in [&follower, &leader] {
        let request = server
            .requests()
            .into_iter()
            .find(|r| r.path == EVENTS_PATH);
        assert_eq!(
            request.and_then(|r| r.authorization).as_deref(),
            Some(expected.as_str())
        );
    }
    leader.push_event("deployment_success", "{}");
    lp.expect_run(Trigger::Events, "an event from the leader");
    let log = lp.stop();
    let leader_stream = format!("{}{EVENTS_PATH}", leader.url());
    assert!(
        log.contains(&format!("events at {leader_stream};")),
        "{log}"
    );
}

#[test]
fn refused_credentials_are_named_and_the_loop_polls() {
    let marathon = marathon();
    marathon.require_basic_auth("lb", "right");
    let mut fetch = fetch_config(vec![url(&marathon)]);
    fetch.credentials = Some(Credentials {
        user: "lb".to_string(),
        password: "wrong".to_string(),
    });
    let mut lp = Loop::start(fetch, events_config(), Duration::from_millis(200));
    lp.expect_run(Trigger::Startup, "the first run");
    lp.expect_run(Trigger::Polling, "a polling run");
    let log = lp.stop();
    assert!(log.contains("HTTP 401"), "{log}");
    assert!(log.contains("authentication failed"), "{log}");
}

#[test]
fn stopping_ends_the_loop_at_once_and_the_reader_soon_after() {
    let marathon = marathon();
    let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events_config(), NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);
    lp.stop();
    // The reader notices at its next read (a heartbeat here) and closes its connection.
    wait_until("the reader closed its stream", || {
        marathon.open_streams() == 0
    });
}

#[test]
fn a_snapshot_directory_has_no_event_stream() {
    let fetch = fetch_config(vec![MarathonSource::Snapshot(PathBuf::from("/srv/snap"))]);
    let (_stop, stop_rx) = mpsc::channel();
    let result = run_on_events_until(
        &fetch,
        &events_config(),
        NEVER,
        stop_rx,
        &mut Log::default(),
        |_| panic!("no run without a stream source"),
    );
    let error = format!("{:#}", result.unwrap_err());
    assert!(error.contains("needs a Marathon URL"), "{error}");
}

#[test]
fn a_flood_of_events_cannot_postpone_the_run_past_the_ceiling() {
    let marathon = marathon();
    // The quiet period never comes while the flood lasts; only the ceiling can start a run.
    let events = EventsConfig {
        debounce: Duration::from_secs(3600),
        debounce_max: Duration::from_millis(200),
        ..events_config()
    };
    let mut lp = Loop::start(fetch_config(vec![url(&marathon)]), events, NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    wait_for_streams(&marathon, 1, &lp.log);
    let deadline = Instant::now() + PATIENCE;
    let mut pushed = 0;
    loop {
        marathon.push_event("status_update_event", r#"{"taskStatus":"TASK_RUNNING"}"#);
        pushed += 1;
        if let Ok((_, trigger)) = lp.runs.try_recv() {
            assert_eq!(trigger, Trigger::Events);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no run during a flood of {pushed} events; log:\n{}",
            lp.log.text()
        );
    }
    lp.seen += 1;
    assert!(pushed > 1, "the flood was under way when the run started");
    lp.stop();
}

/// The binary in `--sse` mode: SIGTERM ends it promptly even while the reader is blocked on a
/// stream that sends nothing (no heartbeats, a 60 s read timeout).
#[test]
fn the_binary_stops_on_sigterm_while_the_stream_is_idle() {
    let marathon = FakeMarathon::start();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Sync::new()
        .marathon(marathon.url())
        .group("external")
        .args(["--sse", "--sse-timeout", "60s", "--dry-run"])
        .config(dir.path().join("haproxy.cfg"))
        .spawn();
    let opened = marathon.wait_for_streams_opened(1, PATIENCE);
    let (status, on_term, stderr) = child.stop_and_read_stderr();
    assert!(opened, "the binary never opened the stream:\n{stderr}");
    assert!(on_term, "still running after SIGTERM:\n{stderr}");
    assert!(status.success(), "{status}:\n{stderr}");
    assert!(stderr.contains("signal 15 received, stopping"), "{stderr}");
}

#[test]
fn only_one_redirect_is_followed() {
    let leader = marathon();
    let second = FakeMarathon::start();
    second.set_path_behaviour(EVENTS_PATH, Behaviour::Redirect(leader.url()));
    let first = FakeMarathon::start();
    first.set_path_behaviour(EVENTS_PATH, Behaviour::Redirect(second.url()));
    let mut lp = Loop::start(fetch_config(vec![url(&first)]), events_config(), NEVER);
    lp.expect_run(Trigger::Startup, "the first run");
    let log = lp.stop();
    assert!(log.contains("redirected more than once"), "{log}");
    assert_eq!(leader.request_count(EVENTS_PATH), 0);
}

/// One `/web` app whose task listens on `task_port`.
fn web_state(task_port: u16) -> (String, String) {
    let apps = r#"{"apps":[{"id":"/web","instances":1,"labels":{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http"},"networks":[{"mode":"host"}],"portDefinitions":[{"port":10000,"protocol":"tcp"}],"healthChecks":[]}]}"#;
    let tasks = format!(
        r#"{{"tasks":[{{"id":"web.1","appId":"/web","host":"127.0.0.1","ports":[{task_port}],"state":"TASK_RUNNING"}}]}}"#
    );
    (apps.to_string(), tasks)
}

/// The binary with `--sse --interval 1h` (the resync an hour away) against `marathon`,
/// writing into `dir`, with `extra` flags; reloads are counted in `dir/reloads.log`. Stopped
/// when dropped, should the test fail first.
struct SseBinary {
    child: Guarded,
    config: PathBuf,
    reloads: PathBuf,
}

impl SseBinary {
    fn start(marathon: &FakeMarathon, dir: &std::path::Path, extra: &[&str]) -> SseBinary {
        let config = dir.join("haproxy.cfg");
        let reloads = dir.join("reloads.log");
        let child = Sync::new()
            .marathon(marathon.url())
            .group("external")
            .args(["--sse", "--interval", "1h"])
            .args(["--dont-bind-http-https", "--skip-validation"])
            .args(extra)
            .config(&config)
            .reload_command(&format!("echo reload >> '{}'", reloads.display()))
            .spawn();
        SseBinary {
            child,
            config,
            reloads,
        }
    }

    fn reload_count(&self) -> usize {
        std::fs::read_to_string(&self.reloads)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    fn live(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap_or_default()
    }

    /// SIGTERM, a bounded wait, then whether it ended on SIGTERM and what it wrote to stderr.
    fn stop(mut self) -> (bool, String) {
        let (_, on_term, stderr) = self.child.stop_and_read_stderr();
        (on_term, stderr)
    }
}

/// The binary with `--sse` against the stand-in Marathon: an event makes it re-read Marathon and
/// apply the new state (one more reload), with the resync an hour away.
#[test]
fn the_binary_applies_a_change_when_an_event_says_so() {
    let marathon = marathon();
    let (apps, tasks) = web_state(31001);
    marathon.set_state(apps, tasks);
    let dir = tempfile::tempdir().unwrap();
    let binary = SseBinary::start(&marathon, dir.path(), &[]);
    let mut checks = Vec::new();
    let first = wait_for(|| binary.reload_count() == 1 && binary.live().contains(":31001"));
    checks.push(("the first run applied", first));
    if first {
        let opened = marathon.wait_for_streams_opened(1, PATIENCE);
        checks.push(("the stream opened", opened));
        let (apps, tasks) = web_state(31002);
        marathon.set_state(apps, tasks);
        marathon.push_event("status_update_event", r#"{"taskStatus":"TASK_RUNNING"}"#);
        let applied = wait_for(|| binary.reload_count() == 2 && binary.live().contains(":31002"));
        checks.push(("the event's run applied the new task", applied));
    }
    let live = binary.live();
    let (stopped, stderr) = binary.stop();
    for (what, held) in checks {
        assert!(held, "{what}; live config:\n{live}\nstderr:\n{stderr}");
    }
    assert!(stopped, "SIGTERM ended it:\n{stderr}");
}

/// `--min-reload-interval` holds an event's change back, and the loop comes back for it when
/// the interval is over — without another event, long before the hourly resync.
#[test]
fn a_change_deferred_by_the_reload_interval_is_applied_when_it_is_due() {
    let marathon = marathon();
    let (apps, tasks) = web_state(31001);
    marathon.set_state(apps, tasks);
    let dir = tempfile::tempdir().unwrap();
    let binary = SseBinary::start(&marathon, dir.path(), &["--min-reload-interval", "2s"]);
    let mut checks = Vec::new();
    let first = wait_for(|| binary.reload_count() == 1);
    checks.push(("the first run applied", first));
    if first && marathon.wait_for_streams_opened(1, PATIENCE) {
        let (apps, tasks) = web_state(31002);
        marathon.set_state(apps, tasks);
        marathon.push_event("status_update_event", r#"{"taskStatus":"TASK_RUNNING"}"#);
        let applied = wait_for(|| binary.reload_count() == 2 && binary.live().contains(":31002"));
        checks.push(("the deferred change was applied when due", applied));
    }
    let (stopped, stderr) = binary.stop();
    for (what, held) in checks {
        assert!(held, "{what}; stderr:\n{stderr}");
    }
    assert!(
        stderr.contains("change deferred until"),
        "the deferral was logged:\n{stderr}"
    );
    assert!(stopped, "SIGTERM ended it:\n{stderr}");
}

/// Waits until `condition` holds, checking every [`POLL`]; false after [`PATIENCE`].
fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

#[test]
fn with_the_stream_up_a_resync_still_runs_every_interval() {
    let marathon = marathon();
    let interval = Duration::from_millis(300);
    let mut lp = Loop::start(
        fetch_config(vec![url(&marathon)]),
        events_config(),
        interval,
    );
    lp.expect_run(Trigger::Startup, "the first run");
    lp.expect_run(Trigger::Resync, "the first resync");
    lp.expect_run(Trigger::Resync, "the second resync");
    assert_eq!(marathon.streams_opened(), 1, "the stream stayed open");
    lp.stop();
}
