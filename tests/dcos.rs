//! DC/OS service-account login through the binary, against a stand-in on 127.0.0.1 that is both
//! the login endpoint and Marathon: the login endpoint checks the RS256 signature of the login
//! token with the account's public key (with the `openssl` CLI, independently of our code) and
//! hands out tokens; Marathon answers 401 without a valid token and 200 with one.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");
const UID: &str = "marathon-lb-principal";
const LOGIN_PATH: &str = "/acs/api/v1/auth/login";

const APPS: &str = r#"{"apps":[{"id":"/web","labels":{"HAPROXY_GROUP":"external"},"portDefinitions":[{"port":10000,"protocol":"tcp"}]}]}"#;
const TASKS: &str = r#"{"tasks":[{"id":"web.1","appId":"/web","host":"127.0.0.1","ports":[31000],"state":"TASK_RUNNING"}]}"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn openssl(args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        text(&output.stderr)
    );
}

/// An RSA key pair made with the openssl CLI: the private key as PKCS#8 (what DC/OS makes) and
/// as PKCS#1, and the public key the stand-in verifies with.
struct Keys {
    pkcs8: String,
    pkcs1: String,
    public: PathBuf,
}

fn keys(dir: &Path, name: &str) -> Keys {
    let private = dir.join(format!("{name}.pem"));
    let pkcs1 = dir.join(format!("{name}-rsa.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let path = |p: &Path| p.to_str().unwrap().to_string();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &path(&private),
    ]);
    openssl(&[
        "rsa",
        "-in",
        &path(&private),
        "-traditional",
        "-out",
        &path(&pkcs1),
    ]);
    openssl(&[
        "pkey",
        "-in",
        &path(&private),
        "-pubout",
        "-out",
        &path(&public),
    ]);
    let pkcs1 = std::fs::read_to_string(&pkcs1).unwrap();
    assert!(pkcs1.contains("BEGIN RSA PRIVATE KEY"), "{pkcs1}");
    Keys {
        pkcs8: std::fs::read_to_string(&private).unwrap(),
        pkcs1,
        public,
    }
}

/// What the stand-in does and saw.
#[derive(Default)]
struct State {
    valid_tokens: HashSet<String>,
    tokens_issued: usize,
    /// Every login attempt, with why it was refused (None: accepted).
    logins: Vec<Option<String>>,
    /// The Authorization header of each Marathon request.
    marathon_auth: Vec<Option<String>>,
    /// The Authorization header of each `/v2/events` request (answered 404: no stream).
    events_auth: Vec<Option<String>>,
    /// A token stops working once /v2/apps accepted it (as if it expired mid-run).
    revoke_after_apps: bool,
    /// Marathon refuses every token.
    refuse_all: bool,
}

struct StandIn {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _dir: tempfile::TempDir,
}

