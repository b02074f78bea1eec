//! The `--interval` loop: one run per tick, errors logged and survived, SIGTERM/SIGINT ending
//! the loop cleanly between runs (a run in progress always finishes).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::log;

/// Calls `run` now and then every `interval` until SIGTERM or SIGINT arrives.
pub fn run_every(interval: Duration, mut run: impl FnMut() -> Result<()>) -> Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let handle = signals.handle();
    let (stop_tx, stop_rx) = mpsc::channel();
    let watcher = std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            stop_tx.send(signal).ok();
        }
    });
    let result = loop {
        let started = Instant::now();
        if let Err(error) = run() {
            let message = format!("{error:#} (next try in {})", humanize(interval));
            log::emit(log::Level::Error, &message, &[]);
        }
        let wait = interval.saturating_sub(started.elapsed());
        match stop_rx.recv_timeout(wait) {
            Ok(signal) => {
                let message = format!("signal {signal} received, stopping");
                log::emit(log::Level::Info, &message, &[("signal", signal.into())]);
                break Ok(());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err(anyhow::anyhow!("the signal watcher stopped unexpectedly"))
            }
        }
    };
    handle.close();
    watcher.join().ok();
    result
}

fn humanize(duration: Duration) -> String {
    if duration.as_millis() % 1000 == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}
