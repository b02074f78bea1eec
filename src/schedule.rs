//! When runs happen in a long-running process: the `--interval` loop, and the `--sse` loop that
//! also runs on Marathon's events. Errors are logged and survived; SIGTERM/SIGINT end the loop
//! cleanly between runs (a run in progress always finishes). Every run is a full, normal run:
//! events only decide when.

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use crate::config::{EventsConfig, FetchConfig};
use crate::fetch::events::{self, StreamNews};

use crate::log;

/// What a run asks of the loop: `Some(wait)` when it left a change for later
/// (`--min-reload-interval`) and the next run should come within `wait`, sooner than the
/// interval or the next event would bring it.
pub type RunAgainWithin = Option<Duration>;

/// Calls `run` now and then every `interval` (sooner when a run asks) until SIGTERM or SIGINT.
pub fn run_every(
    interval: Duration,
    mut run: impl FnMut() -> Result<RunAgainWithin>,
) -> Result<()> {
    let (stop_tx, stop_rx) = mpsc::channel();
    let signals = SignalWatcher::start(stop_tx)?;
    let result = loop {
        let started = Instant::now();
        let mut wait = interval;
        match run() {
            Ok(Some(again)) => wait = wait.min(again),
            Ok(None) => {}
            Err(error) => {
                let message = format!("{error:#} (next try in {})", humanize(interval));
                log::emit(log::Level::Error, &message, &[]);
            }
        }
        let wait = wait.saturating_sub(started.elapsed());
        match stop_rx.recv_timeout(wait) {
            Ok(reason) => {
                let message = format!("{reason}, stopping");
                log::emit(log::Level::Info, &message, &[]);
                break Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("the signal watcher stopped unexpectedly"))
            }
        }
    };
    signals.close();
    result
}

/// Why the `--sse` loop started a run (for logs and metrics; every run is the same full run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The first run.
    Startup,
    /// A burst of relevant events.
    Events,
    /// The event stream opened again: events may have been missed while it was not.
    StreamOpened,
    /// `interval` passed with the stream up: the safety-net resync.
    Resync,
    /// `interval` passed with the stream down: polling in its place.
    Polling,
}

impl Trigger {
    /// Whether the event stream was up when this run started: `None` for the first run, which
    /// comes before or without the stream's first word.
    pub fn event_stream_up(self) -> Option<bool> {
        match self {
            Trigger::Startup => None,
            Trigger::Polling => Some(false),
            Trigger::Events | Trigger::StreamOpened | Trigger::Resync => Some(true),
        }
    }
}

/// `--sse`: calls `run` once the event stream has answered (or failed to), then after every
/// burst of relevant events, on every reopening of the stream, and at least every `interval`,
/// until SIGTERM or SIGINT. Log lines go to stderr.
pub fn run_on_events(
    fetch: &FetchConfig,
    events: &EventsConfig,
    interval: Duration,
    run: impl FnMut(Trigger) -> Result<RunAgainWithin>,
) -> Result<()> {
    let (stop_tx, stop_rx) = mpsc::channel();
    let signals = SignalWatcher::start(stop_tx)?;
    let result = run_on_events_until(
        fetch,
        events,
        interval,
        stop_rx,
        &mut std::io::stderr(),
        run,
    );
    signals.close();
    result
}

/// [`run_on_events`] without the signal handlers: the loop ends, between runs, when a reason
/// arrives on `stop` (the signal watcher sends `"signal 15 received"`). Log lines go to `log`.
///
/// - Startup: the first run waits for the stream's first word (open or failed), at most
///   `fetch.request_timeout`, so it covers everything before the stream opened and the opening
///   does not cause a second run.
/// - Debounce: a run starts `events.debounce` after the last event of a burst, but no later than
///   `events.debounce_max` after its first; events during a run make one more run after it.
/// - Every reopening of the stream is a run (events may have been missed meanwhile), and
///   `interval` after a run with nothing new comes a resync run: the safety net while the
///   stream is up, polling while it is down.
pub fn run_on_events_until(
    fetch: &FetchConfig,
    events: &EventsConfig,
    interval: Duration,
    stop: mpsc::Receiver<String>,
    log: &mut dyn Write,
    run: impl FnMut(Trigger) -> Result<RunAgainWithin>,
) -> Result<()> {
    let (wake_tx, wakes) = mpsc::channel();
    let reader_tx = wake_tx.clone();
    let _reader = events::spawn_reader(fetch, events, move |news| {
        reader_tx.send(Wake::Stream(news)).is_ok()
    })?;
    let stop_tx = wake_tx.clone();
    std::thread::Builder::new()
        .name("stop-forwarder".to_string())
        .spawn(move || {
            if let Ok(reason) = stop.recv() {
                stop_tx.send(Wake::Stop(reason)).ok();
            }
        })
        .context("starting the stop forwarder thread")?;
    let mut event_loop = EventLoop {
        settings: events.clone(),
        interval,
        log,
        run,
        stream: StreamState::Starting,
        burst: None,
        next_resync: Instant::now() + interval,
    };
    // `wake_tx` stays alive in this frame, so `wakes` never reports a disconnection.
    let result = event_loop.serve(&wakes, fetch.request_timeout);
    drop(wake_tx);
    result
}

/// What wakes the event loop up.
enum Wake {
    Stream(StreamNews),
    Stop(String),
}

/// What the log last said about the stream, so each change is said once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Starting,
    Up,
    Down,
}

/// A run asked for by news, not yet started.
#[derive(Debug, Clone, Copy)]
struct Burst {
    first: Instant,
    last: Instant,
    /// The stream reopened during the burst (which then says more than its events).
    reopened: bool,
}

