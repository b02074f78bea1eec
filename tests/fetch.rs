//! `fetch::fetch_state` against the stand-in Marathon on 127.0.0.1: the happy path on real
//! corpus JSON, failover on every kind of misbehaviour, auth, size cap, timeouts, redirects,
//! snapshots, the run deadline, and TLS (with `openssl`, when installed).

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use haproxy_marathon_sync::config::{Config, Credentials, FetchConfig, MarathonSource};
use haproxy_marathon_sync::error::{classify, Failure};
use haproxy_marathon_sync::fetch::{fetch_state, MarathonState};
use haproxy_marathon_sync::marathon;
use support::marathon::{Behaviour, FakeMarathon, APPS_PATH, TASKS_PATH};
use support::ports::Port;

const APPS: &str = r#"{"apps": [
  {"id": "/web", "instances": 2, "labels": {"HAPROXY_GROUP": "external"}, "portDefinitions": [{"port": 10000}]},
  {"id": "/db", "instances": 1, "labels": null}
]}"#;
const TASKS: &str = r#"{"tasks": [
  {"id": "web.1", "appId": "/web", "host": "10.0.0.1", "ports": [31000], "state": "TASK_RUNNING"},
  {"id": "web.2", "appId": "/web", "host": "10.0.0.2", "ports": [31001], "state": "TASK_RUNNING"},
  {"id": "db.1", "appId": "/db", "host": "10.0.0.3", "ports": [31002]}
]}"#;

/// A fetch config with short timeouts, as a test wants them.
fn fetch_config(sources: Vec<MarathonSource>) -> FetchConfig {
    let mut config = Config::new(sources, PathBuf::from("/nonexistent/haproxy.cfg")).fetch;
    config.request_timeout = Duration::from_secs(2);
    config
}

fn url(marathon: &FakeMarathon) -> MarathonSource {
    MarathonSource::Url(marathon.url())
}

fn serving_sample() -> FakeMarathon {
    let marathon = FakeMarathon::start();
    marathon.set_state(APPS, TASKS);
    marathon
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(60)
}

fn fetch(config: &FetchConfig) -> MarathonState {
    fetch_state(config, later()).unwrap_or_else(|e| panic!("fetch failed: {e:#}"))
}

/// The whole error chain as printed, after checking it carries `MarathonUnavailable`.
fn fetch_error(config: &FetchConfig) -> String {
    let error = fetch_state(config, later()).expect_err("fetch should fail");
    assert_eq!(
        classify(&error),
        Some(Failure::MarathonUnavailable),
        "{error:#}"
    );
    format!("{error:#}")
}

fn assert_sample(state: &MarathonState) {
    let apps: Vec<&str> = state.apps.iter().map(|a| a.id.as_str()).collect();
    let tasks: Vec<(&str, &str)> = state
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), &*t.app_id))
        .collect();
    assert_eq!(apps, ["/web", "/db"]);
    assert_eq!(
        tasks,
        [("web.1", "/web"), ("web.2", "/web"), ("db.1", "/db")]
    );
}

/// Asserts `first` failed and `second` answered with the sample state.
fn assert_failed_over(first: &FakeMarathon, second: &FakeMarathon, expect_in_failure: &str) {
    let config = fetch_config(vec![url(first), url(second)]);
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(state.source, second.url());
    assert_eq!(state.failed_sources.len(), 1, "{:?}", state.failed_sources);
    let failure = &state.failed_sources[0];
    assert!(failure.starts_with(&first.url()), "{failure}");
    assert!(failure.contains(expect_in_failure), "{failure}");
    assert!(
        first.request_count(APPS_PATH) >= 1,
        "the first Marathon was not asked"
    );
    assert_eq!(second.request_count(APPS_PATH), 1);
    assert_eq!(second.request_count(TASKS_PATH), 1);
}