impl StandIn {
    fn start(public_key: &Path) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let dir = tempfile::tempdir().unwrap();
        let (shared, public_key, work) = (
            state.clone(),
            public_key.to_path_buf(),
            dir.path().to_path_buf(),
        );
        std::thread::spawn(move || {
            // Bounded: no test here makes more than a few dozen connections.
            for stream in listener.incoming().take(200) {
                let Ok(stream) = stream else { continue };
                serve(stream, &shared, &public_key, &work);
            }
        });
        StandIn {
            addr,
            state,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn login_endpoint(&self) -> String {
        format!("{}{LOGIN_PATH}", self.url())
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    body: Vec<u8>,
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let (mut length, mut authorization) = (0usize, None);
    for _ in 0..100 {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        authorization,
        body,
    })
}

fn serve(mut stream: TcpStream, state: &Mutex<State>, public_key: &Path, work: &Path) {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let Some(request) = read_request(&stream) else {
        return;
    };
    let (status, body) = match (request.method.as_str(), request.path.as_str()) {
        ("POST", LOGIN_PATH) => {
            let verdict = check_login(&request.body, public_key, work);
            let mut state = state.lock().unwrap();
            state.logins.push(verdict.clone().err());
            match verdict {
                Ok(()) => {
                    state.tokens_issued += 1;
                    let token = format!("tok-{}", state.tokens_issued);
                    state.valid_tokens.insert(token.clone());
                    ("200 OK", format!(r#"{{"token":"{token}"}}"#))
                }
                Err(why) => (
                    "401 Unauthorized",
                    format!(
                        r#"{{"title":"Bad login","description":"{why}","code":"ERR_INVALID_SERVICE_LOGIN_TOKEN"}}"#
                    ),
                ),
            }
        }
        ("GET", path @ ("/v2/apps" | "/v2/tasks")) => {
            let mut state = state.lock().unwrap();
            state.marathon_auth.push(request.authorization.clone());
            let token = request
                .authorization
                .as_deref()
                .and_then(|value| value.strip_prefix("token="));
            let accepted =
                !state.refuse_all && token.is_some_and(|token| state.valid_tokens.contains(token));
            if !accepted {
                (
                    "401 Unauthorized",
                    r#"{"message":"invalid token"}"#.to_string(),
                )
            } else if path == "/v2/apps" {
                if state.revoke_after_apps {
                    state.valid_tokens.remove(token.unwrap());
                }
                ("200 OK", APPS.to_string())
            } else {
                ("200 OK", TASKS.to_string())
            }
        }
        ("GET", path) if path.starts_with("/v2/events") => {
            let mut state = state.lock().unwrap();
            state.events_auth.push(request.authorization.clone());
            (
                "404 Not Found",
                r#"{"message":"no stream here"}"#.to_string(),
            )
        }
        _ => ("404 Not Found", "{}".to_string()),
    };
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).ok();
}

/// The login as DC/OS checks it: `{"uid", "token"}` where the token is an RS256 JWT for that
/// uid, not expired, signed by the account's key (verified by `openssl dgst`).
fn check_login(body: &[u8], public_key: &Path, work: &Path) -> Result<(), String> {
    let login: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    if login["uid"] != UID {
        return Err(format!("uid {}", login["uid"]));
    }
    let token = login["token"].as_str().ok_or("no token")?;
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err("not a JWT".into());
    };
    let decode = |part: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| format!("base64url: {e}"))
    };
    let header: serde_json::Value =
        serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err(format!("alg {}", header["alg"]));
    }
    let claims: serde_json::Value =
        serde_json::from_slice(&decode(claims)?).map_err(|e| e.to_string())?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().ok_or("no exp")?;
    if claims["uid"] != UID || exp <= now || exp > now + 300 {
        return Err(format!("claims {claims}"));
    }
    let unique = format!("{:?}", std::thread::current().id())
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let input = work.join(format!("input-{unique}-{now}"));
    let signature_file = work.join(format!("signature-{unique}-{now}"));
    let signed = &token[..token.rfind('.').unwrap()];
    std::fs::write(&input, signed).unwrap();
    std::fs::write(&signature_file, decode(signature)?).unwrap();
    let verify = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_key)
        .arg("-signature")
        .arg(&signature_file)
        .arg(&input)
        .output()
        .unwrap();
    if verify.status.success() {
        Ok(())
    } else {
        Err("signature does not verify".into())
    }
}

fn account_json(login_endpoint: &str, private_key: &str) -> String {
    serde_json::json!({
        "uid": UID,
        "private_key": private_key,
        "login_endpoint": login_endpoint,
        "scheme": "RS256",
    })
    .to_string()
}

/// One run of the binary against the stand-in; `auth` adds the credentials flag or variable.
fn run(stand_in: &StandIn, dir: &Path, auth: &[(&str, &str)], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(["--marathon", &stand_in.url(), "--group", "external"])
        .args([
            "--dont-bind-http-https",
            "--skip-validation",
            "--reload-command",
            "true",
        ])
        .args(["--timeout", "5"])
        .arg("--haproxy-config")
        .arg(dir.join("haproxy.cfg"))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .stdin(Stdio::null());
    for (flag, value) in auth {
        command.args([flag, value]);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn credentials_file(dir: &Path, json: &str) -> String {
    let path = dir.join("dcos-credentials.json");
    std::fs::write(&path, json).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn logs_in_once_with_a_signed_token_and_sends_marathon_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path(), "account");
    let stand_in = StandIn::start(&keys.public);
    let file = credentials_file(
        dir.path(),
        &account_json(&stand_in.login_endpoint(), &keys.pkcs8),
    );

    let output = run(
        &stand_in,
        dir.path(),
        &[("--dcos-auth-credentials", &file)],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let config = std::fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap();
    assert!(config.contains("server 127_0_0_1_31000"), "{config}");
    stand_in.with(|state| {
        assert_eq!(
            state.logins,
            vec![None],
            "one login, its signature verified"
        );
        let expected = Some("token=tok-1".to_string());
        assert_eq!(state.marathon_auth, vec![expected.clone(), expected]);
    });
}

#[test]
fn a_401_to_the_token_logs_in_again_once_and_the_run_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path(), "account");
    let stand_in = StandIn::start(&keys.public);
    stand_in.with(|state| state.revoke_after_apps = true);
    let file = credentials_file(
        dir.path(),
        &account_json(&stand_in.login_endpoint(), &keys.pkcs8),
    );

    let output = run(
        &stand_in,
        dir.path(),
        &[("--dcos-auth-credentials", &file)],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    stand_in.with(|state| {
        assert_eq!(
            state.logins,
            vec![None, None],
            "logged in again after the 401"
        );
        let sent: Vec<&str> = state
            .marathon_auth
            .iter()
            .map(|a| a.as_deref().unwrap())
            .collect();
        assert_eq!(sent, vec!["token=tok-1", "token=tok-1", "token=tok-2"]);
    });
}

#[test]
fn a_token_refused_again_fails_the_run_naming_the_account_once_relogged() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path(), "account");
    let stand_in = StandIn::start(&keys.public);
    stand_in.with(|state| state.refuse_all = true);
    let json = account_json(&stand_in.login_endpoint(), &keys.pkcs8);

    let output = run(
        &stand_in,
        dir.path(),
        &[("--dcos-auth-credentials", &json)],
        &[],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("HTTP 401"), "{stderr}");
    assert!(stderr.contains("Marathon says: invalid token"), "{stderr}");
    assert!(
        stderr.contains(&format!("DC/OS service account {UID}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains("PRIVATE KEY"),
        "the key stays out of messages: {stderr}"
    );
    stand_in.with(|state| {
        assert_eq!(state.logins.len(), 2, "one login and one more, no loop");
    });
    assert!(!dir.path().join("haproxy.cfg").exists());
}

#[test]
fn marathon_lbs_variable_and_a_pkcs1_key_work_too() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path(), "account");
    let stand_in = StandIn::start(&keys.public);
    let json = account_json(&stand_in.login_endpoint(), &keys.pkcs1);

    let output = run(
        &stand_in,
        dir.path(),
        &[],
        &[("DCOS_SERVICE_ACCOUNT_CREDENTIAL", &json)],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    stand_in.with(|state| assert_eq!(state.logins, vec![None]));
}

