//! Tiny HTTP backends for tests: each answers every request with its own name, so a test can see
//! where HAProxy routed it; one that holds its first request until the test releases it (a
//! request in flight). Plus a bounded HTTP GET over a plain `TcpStream`, and a bounded wait for
//! traffic through HAProxy to reach a given backend.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Longest any socket operation of these helpers may block.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// An HTTP server on `127.0.0.1:<port>` answering `200 <name>`; stopped and joined on drop.
pub struct Backend {
    pub name: String,
    pub port: u16,
    served: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a backend on 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let served = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (name, served, stopping) = (name.to_string(), served.clone(), stopping.clone());
            thread::spawn(move || {
                for stream in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        let _ = answer(stream, &name, &served);
                    }
                }
            })
        };
        Backend {
            name: name.to_string(),
            port,
            served,
            stopping,
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:<port>`, for a `server` line.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests answered so far: counted once a request is read, before its answer is sent,
    /// so a client that has its answer is already counted (counted after, the last one raced
    /// the test reading the count).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wakes the blocking accept so the thread sees the flag.
        let _ =
            TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], self.port)), IO_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request head (bounded in size and time) and answers with `name`.
fn answer(mut stream: TcpStream, name: &str, served: &AtomicUsize) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&chunk[..read]);
    }
    served.fetch_add(1, Ordering::SeqCst);
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        name.len(),
        name
    )?;
    stream.flush()?;
    let _ = stream.shutdown(Shutdown::Write);
    Ok(())
}

/// A plain `GET path` to `127.0.0.1:port`, every step bounded; returns (status code, body).
pub fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    http_get_within(port, path, IO_TIMEOUT)
}

/// [`http_get`] waiting up to `answer_within` for the answer (a request a backend holds).
pub fn http_get_within(
    port: u16,
    path: &str,
    answer_within: Duration,
) -> io::Result<(u16, String)> {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT)?;
    // `write!` sends the request in pieces; without this, Nagle holds the later pieces until
    // HAProxy's delayed ACK (40 ms per request).
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(answer_within))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: test.localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(1024 * 1024).read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of headers"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line in {head:?}"),
            )
        })?;
    Ok((status, body.to_string()))
}

/// Waits (bounded) until a request through HAProxy on `port` is answered 200 by the backend
/// named `name`: after a reload the old worker may still serve a request or two.
pub fn traffic_reaches(port: u16, name: &str) -> bool {
    super::haproxy::wait_for(
        Duration::from_secs(15),
        || matches!(http_get(port, "/"), Ok((200, body)) if body == name),
    )
}

/// A backend that holds its first request until released, for a request in flight.
pub struct SlowBackend {
    pub port: u16,
    /// Told when the held request has arrived.
    pub accepted: mpsc::Receiver<()>,
    /// Answers the held request.
    pub release: mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl SlowBackend {
    pub fn start() -> SlowBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted_tx, accepted) = mpsc::channel();
        let (release, release_rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            // Health checks connect and close at once; the first request with a head is ours.
            for stream in listener.incoming().take(100) {
                let Ok(mut stream) = stream else { continue };
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut head = [0u8; 4096];
                if !matches!(stream.read(&mut head), Ok(n) if n > 0) {
                    continue;
                }
                let _ = accepted_tx.send(());
                let _ = release_rx.recv_timeout(Duration::from_secs(20));
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nslow",
                );
                return;
            }
        });
        SlowBackend {
            port,
            accepted,
            release,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowBackend {
    fn drop(&mut self) {
        let _ = self.release.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