#[test]
fn fetches_the_corpus_cluster_in_marathon_order() {
    let case = support::corpus::case_dir("mixed-networking-cluster");
    let marathon = FakeMarathon::start();
    marathon.set_state_from_dir(&case);
    let state = fetch(&fetch_config(vec![url(&marathon)]));

    let ids = |name: &str, list: &str, key: &str| -> Vec<String> {
        let text = std::fs::read_to_string(case.join(name)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item[key].as_str().unwrap().to_string())
            .collect()
    };
    let apps: Vec<String> = state.apps.iter().map(|a| a.id.clone()).collect();
    let tasks: Vec<String> = state.tasks.iter().map(|t| t.id.clone()).collect();
    assert_eq!(apps, ids("apps.json", "apps", "id"));
    assert_eq!(tasks, ids("tasks.json", "tasks", "id"));
    assert_eq!(state.source, marathon.url());
    assert!(state.failed_sources.is_empty());
}

#[test]
fn asks_each_path_once_for_json() {
    let marathon = serving_sample();
    // A trailing slash on the base must not become `//v2/apps`.
    let source = MarathonSource::Url(format!("{}/", marathon.url()));
    let state = fetch(&fetch_config(vec![source]));
    assert_sample(&state);
    let requests = marathon.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [APPS_PATH, TASKS_PATH]);
    for request in &requests {
        assert_eq!(request.method, "GET");
        assert_eq!(request.accept.as_deref(), Some("application/json"));
        assert_eq!(request.authorization, None);
    }
}

#[test]
fn fails_over_when_the_first_refuses_connections() {
    let second = serving_sample();
    let refused = Port::reserve();
    let first = refused.refused_url();
    let config = fetch_config(vec![MarathonSource::Url(first.clone()), url(&second)]);
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(state.source, second.url());
    assert_eq!(
        state.failed_sources,
        [format!("{first}: GET /v2/apps: connection refused")]
    );
}

#[test]
fn fails_over_on_server_errors() {
    for status in [500, 502, 503] {
        let first = serving_sample();
        first.set_behaviour(Behaviour::Status(status));
        let second = serving_sample();
        assert_failed_over(&first, &second, &format!("HTTP {status} "));
    }
}

#[test]
fn fails_over_on_client_errors_too() {
    // A 404 from a proxy in front of a dead node says nothing about the other nodes.
    let first = serving_sample();
    first.set_behaviour(Behaviour::Status(404));
    let second = serving_sample();
    assert_failed_over(
        &first,
        &second,
        "HTTP 404 Not Found (Marathon says: scripted status 404)",
    );
}

#[test]
fn fails_over_when_the_first_hangs() {
    let first = serving_sample();
    first.set_behaviour(Behaviour::Hang);
    let second = serving_sample();
    let mut config = fetch_config(vec![url(&first), url(&second)]);
    config.request_timeout = Duration::from_millis(500);
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(state.source, second.url());
    assert!(
        state.failed_sources[0].contains("timed out after 500ms"),
        "{:?}",
        state.failed_sources
    );
}

#[test]
fn fails_over_when_the_first_closes_without_answering() {
    let first = serving_sample();
    first.set_behaviour(Behaviour::CloseEarly);
    let second = serving_sample();
    assert_failed_over(
        &first,
        &second,
        "the connection closed before the whole answer arrived",
    );
}

#[test]
fn fails_over_when_the_first_truncates_its_body() {
    let first = serving_sample();
    first.set_behaviour(Behaviour::Truncate);
    let second = serving_sample();
    assert_failed_over(
        &first,
        &second,
        "the connection closed before the whole answer arrived",
    );
}

#[test]
fn fails_over_on_broken_json_naming_url_line_and_column() {
    let first = serving_sample();
    first.set_path_behaviour(APPS_PATH, Behaviour::BrokenJson);
    let second = serving_sample();
    assert_failed_over(&first, &second, "GET /v2/apps: invalid JSON: ");
    let config = fetch_config(vec![url(&first)]);
    let message = fetch_error(&config);
    assert!(
        message.contains(&format!("{}: GET /v2/apps", first.url())),
        "{message}"
    );
    assert!(message.contains("line 1 column"), "{message}");
}

