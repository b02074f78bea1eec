//! Our shipped replacements for marathon-lb's HSTS, proxypass and revproxy sections, proven on
//! a real HAProxy: rendered by the library, served by `haproxy -db` on 127.0.0.1 (started and
//! killed by this test, by PID) in front of a tiny HTTP backend that echoes what it received.

mod support {
    pub mod ports;
}

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haproxy_marathon_sync::config::Config;
use haproxy_marathon_sync::model::{Backend, Model, Service};
use haproxy_marathon_sync::render::{self, Templates};

/// The HAProxy the test runs; missing, the test fails (scripts/test installs it).
fn haproxy_binary() -> PathBuf {
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .expect("haproxy is not installed (scripts/test installs it)")
}

/// A port reserved for the rest of the test process (see tests/support/ports.rs).
fn free_port() -> u16 {
    support::ports::Port::reserve().leak()
}

/// Kills the HAProxy this test started (by its PID) however the test ends.
struct HaproxyGuard(Child);

impl Drop for HaproxyGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A backend answering `count` requests, one connection each: the body is the request head it
/// received; `Location` is absolute for paths containing `abs`, else relative.
fn spawn_backend(count: usize) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let head = read_head(&mut stream);
            let location = if head.lines().next().unwrap_or("").contains("abs") {
                "http://app.test:8080/abs/elsewhere"
            } else {
                "/relative/elsewhere"
            };
            let response = format!(
                "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                head.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    port
}

/// Reads up to the blank line ending an HTTP head (bounded by size and the read timeout).
fn read_head(stream: &mut TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut byte = [0u8; 1];
    while buffer.len() < 64 * 1024 && !buffer.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => buffer.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

fn service(service_port: u16, backend_port: u16) -> Service {
    let mut service = Service {
        backends: vec![Backend {
            host: "127.0.0.1".into(),
            ip: "127.0.0.1".into(),
            port: backend_port.into(),
            draining: false,
        }],
        hostname: Some("app.test".to_string()),
        use_hsts: true,
        bind_addr: "127.0.0.1".into(),
        groups: vec!["external".to_string()],
        ..Service::new("/shop", service_port.into())
    };
    let extras = service.extras_mut();
    extras.proxypath = Some("/api".to_string());
    extras.revproxypath = Some("/root".to_string());
    service
}

/// Renders the service with our shipped sections; only the head and the :9091 frontend are
/// swapped for test ones, so nothing binds outside 127.0.0.1 or touches system paths.
fn render_config(dir: &Path, service_port: u16, backend_port: u16) -> PathBuf {
    let config_path = dir.join("haproxy.cfg");
    let mut config = Config::new(Vec::new(), config_path.clone()).render;
    config.bind_http_https = false;
    config.template_env.insert(
        "HAPROXY_HEAD".to_string(),
        "global\\n  maxconn 100\\ndefaults\\n  timeout connect 2s\\n  timeout client 5s\\n  timeout server 5s\\n"
            .to_string(),
    );
    config.template_env.insert(
        "HAPROXY_HTTP_FRONTEND_APPID_HEAD".to_string(),
        format!(
            "\\nfrontend marathon_http_appid_in\\n  bind 127.0.0.1:{}\\n  mode http\\n",
            free_port()
        ),
    );
    let model = Model {
        services: vec![service(service_port, backend_port)],
    };
    let templates = Templates::load(&config).unwrap();
    let rendered = render::render(&model, &templates, &config).unwrap();
    std::fs::write(&config_path, &rendered.config).unwrap();
    config_path
}

/// Polls until HAProxy accepts connections on `port`, within a deadline.
fn wait_until_listening(port: u16, haproxy: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Some(status) = haproxy.try_wait().unwrap() {
            panic!("haproxy exited before listening: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "haproxy did not listen on {port} within 10 s"
        );
        std::thread::yield_now();
    }
}

fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: client.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next().unwrap_or("");
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn hsts_proxypass_and_revproxy_defaults_work_on_real_haproxy() {
    let haproxy = haproxy_binary();
    let dir = tempfile::tempdir().unwrap();
    // Three requests reach the backend; the readiness poll's connections carry no request, so
    // HAProxy never forwards them.
    let backend_port = spawn_backend(3);
    let service_port = free_port();
    let config_path = render_config(dir.path(), service_port, backend_port);

    let check = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "haproxy -c rejected:\n{}\n{}",
        std::fs::read_to_string(&config_path).unwrap(),
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(&haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = HaproxyGuard(child);
    wait_until_listening(service_port, &mut guard.0);

    // proxypass: the /api prefix is stripped (query kept) and Host is set to the vhost.
    let response = get(service_port, "/api/items?page=2");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(
        body.starts_with("GET /items?page=2 HTTP/1.1\r\n"),
        "backend saw:\n{body}"
    );
    assert_eq!(
        header(body, "host"),
        Some("app.test"),
        "backend saw:\n{body}"
    );
    // HSTS on every response.
    assert_eq!(
        header(&response, "strict-transport-security"),
        Some("max-age=15768000"),
        "{response}"
    );
    // revproxy: a relative Location is rewritten to the root path.
    assert_eq!(header(&response, "location"), Some("/root"), "{response}");

    // revproxy: an absolute Location on the vhost is rewritten too.
    let response = get(service_port, "/api/abs");
    assert_eq!(header(&response, "location"), Some("/root"), "{response}");

    // A path outside the prefix passes through unchanged.
    let response = get(service_port, "/other");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    assert!(
        body.starts_with("GET /other HTTP/1.1\r\n"),
        "backend saw:\n{body}"
    );
}