#[test]
fn a_key_the_login_endpoint_does_not_know_is_refused_with_its_words() {
    let dir = tempfile::tempdir().unwrap();
    let known = keys(dir.path(), "known");
    let other = keys(dir.path(), "other");
    let stand_in = StandIn::start(&known.public);
    let json = account_json(&stand_in.login_endpoint(), &other.pkcs8);

    let output = run(
        &stand_in,
        dir.path(),
        &[],
        &[("HAPROXY_MARATHON_SYNC_DCOS_AUTH_CREDENTIALS", &json)],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the login was refused"), "{stderr}");
    assert!(
        stderr.contains("signature does not verify"),
        "DC/OS's words: {stderr}"
    );
    stand_in.with(|state| {
        assert_eq!(
            state.logins,
            vec![Some("signature does not verify".to_string())]
        );
        assert!(
            state.marathon_auth.is_empty(),
            "Marathon is not asked without a token"
        );
    });
}

#[test]
fn basic_auth_and_a_service_account_together_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let json = account_json("https://leader.mesos/acs/api/v1/auth/login", "x");
    let output = Command::new(BIN)
        .args(["--group", "external", "--auth-credentials", "a:b"])
        .args(["--dcos-auth-credentials", &json])
        .arg("--haproxy-config")
        .arg(dir.path().join("haproxy.cfg"))
        .env_clear()
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_ne!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("not both"), "{stderr}");
}

/// `--sse`: the event stream is opened with a token of its own login, like every other request.
#[test]
fn the_event_stream_is_opened_with_a_token_too() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys(dir.path(), "account");
    let stand_in = StandIn::start(&keys.public);
    let json = account_json(&stand_in.login_endpoint(), &keys.pkcs8);
    let mut child = Command::new(BIN)
        .args([
            "--marathon",
            &stand_in.url(),
            "--group",
            "external",
            "--sse",
        ])
        .args([
            "--interval",
            "1h",
            "--dont-bind-http-https",
            "--skip-validation",
        ])
        .args([
            "--reload-command",
            "true",
            "--timeout",
            "5",
            "--haproxy-config",
        ])
        .arg(dir.path().join("haproxy.cfg"))
        .env_clear()
        .env("DCOS_SERVICE_ACCOUNT_CREDENTIAL", &json)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut pause = Duration::from_millis(10);
    while std::time::Instant::now() < deadline
        && stand_in.with(|state| state.events_auth.is_empty() || state.marathon_auth.len() < 2)
    {
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    // SAFETY: a plain syscall on the PID of the child this test started and has not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let ended = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        child.try_wait().ok().flatten().is_some()
    });
    if !ended {
        child.kill().ok();
        child.wait().ok();
    }
    stand_in.with(|state| {
        let token = state.events_auth.first().cloned().flatten();
        assert!(
            token.is_some_and(|t| t.starts_with("token=tok-")),
            "{:?}",
            state.events_auth
        );
        assert!(
            state.logins.iter().all(Option::is_none),
            "{:?}",
            state.logins
        );
    });
    assert!(ended, "SIGTERM ended the loop");
}