#[test]
fn takes_apps_and_tasks_from_the_same_source() {
    // The first answers apps but fails tasks: the second must serve both, never a mix.
    let first = FakeMarathon::start();
    first.set_state(r#"{"apps": [{"id": "/stale"}]}"#, TASKS);
    first.set_path_behaviour(TASKS_PATH, Behaviour::Status(503));
    let second = serving_sample();
    let config = fetch_config(vec![url(&first), url(&second)]);
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(first.request_count(APPS_PATH), 1);
    assert_eq!(first.request_count(TASKS_PATH), 1);
    assert!(state.failed_sources[0].contains("GET /v2/tasks: HTTP 503 Service Unavailable"));
}

#[test]
fn all_sources_down_names_each_url_and_what_it_did() {
    let refused_port = Port::reserve();
    let refused = refused_port.refused_url();
    let unavailable = serving_sample();
    unavailable.set_behaviour(Behaviour::Status(503));
    let broken = serving_sample();
    broken.set_path_behaviour(TASKS_PATH, Behaviour::BrokenJson);
    let config = fetch_config(vec![
        MarathonSource::Url(refused.clone()),
        url(&unavailable),
        url(&broken),
    ]);
    let message = fetch_error(&config);
    let expected_parts = [
        format!("{refused}: GET /v2/apps: connection refused; "),
        format!(
            "{}: GET /v2/apps: HTTP 503 Service Unavailable",
            unavailable.url()
        ),
        format!("{}: GET /v2/tasks: invalid JSON: ", broken.url()),
    ];
    for part in &expected_parts {
        assert!(
            message.contains(part.as_str()),
            "missing {part:?} in {message}"
        );
    }
    assert!(
        message.starts_with("could not read Marathon's state: "),
        "{message}"
    );
}

#[test]
fn missing_credentials_say_authentication_and_name_the_flags() {
    let marathon = serving_sample();
    marathon.require_basic_auth("lb", "s3cret");
    let message = fetch_error(&fetch_config(vec![url(&marathon)]));
    assert!(message.contains("HTTP 401 Unauthorized"), "{message}");
    assert!(message.contains("authentication failed"), "{message}");
    assert!(message.contains("--auth-credentials"), "{message}");
    assert!(!message.contains("redirect"), "{message}");
}

#[test]
fn wrong_credentials_say_authentication_without_printing_the_password() {
    let marathon = serving_sample();
    marathon.require_basic_auth("lb", "s3cret");
    let mut config = fetch_config(vec![url(&marathon)]);
    config.credentials = Some(Credentials {
        user: "lb".to_string(),
        password: "wrong-password".to_string(),
    });
    let message = fetch_error(&config);
    assert!(message.contains("authentication failed"), "{message}");
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!message.contains("wrong-password"), "{message}");
    assert!(!format!("{config:?}").contains("wrong-password"));
}

#[test]
fn forbidden_says_authorization() {
    let marathon = serving_sample();
    marathon.set_behaviour(Behaviour::Status(403));
    let message = fetch_error(&fetch_config(vec![url(&marathon)]));
    assert!(message.contains("HTTP 403 Forbidden"), "{message}");
    assert!(message.contains("authorization failed"), "{message}");
}

/// 401 and 403 pass the turn to the next URL, as the Faults table says; the failure kept for
/// the warning says authentication or authorization and never holds the password.
#[test]
fn fails_over_on_refused_credentials_and_on_forbidden() {
    let first = serving_sample();
    first.require_basic_auth("lb", "s3cret");
    let second = serving_sample();
    let mut config = fetch_config(vec![url(&first), url(&second)]);
    config.credentials = Some(Credentials {
        user: "lb".to_string(),
        password: "wrong-password".to_string(),
    });
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(state.source, second.url());
    let failure = state.failed_sources.join("\n");
    assert!(failure.contains("authentication failed"), "{failure}");
    assert!(!failure.contains("wrong-password"), "{failure}");

    let first = serving_sample();
    first.set_behaviour(Behaviour::Status(403));
    let second = serving_sample();
    assert_failed_over(&first, &second, "authorization failed");
}

#[test]
fn right_credentials_are_sent_and_accepted() {
    let marathon = serving_sample();
    marathon.require_basic_auth("lb", "pa:ss wörd");
    let mut config = fetch_config(vec![url(&marathon)]);
    config.credentials = Some(Credentials {
        user: "lb".to_string(),
        password: "pa:ss wörd".to_string(),
    });
    assert_sample(&fetch(&config));
    for request in marathon.requests() {
        assert!(request.authorization.unwrap().starts_with("Basic "));
    }
}

