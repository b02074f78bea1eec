//! TLS to Marathon with real handshakes on 127.0.0.1 (`openssl s_server`, throwaway certificates
//! made by the `openssl` CLI): `--marathon-ca-cert` trusts what `curl --cacert` trusts, a
//! self-signed CA:TRUE certificate from `openssl req -x509` included, and every refusal is said
//! in words (issue 12). Skipped when `openssl` is not installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use haproxy_marathon_sync::config::{Config, FetchConfig, MarathonSource};
use haproxy_marathon_sync::error::{classify, Failure};
use haproxy_marathon_sync::fetch::fetch_state;

const APPS: &str = r#"{"apps": [{"id": "/web"}]}"#;
const TASKS: &str = r#"{"tasks": [{"id": "web.1", "appId": "/web", "host": "10.0.0.1"}]}"#;

/// `openssl s_server -WWW` serving APPS and TASKS with one certificate; killed by its PID on
/// drop.
struct TlsServer {
    child: Child,
    url: String,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have_openssl() -> bool {
    let found = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        eprintln!("skipped: openssl is not installed");
    }
    found
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// `openssl req -x509` as the docs show it: self-signed, CA:TRUE (OpenSSL's default for -x509).
fn self_signed(dir: &Path, name: &str, san: &str) {
    let key = format!("{name}.key");
    let pem = format!("{name}.pem");
    let san = format!("subjectAltName={san}");
    let subject = format!("/CN=marathon-test-{name}");
    let args = [
        &["req", "-x509"][..],
        &EC,
        &["-keyout", &key, "-out", &pem, "-days", "2"],
        &["-subj", &subject, "-addext", &san],
    ]
    .concat();
    openssl(dir, &args);
}

/// A leaf for 127.0.0.1 signed by `ca` (made with [`self_signed`]), valid from `start` to
/// `end` (`YYYYMMDDHHMMSSZ`), through `openssl ca`, which takes explicit dates.
fn leaf_signed_by(dir: &Path, ca: &str, name: &str, start: &str, end: &str) {
    std::fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = here\n[here]\ndir = .\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = serial\npolicy = any\ndefault_md = sha256\nunique_subject = no\n\
         [any]\ncommonName = supplied\n",
    )
    .unwrap();
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let key = format!("{name}.key");
    let csr = format!("{name}.csr");
    let args = [
        &["req"][..],
        &EC,
        &["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"],
    ]
    .concat();
    openssl(dir, &args);
    let (ca_pem, ca_key) = (format!("{ca}.pem"), format!("{ca}.key"));
    let pem = format!("{name}.pem");
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-notext",
            "-config",
            "ca.cnf",
            "-cert",
            &ca_pem,
            "-keyfile",
            &ca_key,
            "-in",
            &csr,
            "-out",
            &pem,
            "-startdate",
            start,
            "-enddate",
            end,
            "-extfile",
            "leaf.ext",
        ],
    );
}

