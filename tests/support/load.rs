//! A bounded HTTP load generator for reload tests: a few client threads, each sending one
//! keep-alive-free `GET` at a time through HAProxy until told to stop (or a hard time limit),
//! counting answers, non-200 statuses and failures.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::backend::http_get;

/// Pause between two requests of one client: keeps the rate (and the sockets left in
/// TIME_WAIT) bounded on a small shared machine. Pacing, not synchronisation.
const PACE: Duration = Duration::from_millis(2);

/// Failures described in full; the rest are only counted.
const DESCRIBED_FAILURES: usize = 20;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub requests: usize,
    /// Transport errors: refused, reset, timed out, cut short.
    pub failures: usize,
    /// Answers other than 200 (a 503 from an empty backend, a 502 from a dead server...).
    pub non_200: usize,
    /// 200 answers per body (the backend's name).
    pub by_body: BTreeMap<String, usize>,
    /// The first failures, with when they happened.
    pub described: Vec<String>,
    pub duration: Duration,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.non_200 += other.non_200;
        for (body, count) in other.by_body {
            *self.by_body.entry(body).or_default() += count;
        }
        for line in other.described {
            if self.described.len() < DESCRIBED_FAILURES {
                self.described.push(line);
            }
        }
    }
}

/// Clients running until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Tally>>,
    started: Instant,
}

impl Load {
    /// Starts `clients` threads sending `GET /` to `127.0.0.1:port`; each stops by itself after
    /// `limit` even if never told to.
    pub fn start(port: u16, clients: usize, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let clients = (0..clients)
            .map(|client| {
                let stop = stop.clone();
                thread::spawn(move || run_client(client, port, &stop, started, limit))
            })
            .collect();
        Load {
            stop,
            clients,
            started,
        }
    }

    /// Stops every client and adds up what they saw.
    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = Tally::default();
        for client in self.clients {
            total.merge(client.join().expect("a load client panicked"));
        }
        total.duration = self.started.elapsed();
        total
    }
}

fn run_client(
    client: usize,
    port: u16,
    stop: &AtomicBool,
    started: Instant,
    limit: Duration,
) -> Tally {
    let mut tally = Tally::default();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < limit {
        tally.requests += 1;
        let at = started.elapsed();
        let problem = match http_get(port, "/") {
            Ok((200, body)) => {
                *tally.by_body.entry(body).or_default() += 1;
                None
            }
            Ok((status, body)) => {
                tally.non_200 += 1;
                Some(format!("status {status}: {}", body.trim()))
            }
            Err(e) => {
                tally.failures += 1;
                Some(format!("{e}"))
            }
        };
        if let Some(problem) = problem {
            if tally.described.len() < DESCRIBED_FAILURES {
                tally
                    .described
                    .push(format!("client {client} at {at:.3?}: {problem}"));
            }
        }
        thread::sleep(PACE);
    }
    tally
}