#[test]
fn a_body_over_the_cap_fails_over() {
    let first = serving_sample();
    let mut big_apps = String::from(r#"{"apps": ["#);
    for i in 0..100 {
        big_apps.push_str(&format!(r#"{{"id": "/app-{i:03}"}},"#));
    }
    big_apps.push_str(r#"{"id": "/last"}]}"#);
    first.set_state(big_apps.clone(), TASKS);
    let second = serving_sample();
    let mut config = fetch_config(vec![url(&first), url(&second)]);
    config.max_body_bytes = 1024;
    assert!(big_apps.len() > 1024 && APPS.len() <= 1024 && TASKS.len() <= 1024);
    let state = fetch(&config);
    assert_sample(&state);
    assert!(
        state.failed_sources[0].contains("larger than the limit of 1024 bytes"),
        "{:?}",
        state.failed_sources
    );
}

#[test]
fn a_stalled_body_is_bounded_by_the_timeout() {
    let marathon = serving_sample();
    marathon.set_behaviour(Behaviour::SlowBody);
    let mut config = fetch_config(vec![url(&marathon)]);
    config.request_timeout = Duration::from_millis(500);
    let message = fetch_error(&config);
    assert!(
        message.contains("GET /v2/apps: timed out after 500ms"),
        "{message}"
    );
}

#[test]
fn the_request_is_bounded_by_the_run_deadline() {
    let marathon = serving_sample();
    marathon.set_behaviour(Behaviour::Hang);
    let mut config = fetch_config(vec![url(&marathon)]);
    config.request_timeout = Duration::from_secs(3600);
    let error = fetch_state(&config, Instant::now() + Duration::from_millis(500))
        .expect_err("a hanging Marathon must not outlive the deadline");
    let message = format!("{error:#}");
    assert!(
        message.contains("the time left before the run's deadline"),
        "{message}"
    );
}

#[test]
fn a_passed_deadline_fails_fast_without_asking() {
    let marathon = serving_sample();
    let snapshot = tempfile::tempdir().unwrap();
    let config = fetch_config(vec![
        url(&marathon),
        MarathonSource::Snapshot(snapshot.path().to_path_buf()),
    ]);
    let error = fetch_state(&config, Instant::now()).expect_err("the deadline has passed");
    assert_eq!(classify(&error), Some(Failure::MarathonUnavailable));
    let message = format!("{error:#}");
    assert!(message.contains(&format!(
        "{}: not tried, the run's deadline had passed",
        marathon.url()
    )));
    assert!(message.contains(&format!("{}: not tried", snapshot.path().display())));
    assert_eq!(marathon.total_requests(), 0);
}

#[test]
fn follows_a_redirect_to_a_listed_leader_with_credentials() {
    let leader = serving_sample();
    leader.require_basic_auth("lb", "pw");
    let follower = serving_sample();
    follower.set_behaviour(Behaviour::Redirect(leader.url()));
    // Both Marathons are listed, so the leader's origin may have the credentials (issue 9).
    let mut config = fetch_config(vec![url(&follower), url(&leader)]);
    config.credentials = Some(Credentials {
        user: "lb".to_string(),
        password: "pw".to_string(),
    });
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(state.source, follower.url());
    assert_eq!(follower.request_count(APPS_PATH), 1);
    assert_eq!(leader.request_count(APPS_PATH), 1);
    assert_eq!(leader.request_count(TASKS_PATH), 1);
    assert!(leader.requests().iter().all(|r| r.authorization.is_some()));
}

/// Issue 9 overrides the earlier choice of following the leader with credentials wherever it
/// is: a redirect to an origin not in `--marathon` is followed without them, and said.
#[test]
fn credentials_do_not_follow_a_redirect_to_an_unlisted_origin() {
    let leader = serving_sample();
    let follower = serving_sample();
    let elsewhere = format!("http://localhost:{}", leader.addr().port());
    follower.set_behaviour(Behaviour::Redirect(elsewhere.clone()));
    let mut config = fetch_config(vec![url(&follower)]);
    config.credentials = Some(Credentials {
        user: "lb".to_string(),
        password: "pw".to_string(),
    });
    let state = fetch(&config);
    assert_eq!(state.apps.len(), 2);
    let leader_requests = leader.requests();
    assert_eq!(leader_requests.len(), 2, "apps and tasks, both followed");
    assert!(leader_requests.iter().all(|r| r.authorization.is_none()));
    assert!(
        state.notes.iter().any(|note| note.contains(&format!(
            "redirected to {elsewhere}: followed without the Marathon credentials"
        ))),
        "{:?}",
        state.notes
    );
}

#[test]
fn a_redirect_loop_ends_and_fails_over() {
    let looping = serving_sample();
    looping.set_behaviour(Behaviour::Redirect(looping.url()));
    let second = serving_sample();
    assert_failed_over(&looping, &second, "more than 3 redirects");
    assert_eq!(looping.request_count(APPS_PATH), 4);
}

fn write_snapshot(dir: &Path, apps: &str, tasks: &str) {
    std::fs::write(dir.join("apps.json"), apps).unwrap();
    std::fs::write(dir.join("tasks.json"), tasks).unwrap();
}

#[test]
fn reads_a_snapshot_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), APPS, TASKS);
    let state = fetch(&fetch_config(vec![MarathonSource::Snapshot(
        dir.path().to_path_buf(),
    )]));
    assert_sample(&state);
    assert_eq!(state.source, dir.path().display().to_string());
}

#[test]
fn a_snapshot_missing_a_file_names_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("apps.json"), APPS).unwrap();
    let config = fetch_config(vec![MarathonSource::Snapshot(dir.path().to_path_buf())]);
    let message = fetch_error(&config);
    let tasks_file = dir.path().join("tasks.json");
    assert!(
        message.contains(&format!("reading {}", tasks_file.display())),
        "{message}"
    );
}

