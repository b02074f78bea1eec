//! A bounded HTTP load generator for reload tests: a few client threads, each sending one `GET`
//! at a time through HAProxy until told to stop (or a hard time limit), counting answers,
//! non-200 statuses and failures. Most clients open a connection per request; keep-alive
//! clients reuse theirs until HAProxy answers `Connection: close`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Connections the keep-alive clients opened (the first, then one after each close).
    pub keep_alive_connections: usize,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.failures += other.failures;
        self.non_200 += other.non_200;
        self.keep_alive_connections += other.keep_alive_connections;
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
    /// Connections each keep-alive client has opened so far, as they happen.
    opened: Arc<Vec<AtomicUsize>>,
}

impl Load {
    /// Starts `clients` threads sending `GET /` to `127.0.0.1:port` on a new connection each
    /// time, and `keep_alive` threads reusing theirs; each stops by itself after `limit` even
    /// if never told to.
    pub fn start(port: u16, clients: usize, keep_alive: usize, limit: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let opened: Arc<Vec<AtomicUsize>> =
            Arc::new((0..keep_alive).map(|_| AtomicUsize::new(0)).collect());
        let clients = (0..clients + keep_alive)
            .map(|client| {
                let stop = stop.clone();
                let opened = opened.clone();
                let keep_alive_slot = client.checked_sub(clients);
                thread::spawn(move || {
                    let counter = keep_alive_slot.map(|slot| &opened[slot]);
                    run_client(client, port, counter, &stop, started, limit)
                })
            })
            .collect();
        Load {
            stop,
            clients,
            started,
            opened,
        }
    }

    /// How many connections each keep-alive client has opened so far (one per worker it was
    /// moved to, the first included).
    pub fn keep_alive_opened(&self) -> Vec<usize> {
        self.opened
            .iter()
            .map(|count| count.load(Ordering::SeqCst))
            .collect()
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

/// `keep_alive`: this client reuses its connection and counts each one it opens there.
fn run_client(
    client: usize,
    port: u16,
    keep_alive: Option<&AtomicUsize>,
    stop: &AtomicBool,
    started: Instant,
    limit: Duration,
) -> Tally {
    let mut tally = Tally::default();
    let mut connection: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::SeqCst) && started.elapsed() < limit {
        tally.requests += 1;
        let at = started.elapsed();
        let answer = if let Some(opened) = keep_alive {
            if connection.is_none() {
                tally.keep_alive_connections += 1;
                opened.fetch_add(1, Ordering::SeqCst);
            }
            keep_alive_get(port, &mut connection)
        } else {
            http_get(port, "/")
        };
        let problem = match answer {
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

/// One `GET /` on the kept connection (opened first if there is none); the connection is
/// dropped when the answer says `Connection: close` or anything fails.
fn keep_alive_get(port: u16, kept: &mut Option<BufReader<TcpStream>>) -> io::Result<(u16, String)> {
    let result = exchange_on(port, kept);
    match result {
        Ok((status, body, close)) => {
            if close {
                *kept = None;
            }
            Ok((status, body))
        }
        Err(e) => {
            *kept = None;
            Err(e)
        }
    }
}

/// Sends the request and reads one answer (status, body, whether the server closes).
fn exchange_on(
    port: u16,
    kept: &mut Option<BufReader<TcpStream>>,
) -> io::Result<(u16, String, bool)> {
    if kept.is_none() {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(3))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.set_write_timeout(Some(Duration::from_secs(3)))?;
        *kept = Some(BufReader::new(stream));
    }
    let reader = kept.as_mut().expect("connected above");
    reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nHost: test.localhost\r\n\r\n")?;
    let mut status_line = String::new();
    if reader.read_line(&mut status_line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the kept connection was closed before an answer",
        ));
    }
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, status_line.clone()))?;
    let (mut length, mut close) = (0usize, false);
    for _ in 0..100 {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        } else if header.starts_with("connection:") && header.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0; length.min(1024 * 1024)];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}