/// One server at a time: the port is found free, then handed to `openssl`, and two tests in
/// parallel could be handed the same one.
static ONE_SERVER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serve(dir: &Path, name: &str) -> (TlsServer, std::sync::MutexGuard<'static, ()>) {
    let turn = ONE_SERVER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let root = dir.join(format!("root-{name}"));
    std::fs::create_dir_all(root.join("v2")).unwrap();
    std::fs::write(root.join("v2/apps"), APPS).unwrap();
    std::fs::write(root.join("v2/tasks"), TASKS).unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut child = Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(dir.join(format!("{name}.pem")))
        .arg("-key")
        .arg(dir.join(format!("{name}.key")))
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting openssl s_server");
    // Ready once it accepts connections; bounded, and failing loudly if it died.
    let ready_by = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        let exited = child.try_wait().unwrap();
        if exited.is_some() || Instant::now() > ready_by {
            let _ = child.kill();
            let _ = child.wait();
            panic!("openssl s_server did not start on port {port} ({exited:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let server = TlsServer {
        child,
        url: format!("https://127.0.0.1:{port}"),
    };
    (server, turn)
}

fn config(url: &str, ca_cert: Option<PathBuf>) -> FetchConfig {
    let source = MarathonSource::Url(url.to_string());
    let mut config = Config::new(vec![source], PathBuf::from("/nonexistent/haproxy.cfg")).fetch;
    config.request_timeout = Duration::from_secs(5);
    config.ca_cert = ca_cert;
    config
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

/// The error as printed, checked to carry `MarathonUnavailable` and no Debug-style text.
fn refusal(config: &FetchConfig) -> String {
    let error = fetch_state(config, later()).expect_err("the fetch should be refused");
    assert_eq!(classify(&error), Some(Failure::MarathonUnavailable));
    let message = format!("{error:#}");
    for debug in [
        "Other(",
        "OtherError",
        "CaUsedAsEndEntity",
        "InvalidCertificate",
    ] {
        assert!(!message.contains(debug), "{debug} in {message}");
    }
    message
}

#[test]
fn a_self_signed_ca_certificate_given_as_the_ca_is_trusted_as_curl_trusts_it() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server", "IP:127.0.0.1,DNS:localhost");
    let (server, _turn) = serve(dir.path(), "server");
    let state = fetch_state(
        &config(&server.url, Some(dir.path().join("server.pem"))),
        later(),
    )
    .unwrap_or_else(|error| panic!("{error:#}"));
    assert_eq!(state.apps[0].id, "/web");
    assert_eq!(state.tasks[0].id, "web.1");
}

#[test]
fn the_trusted_self_signed_certificate_must_still_name_the_host() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server", "DNS:marathon.example.com");
    let (server, _turn) = serve(dir.path(), "server");
    let message = refusal(&config(&server.url, Some(dir.path().join("server.pem"))));
    assert!(
        message.contains("TLS failed: the server's certificate is for another host name"),
        "{message}"
    );
}

#[test]
fn a_self_signed_certificate_not_given_is_said_to_be_self_signed() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "server", "IP:127.0.0.1");
    let (server, _turn) = serve(dir.path(), "server");
    let message = refusal(&config(&server.url, None));
    assert!(
        message.contains(
            "TLS failed: the server's certificate is self-signed and is not one of the trusted \
             certificates (give it with --marathon-ca-cert to trust it)"
        ),
        "{message}"
    );
}

#[test]
fn a_leaf_from_another_ca_is_an_unknown_issuer() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "ca", "DNS:ca");
    self_signed(dir.path(), "other-ca", "DNS:other-ca");
    leaf_signed_by(
        dir.path(),
        "ca",
        "leaf",
        "20200101000000Z",
        "20991231000000Z",
    );
    let (server, _turn) = serve(dir.path(), "leaf");
    let message = refusal(&config(&server.url, Some(dir.path().join("other-ca.pem"))));
    assert!(
        message.contains("TLS failed: the server's certificate is signed by an unknown issuer"),
        "{message}"
    );
    assert!(message.contains("--marathon-ca-cert"), "{message}");
    // And the right CA is trusted.
    let state = fetch_state(
        &config(&server.url, Some(dir.path().join("ca.pem"))),
        later(),
    )
    .unwrap_or_else(|error| panic!("{error:#}"));
    assert_eq!(state.apps.len(), 1);
}

#[test]
fn an_expired_certificate_is_said_to_have_expired() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "ca", "DNS:ca");
    leaf_signed_by(
        dir.path(),
        "ca",
        "leaf",
        "20200101000000Z",
        "20200102000000Z",
    );
    let (server, _turn) = serve(dir.path(), "leaf");
    let message = refusal(&config(&server.url, Some(dir.path().join("ca.pem"))));
    assert!(
        message.contains("TLS failed: the server's certificate has expired"),
        "{message}"
    );
}

/// A plain-http server answering whatever it is sent with a 400, as a Marathon's http port
/// answers a TLS handshake; serves one connection, bounded in time.
fn plain_http_port() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Some(Ok(mut stream)) = listener.incoming().next() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut hello = [0u8; 1024];
            let _ = stream.read(&mut hello);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    format!("https://{addr}")
}

#[test]
fn https_to_a_plain_http_port_says_the_answer_is_not_tls() {
    let url = plain_http_port();
    let message = refusal(&config(&url, None));
    assert!(
        message.contains("TLS failed: the server's answer is not TLS (is this port plain http?)"),
        "{message}"
    );
}