#[test]
fn a_broken_snapshot_names_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), APPS, "{\"tasks\": [\n  {\"id\": }\n]}");
    let config = fetch_config(vec![MarathonSource::Snapshot(dir.path().to_path_buf())]);
    let message = fetch_error(&config);
    let tasks_file = dir.path().join("tasks.json");
    assert!(
        message.contains(&format!("parsing {}: invalid JSON", tasks_file.display())),
        "{message}"
    );
    assert!(message.contains("line 2 column"), "{message}");
}

#[test]
fn a_snapshot_can_back_up_a_url() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), APPS, TASKS);
    let config = fetch_config(vec![
        MarathonSource::Url(Port::reserve().leak_refused_url()),
        MarathonSource::Snapshot(dir.path().to_path_buf()),
    ]);
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(state.failed_sources.len(), 1);
}

#[test]
fn an_unreadable_ca_bundle_is_an_error_naming_the_file() {
    let marathon = serving_sample();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let mut config = fetch_config(vec![url(&marathon)]);
    config.ca_cert = Some(missing.clone());
    let message = format!("{:#}", fetch_state(&config, later()).unwrap_err());
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );

    let not_pem = dir.path().join("not-a-ca.pem");
    std::fs::write(&not_pem, "hello, I am not a certificate\n").unwrap();
    config.ca_cert = Some(not_pem.clone());
    let message = format!("{:#}", fetch_state(&config, later()).unwrap_err());
    assert!(
        message.contains(&not_pem.display().to_string()),
        "{message}"
    );
    assert!(message.contains("holds no PEM certificate"), "{message}");
    assert_eq!(marathon.total_requests(), 0);
}

#[test]
fn an_empty_source_list_fails_cleanly() {
    let message = fetch_error(&fetch_config(Vec::new()));
    assert!(
        message.contains("no Marathon source was given"),
        "{message}"
    );
}

/// An HTTPS Marathon: `openssl s_server -WWW` serving the sample from a temp dir with a leaf
/// certificate for 127.0.0.1 signed by a throwaway CA. Killed (by its own PID) on drop.
struct TlsMarathon {
    child: std::process::Child,
    url: String,
    ca_pem: PathBuf,
    _dir: tempfile::TempDir,
    _port: support::ports::Port,
}

impl Drop for TlsMarathon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = std::process::Command::new("openssl")
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