struct EventLoop<'a, R> {
    settings: EventsConfig,
    interval: Duration,
    log: &'a mut dyn Write,
    run: R,
    stream: StreamState,
    burst: Option<Burst>,
    next_resync: Instant,
}

impl<R: FnMut(Trigger) -> Result<RunAgainWithin>> EventLoop<'_, R> {
    fn serve(&mut self, wakes: &mpsc::Receiver<Wake>, startup_wait: Duration) -> Result<()> {
        let startup_deadline = Instant::now() + startup_wait;
        while self.stream == StreamState::Starting {
            let left = startup_deadline.saturating_duration_since(Instant::now());
            match wakes.recv_timeout(left) {
                Ok(Wake::Stop(reason)) => return self.stopped(&reason),
                Ok(Wake::Stream(news)) => self.note(news),
                Err(_) => break, // Still opening: run now, and again once it opens.
            }
        }
        self.run_now(Trigger::Startup);
        loop {
            // Checked before waiting, so a flood of events cannot postpone a due run.
            let due = self.due();
            let now = Instant::now();
            if now >= due {
                let trigger = match self.burst {
                    Some(burst) if burst.reopened => Trigger::StreamOpened,
                    Some(_) => Trigger::Events,
                    None if self.stream == StreamState::Up => Trigger::Resync,
                    None => Trigger::Polling,
                };
                self.run_now(trigger);
                continue;
            }
            match wakes.recv_timeout(due - now) {
                Ok(Wake::Stop(reason)) => return self.stopped(&reason),
                Ok(Wake::Stream(news)) => self.note(news),
                Err(_) => {} // Due now; the next turn runs.
            }
        }
    }

    /// When the next run starts if nothing else arrives.
    fn due(&self) -> Instant {
        match self.burst {
            Some(burst) => (burst.last + self.settings.debounce)
                .min(burst.first + self.settings.debounce_max)
                .min(self.next_resync),
            None => self.next_resync,
        }
    }

    fn note(&mut self, news: StreamNews) {
        match news {
            StreamNews::Changed { .. } => self.ask_for_run(false),
            StreamNews::Connected { url } => {
                match self.stream {
                    StreamState::Starting => self.say(
                        log::Level::Info,
                        &format!(
                            "listening to Marathon's events at {url}; full resync every {}",
                            humanize(self.interval)
                        ),
                    ),
                    StreamState::Down => self.say(
                        log::Level::Warn,
                        &format!(
                            "Marathon's event stream is back at {url}; reacting to events again"
                        ),
                    ),
                    StreamState::Up => {}
                }
                self.stream = StreamState::Up;
                self.ask_for_run(true);
            }
            StreamNews::Lost { reason, retry_in } => {
                let retry = if retry_in.is_zero() {
                    "reopening it now".to_string()
                } else {
                    format!("retrying in {}", humanize(retry_in))
                };
                let interval = humanize(self.interval);
                match self.stream {
                    StreamState::Starting => self.say(
                        log::Level::Warn,
                        &format!(
                            "cannot open Marathon's event stream ({reason}); polling every \
                         {interval} until it opens, {retry}"
                        ),
                    ),
                    StreamState::Up => self.say(
                        log::Level::Warn,
                        &format!(
                            "Marathon's event stream ended ({reason}); {retry}, polling every \
                         {interval} meanwhile"
                        ),
                    ),
                    StreamState::Down => {}
                }
                self.stream = StreamState::Down;
            }
        }
    }

    fn ask_for_run(&mut self, reopened: bool) {
        let now = Instant::now();
        self.burst = Some(match self.burst {
            Some(burst) => Burst {
                last: now,
                reopened: burst.reopened || reopened,
                ..burst
            },
            None => Burst {
                first: now,
                last: now,
                reopened,
            },
        });
    }

    fn run_now(&mut self, trigger: Trigger) {
        let started = Instant::now();
        self.burst = None;
        self.next_resync = started + self.interval;
        match (self.run)(trigger) {
            Ok(Some(again)) => self.next_resync = self.next_resync.min(Instant::now() + again),
            Ok(None) => {}
            Err(error) => {
                let next = humanize(self.interval);
                self.say(
                    log::Level::Error,
                    &format!("{error:#} (next try on the next event, or in {next})"),
                );
            }
        }
    }

    fn stopped(&mut self, reason: &str) -> Result<()> {
        self.say(log::Level::Info, &format!("{reason}, stopping"));
        Ok(())
    }

    fn say(&mut self, level: log::Level, line: &str) {
        log::write(self.log, level, line, &[]);
    }
}

/// A thread turning SIGTERM and SIGINT into a message on a channel.
struct SignalWatcher {
    handle: Handle,
    thread: std::thread::JoinHandle<()>,
}

impl SignalWatcher {
    fn start(stop: mpsc::Sender<String>) -> Result<SignalWatcher> {
        let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            if let Some(signal) = signals.forever().next() {
                stop.send(format!("signal {signal} received")).ok();
            }
        });
        Ok(SignalWatcher { handle, thread })
    }

    fn close(self) {
        self.handle.close();
        self.thread.join().ok();
    }
}

fn humanize(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis % 1000 != 0 {
        format!("{millis}ms")
    } else if millis >= 3_600_000 && millis % 3_600_000 == 0 {
        format!("{}h", millis / 3_600_000)
    } else if millis >= 60_000 && millis % 60_000 == 0 {
        format!("{}m", millis / 60_000)
    } else {
        format!("{}s", duration.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_operator_wrote_them() {
        let cases = [
            (300_000, "5m"),
            (5_000, "5s"),
            (90_000, "90s"),
            (250, "250ms"),
        ];
        for (millis, text) in cases {
            assert_eq!(humanize(Duration::from_millis(millis)), text);
        }
    }
}
