//! When runs happen: the `--splay` wait before the first run, the `--interval` loop, and the
//! `--sse` loop that also runs on Marathon's events. Errors are logged and survived;
//! SIGTERM/SIGINT end a loop cleanly between runs (a run in progress always finishes), SIGHUP
//! asks for a run now and SIGUSR1 for a reload of HAProxy with the live file (as marathon-lb
//! does). Every run is a full, normal run: events and signals only decide when.

use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use std::hash::{BuildHasher, Hasher};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::{Handle, Signals};

use crate::config::{Config, EventsConfig, FetchConfig};
use crate::fetch::events::{self, StreamNews};

use crate::log;

/// What a run asks of the loop: `Some(wait)` when it left a change for later
/// (`--min-reload-interval`) and the next run should come within `wait`, sooner than the
/// interval or the next event would bring it.
pub type RunAgainWithin = Option<Duration>;

/// What a signal asks of a loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// SIGTERM or SIGINT: end the loop between runs.
    Stop(String),
    /// SIGHUP: a full run now (after the one in progress, if any).
    RunNow,
    /// SIGUSR1: reload HAProxy with the live file, running nothing else.
    ReloadLive,
}

/// `--splay` for a one-shot run: waits [`first_wait`] and counts the wait against the run's
/// deadline, so the run still ends within `--run-timeout`. A loop waits in [`run_every`] or
/// [`run_on_events`] instead, where signals are already handled, and its runs keep their whole
/// deadline.
pub fn splay(config: &mut Config) {
    if config.interval.is_some() || config.events.is_some() {
        return;
    }
    let wait = first_wait(config);
    if !wait.is_zero() {
        note_splay(wait);
        std::thread::sleep(wait);
        config.run_deadline = config.run_deadline.saturating_sub(wait);
    }
}

/// The random wait up to `config.splay` before the first run; none with `--dry-run`, where a
/// person is waiting.
pub fn first_wait(config: &Config) -> Duration {
    if config.splay.is_zero() || config.apply.dry_run {
        return Duration::ZERO;
    }
    config.splay.mul_f64(random_fraction())
}

/// Said (at debug) once the wait's signals are handled, so a signal sent on seeing it is obeyed.
fn note_splay(wait: Duration) {
    if !wait.is_zero() {
        let message = format!("waiting {} (--splay) before the first run", humanize(wait));
        log::emit(log::Level::Debug, &message, &[]);
    }
}

/// A number in [0, 1) from the OS's randomness: std seeds each `RandomState` from it, which
/// is all a splay needs (no crate, no file to open).
fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Calls `run` after `first_wait` and then every `interval` (sooner when a run asks, or at once
/// on SIGHUP) until SIGTERM or SIGINT; on SIGUSR1 calls `reload` and keeps the schedule.
pub fn run_every(
    first_wait: Duration,
    interval: Duration,
    mut run: impl FnMut() -> Result<RunAgainWithin>,
    mut reload: impl FnMut() -> Result<()>,
) -> Result<()> {
    let (control_tx, control_rx) = mpsc::channel();
    let signals = SignalWatcher::start(control_tx)?;
    note_splay(first_wait);
    let mut next_run = Instant::now() + first_wait;
    let result = loop {
        if Instant::now() >= next_run {
            let started = Instant::now();
            let mut wait = interval;
            match run() {
                Ok(Some(again)) => wait = wait.min(again),
                Ok(None) => {}
                Err(error) => {
                    let message = format!("{error:#} (next try in {})", humanize(interval));
                    log::emit(crate::exclusion::error_level(&error), &message, &[]);
                }
            }
            next_run = started + wait;
        }
        let wait = next_run.saturating_duration_since(Instant::now());
        match control_rx.recv_timeout(wait) {
            Ok(Control::Stop(reason)) => {
                let message = format!("{reason}, stopping");
                log::emit(log::Level::Info, &message, &[]);
                break Ok(());
            }
            Ok(Control::RunNow) => {
                log::emit(log::Level::Info, "SIGHUP received: running now", &[]);
                next_run = Instant::now();
            }
            Ok(Control::ReloadLive) => reload_live(&mut reload, &mut std::io::stderr()),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("the signal watcher stopped unexpectedly"))
            }
        }
    };
    signals.close();
    result
}