/// Fails the test when `openssl` is not installed (scripts/test installs it).
fn start_tls_marathon() -> TlsMarathon {
    let probe = std::process::Command::new("openssl")
        .arg("version")
        .output();
    assert!(
        probe.as_ref().is_ok_and(|output| output.status.success()),
        "openssl is not installed (scripts/test installs it): {probe:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = [
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem"],
    ]
    .concat();
    openssl(
        path,
        &[&ca[..], &["-days", "2", "-subj", "/CN=fetch-test-ca"]].concat(),
    );
    let csr = [
        &["req"][..],
        &ec,
        &["-keyout", "leaf.key", "-out", "leaf.csr"],
    ]
    .concat();
    openssl(path, &[&csr[..], &["-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(
        path.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        path,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
    );
    // `-WWW` serves files relative to its working directory: GET /v2/apps reads `v2/apps`.
    let root = path.join("root");
    std::fs::create_dir_all(root.join("v2")).unwrap();
    std::fs::write(root.join("v2/apps"), APPS).unwrap();
    std::fs::write(root.join("v2/tasks"), TASKS).unwrap();

    // Reserved until the server is dropped; s_server binds it with SO_REUSEADDR.
    let reserved = support::ports::Port::reserve();
    let port = reserved.number();
    let mut child = std::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-WWW", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(path.join("leaf.pem"))
        .arg("-key")
        .arg(path.join("leaf.key"))
        .current_dir(&root)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
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
    TlsMarathon {
        child,
        url: format!("https://127.0.0.1:{port}"),
        ca_pem: path.join("ca.pem"),
        _dir: dir,
        _port: reserved,
    }
}

#[test]
fn https_with_an_untrusted_certificate_is_refused_clearly() {
    let server = start_tls_marathon();
    let config = fetch_config(vec![MarathonSource::Url(server.url.clone())]);
    let message = fetch_error(&config);
    assert!(
        message.contains(&format!("{}: GET /v2/apps: TLS failed", server.url)),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("--marathon-ca-cert"), "{message}");
}

#[test]
fn https_trusted_through_the_ca_bundle_is_fetched() {
    let server = start_tls_marathon();
    let mut config = fetch_config(vec![MarathonSource::Url(server.url.clone())]);
    config.ca_cert = Some(server.ca_pem.clone());
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(state.source, server.url);
}

/// A cluster whose apps answer is large enough (over 1 MiB) for the tasks to be fetched and parsed
/// on a second thread while the apps are parsed, with 3,000 tasks: several windows of tasks.
fn large_cluster() -> (String, String) {
    let padding = "x".repeat(1 << 20);
    let apps = format!(r#"{{"apps": [{{"id": "/web", "cmd": "{padding}"}}, {{"id": "/db"}}]}}"#);
    let tasks: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                r#"{{"id": "web.{i}", "appId": "/web", "host": "10.0.{}.{}", "ports": [{}],
                "state": "TASK_RUNNING"}}"#,
                i / 250,
                i % 250,
                31000 + i % 1000
            )
        })
        .collect();
    (apps, format!("{{\"tasks\": [{}]}}", tasks.join(",\n")))
}

#[test]
fn a_large_cluster_reads_the_same_over_http_and_from_a_snapshot_as_parsed_whole() {
    let (apps, tasks) = large_cluster();
    let whole = marathon::parse_task_list(tasks.as_bytes(), usize::MAX).unwrap();
    let expected = format!("{:?}", whole.tasks);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps.as_str(), tasks.as_str());
    let state = fetch(&fetch_config(vec![url(&marathon)]));
    assert_eq!(state.apps.len(), 2);
    assert_eq!(format!("{:?}", state.tasks), expected);
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), &apps, &tasks);
    let snapshot = MarathonSource::Snapshot(dir.path().to_path_buf());
    let state = fetch(&fetch_config(vec![snapshot]));
    assert_eq!(format!("{:?}", state.tasks), expected);
}

#[test]
fn a_bad_large_apps_answer_fails_over_without_waiting_for_a_slow_tasks_answer() {
    // Over 1 MiB, so /v2/tasks is asked for beside the apps' parse; the apps answer breaks at
    // its end, and the same Marathon's /v2/tasks never answers.
    let (apps, _) = large_cluster();
    let broken = apps.trim_end_matches("]}").to_string();
    let first = FakeMarathon::start();
    first.set_path_behaviour(APPS_PATH, Behaviour::Body(broken));
    first.set_path_behaviour(TASKS_PATH, Behaviour::Hang);
    let second = serving_sample();
    let mut config = fetch_config(vec![url(&first), url(&second)]);
    config.request_timeout = Duration::from_secs(40);
    let started = Instant::now();
    let state = fetch(&config);
    assert_sample(&state);
    assert_eq!(state.source, second.url());
    assert!(
        state.failed_sources[0].contains("GET /v2/apps"),
        "{:?}",
        state.failed_sources
    );
    // Waiting for the hanging tasks request would take the whole 40 s request timeout.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the next URL was asked only after {:?}",
        started.elapsed()
    );
}

#[test]
fn a_large_cluster_whose_tasks_fail_fails_over_as_a_small_one_does() {
    let (apps, tasks) = large_cluster();
    let broken = tasks.replacen("\"ports\": [31007]", "\"ports\": [31007, \"x\"]", 1);
    let whole = marathon::parse_task_list(broken.as_bytes(), usize::MAX).unwrap_err();
    assert!(whole.to_string().contains("at line 15 column"), "{whole}");
    let cases = [
        (
            Behaviour::Truncate,
            tasks.clone(),
            "GET /v2/tasks: the connection closed before the whole answer arrived".to_string(),
        ),
        (
            Behaviour::Status(503),
            tasks.clone(),
            "GET /v2/tasks: HTTP 503".to_string(),
        ),
        (
            Behaviour::Serve,
            broken.clone(),
            format!("GET /v2/tasks: {whole}"),
        ),
    ];
    for (behaviour, tasks, expected) in cases {
        let first = FakeMarathon::start();
        first.set_state(apps.as_str(), tasks.as_str());
        first.set_path_behaviour(TASKS_PATH, behaviour);
        let second = FakeMarathon::start();
        second.set_state(apps.as_str(), large_cluster().1);
        let state = fetch(&fetch_config(vec![url(&first), url(&second)]));
        assert_eq!(state.source, second.url());
        assert_eq!(state.tasks.len(), 3000);
        let failure = &state.failed_sources[0];
        assert!(failure.contains(&expected), "{failure}");
        assert_eq!(first.request_count(TASKS_PATH), 1);
    }
    // The same answer from a snapshot names the same line and column.
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), &apps, &broken);
    let snapshot = MarathonSource::Snapshot(dir.path().to_path_buf());
    let message = fetch_error(&fetch_config(vec![snapshot]));
    assert!(message.ends_with(&whole.to_string()), "{message} / {whole}");
}

/// 3,000 apps written as Marathon writes them (`id` first, deployments with ids of their own,
/// labels and port lists): several windows of a streamed read.
fn large_app_list() -> String {
    let apps: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                r#"{{"id": "/team{}/app{i}", "labels": {{"HAPROXY_GROUP": "external",
                "HAPROXY_0_VHOST": "app{i}.example.com"}}, "instances": 3,
                "portDefinitions": [{{"port": {}, "name": "http"}}, {{"port": 0}}],
                "deployments": [{{"id": "d{i}"}}, {{"id": "e{i}"}}]}}"#,
                i % 7,
                10000 + i
            )
        })
        .collect();
    format!("{{\"apps\": [{}]}}", apps.join(",\n"))
}

#[test]
fn a_large_snapshot_reads_its_apps_as_parsed_whole_and_names_a_fault_where_it_is() {
    let apps = large_app_list();
    let whole = marathon::parse_app_list(apps.as_bytes(), usize::MAX).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), &apps, TASKS);
    let snapshot = MarathonSource::Snapshot(dir.path().to_path_buf());
    let state = fetch(&fetch_config(vec![snapshot.clone()]));
    assert_eq!(format!("{:?}", state.apps), format!("{:?}", whole.apps));
    // The app's id begins a line the windows before it hold: the fault is in a later window.
    let app = "app2500.example.com\"}, \"instances\": 3";
    let broken = apps.replacen(app, "app2500.example.com\"}, \"instances\": \"3\"", 1);
    let fault = marathon::parse_app_list(broken.as_bytes(), usize::MAX).unwrap_err();
    assert!(
        fault.to_string().contains("at line 10002 column 75"),
        "{fault}"
    );
    write_snapshot(dir.path(), &broken, TASKS);
    let message = fetch_error(&fetch_config(vec![snapshot]));
    let expected = format!("apps.json: {fault}");
    assert!(message.ends_with(&expected), "{message} / {expected}");
}