/// SIGUSR1: the reload, said in the log either way.
fn reload_live(reload: &mut dyn FnMut() -> Result<()>, out: &mut dyn Write) {
    log::write(
        out,
        log::Level::Info,
        "SIGUSR1 received: reloading HAProxy with the live configuration",
        &[],
    );
    if let Err(error) = reload() {
        let message = format!("{error:#}");
        log::write(out, log::Level::Error, &message, &[]);
    }
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
/// until SIGTERM or SIGINT; SIGHUP runs at once, SIGUSR1 calls `reload`. Log lines go to
/// stderr.
pub fn run_on_events(
    fetch: &FetchConfig,
    events: &EventsConfig,
    interval: Duration,
    first_wait: Duration,
    run: impl FnMut(Trigger) -> Result<RunAgainWithin>,
    reload: impl FnMut() -> Result<()>,
) -> Result<()> {
    let (control_tx, control_rx) = mpsc::channel();
    let signals = SignalWatcher::start(control_tx)?;
    note_splay(first_wait);
    let result = serve_events(
        fetch,
        events,
        interval,
        first_wait,
        control_rx,
        &mut std::io::stderr(),
        run,
        reload,
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
    let (control_tx, control) = mpsc::channel();
    std::thread::Builder::new()
        .name("stop-reasons".to_string())
        .spawn(move || {
            if let Ok(reason) = stop.recv() {
                control_tx.send(Control::Stop(reason)).ok();
            }
        })
        .context("starting the stop forwarder thread")?;
    serve_events(
        fetch,
        events,
        interval,
        Duration::ZERO,
        control,
        log,
        run,
        || Ok(()),
    )
}

/// [`run_on_events_until`] taking every [`Control`], not only stop reasons.
#[allow(clippy::too_many_arguments)]
fn serve_events(
    fetch: &FetchConfig,
    events: &EventsConfig,
    interval: Duration,
    first_wait: Duration,
    control: mpsc::Receiver<Control>,
    log: &mut dyn Write,
    run: impl FnMut(Trigger) -> Result<RunAgainWithin>,
    reload: impl FnMut() -> Result<()>,
) -> Result<()> {
    let (wake_tx, wakes) = mpsc::channel();
    let reader_tx = wake_tx.clone();
    let _reader = events::spawn_reader(fetch, events, move |news| {
        reader_tx.send(Wake::Stream(news)).is_ok()
    })?;
    let control_tx = wake_tx.clone();
    std::thread::Builder::new()
        .name("stop-forwarder".to_string())
        .spawn(move || {
            for asked in control {
                let stop = matches!(asked, Control::Stop(_));
                if control_tx.send(Wake::Control(asked)).is_err() || stop {
                    break;
                }
            }
        })
        .context("starting the stop forwarder thread")?;
    let mut event_loop = EventLoop {
        settings: events.clone(),
        interval,
        log,
        run,
        reload,
        stream: StreamState::Starting,
        burst: None,
        next_resync: Instant::now() + interval,
    };
    // `wake_tx` stays alive in this frame, so `wakes` never reports a disconnection.
    let result = event_loop.serve(&wakes, fetch.request_timeout, first_wait);
    drop(wake_tx);
    result
}

/// What wakes the event loop up.
enum Wake {
    Stream(StreamNews),
    Control(Control),
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

struct EventLoop<'a, R, L> {
    settings: EventsConfig,
    interval: Duration,
    log: &'a mut dyn Write,
    run: R,
    reload: L,
    stream: StreamState,
    burst: Option<Burst>,
    next_resync: Instant,
}

impl<R, L> EventLoop<'_, R, L>
where
    R: FnMut(Trigger) -> Result<RunAgainWithin>,
    L: FnMut() -> Result<()>,
{
    /// The first run waits for the stream's first word (at most `startup_wait`) and for the
    /// splay (`first_wait`), whichever is later; SIGHUP cuts both short.
    fn serve(
        &mut self,
        wakes: &mpsc::Receiver<Wake>,
        startup_wait: Duration,
        first_wait: Duration,
    ) -> Result<()> {
        let started = Instant::now();
        let (stream_deadline, splay_until) = (started + startup_wait, started + first_wait);
        loop {
            let now = Instant::now();
            // Past the deadline with the stream still opening: run now, and again once it opens.
            let for_stream = self.stream == StreamState::Starting && now < stream_deadline;
            if !for_stream && now >= splay_until {
                break;
            }
            let until = if for_stream {
                stream_deadline.max(splay_until)
            } else {
                splay_until
            };
            match wakes.recv_timeout(until - now) {
                Ok(Wake::Control(Control::Stop(reason))) => return self.stopped(&reason),
                Ok(Wake::Control(Control::RunNow)) => {
                    self.say(log::Level::Info, "SIGHUP received: running now");
                    break;
                }
                Ok(Wake::Control(asked)) => self.obey(asked),
                Ok(Wake::Stream(news)) => self.note(news),
                Err(_) => {}
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
                Ok(Wake::Control(Control::Stop(reason))) => return self.stopped(&reason),
                Ok(Wake::Control(asked)) => self.obey(asked),
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
                    crate::exclusion::error_level(&error),
                    &format!("{error:#} (next try on the next event, or in {next})"),
                );
            }
        }
    }

    /// SIGHUP makes the next run due now (a resync, as far as the record goes); SIGUSR1
    /// reloads at once.
    fn obey(&mut self, asked: Control) {
        match asked {
            Control::RunNow => {
                self.say(log::Level::Info, "SIGHUP received: running now");
                self.next_resync = Instant::now();
            }
            Control::ReloadLive => reload_live(&mut self.reload, self.log),
            Control::Stop(_) => {}
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

/// A thread turning SIGTERM and SIGINT (stop), SIGHUP (run now) and SIGUSR1 (reload) into
/// messages on a channel.
struct SignalWatcher {
    handle: Handle,
    thread: std::thread::JoinHandle<()>,
}

impl SignalWatcher {
    fn start(control: mpsc::Sender<Control>) -> Result<SignalWatcher> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
            .context("installing signal handlers")?;
        let handle = signals.handle();
        let thread = std::thread::spawn(move || {
            for signal in signals.forever() {
                let asked = match signal {
                    SIGHUP => Control::RunNow,
                    SIGUSR1 => Control::ReloadLive,
                    _ => Control::Stop(format!("signal {signal} received")),
                };
                let stop = matches!(asked, Control::Stop(_));
                if control.send(asked).is_err() || stop {
                    break;
                }
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
