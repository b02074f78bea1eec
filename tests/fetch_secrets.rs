//! Credentials through the binary against the stand-in Marathon on 127.0.0.1 (issues 9 and 13):
//! a password in the URL is used and never printed or stored; a refusal names where the refused
//! credentials came from; the credentials file is named when it does not parse and warned about
//! when others can read it; credentials go only to the `--marathon` origins, and a warning says
//! when they travel over plain http.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use support::marathon::{Behaviour, FakeMarathon};

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

const APPS: &str = r#"{"apps": [
  {"id": "/web", "labels": {"HAPROXY_GROUP": "external"}, "portDefinitions": [{"port": 10000}]}
]}"#;
const TASKS: &str = r#"{"tasks": [
  {"id": "web.1", "appId": "/web", "host": "10.0.0.1", "ports": [31000], "state": "TASK_RUNNING"}
]}"#;

const SECRET: &str = "s3cret-Pa55";

fn marathon_wanting(user: &str, password: &str) -> FakeMarathon {
    let marathon = FakeMarathon::start();
    marathon.set_state(APPS, TASKS);
    marathon.require_basic_auth(user, password);
    marathon
}

/// `http://user:password@127.0.0.1:PORT`.
fn with_userinfo(marathon: &FakeMarathon, user: &str, password: &str) -> String {
    format!("http://{user}:{password}@{}", marathon.addr())
}

/// One run of the binary (real unless `args` say `--dry-run`) with a clean environment.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["--group", "*", "--skip-validation", "--timeout", "5"])
        .arg("--haproxy-config")
        .arg(dir.join("haproxy.cfg"))
        .arg("--metrics-file")
        .arg(dir.join("metrics.prom"))
        .args(["--reload-command", "true"])
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("running the binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Nothing the run printed or left beside the config holds the password.
fn assert_no_secret_anywhere(dir: &Path, output: &Output) {
    assert!(!stderr(output).contains(SECRET), "{}", stderr(output));
    assert!(!String::from_utf8_lossy(&output.stdout).contains(SECRET));
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            assert!(
                !text.contains(SECRET),
                "{} holds the password",
                path.display()
            );
        }
    }
}

#[test]
fn a_password_in_the_url_is_used_and_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let marathon = marathon_wanting("admin", SECRET);
    let url = with_userinfo(&marathon, "admin", SECRET);
    let output = run(dir.path(), &["-m", &url], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(dir.path().join("haproxy.cfg").exists());
    let log = stderr(&output);
    assert!(
        log.contains(&format!(
            "warning: Marathon credentials are sent to {} over plain http, readable by anyone \
             on the path; use an https:// URL",
            marathon.url()
        )),
        "{log}"
    );
    assert_eq!(
        log.matches("over plain http").count(),
        1,
        "once per run: {log}"
    );
    assert_no_secret_anywhere(dir.path(), &output);
}

#[test]
fn a_refused_password_in_the_url_is_named_by_the_url_redacted_in_log_status_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let marathon = marathon_wanting("admin", "the-right-one");
    let url = with_userinfo(&marathon, "admin", SECRET);
    let output = run(dir.path(), &["-m", &url], &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let log = stderr(&output);
    let redacted = format!("http://admin:***@{}", marathon.addr());
    assert!(
        log.contains(&format!(
            "{redacted}: GET /v2/apps: HTTP 401 Unauthorized: authentication failed: Marathon \
             refused the credentials from the URL {redacted}"
        )),
        "{log}"
    );
    assert!(!log.contains("give them with"), "{log}");
    let record = std::fs::read_to_string(dir.path().join("haproxy.cfg.status")).unwrap();
    assert!(record.contains(&redacted), "{record}");
    assert_no_secret_anywhere(dir.path(), &output);
}

#[test]
fn a_refusal_names_the_flag_the_variable_or_the_file_the_credentials_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let marathon = marathon_wanting("lb", "the-right-one");
    let wrong = format!("lb:{SECRET}");
    let refused = |output: &Output| {
        let log = stderr(output);
        assert_eq!(output.status.code(), Some(3), "{log}");
        assert!(!log.contains("give them with"), "{log}");
        assert!(!log.contains(SECRET), "{log}");
        log
    };

    let flag = run(
        dir.path(),
        &["-m", &marathon.url(), "--auth-credentials", &wrong],
        &[],
    );
    assert!(refused(&flag).contains("refused the credentials from --auth-credentials"));

    let variable = [("HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS", wrong.as_str())];
    let env = run(dir.path(), &["-m", &marathon.url()], &variable);
    assert!(refused(&env).contains(
        "refused the credentials from the environment (HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS)"
    ));

    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("marathon.credentials");
    std::fs::write(&file, format!("{wrong}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shown = file.display().to_string();
    let from_file = run(
        dir.path(),
        &[
            "-m",
            &marathon.url(),
            "--marathon-auth-credential-file",
            &shown,
        ],
        &[],
    );
    let log = refused(&from_file);
    assert!(
        log.contains(&format!(
            "refused the credentials from the credentials file {shown} \
             (--marathon-auth-credential-file)"
        )),
        "{log}"
    );
    assert!(
        !log.contains("has mode"),
        "a private file draws no warning: {log}"
    );
    assert_no_secret_anywhere(dir.path(), &from_file);
}

#[test]
fn a_credentials_file_that_does_not_parse_is_named_and_a_readable_one_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let marathon = marathon_wanting("lb", "pw");
    let file = dir.path().join("creds");
    let shown = file.display().to_string();
    let args = [
        "-m",
        &marathon.url(),
        "--marathon-auth-credential-file",
        &shown,
        "--dry-run",
    ];

    std::fs::write(&file, "no colon here\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = run(dir.path(), &args, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!(
            "the Marathon credentials file {shown} (first line): Marathon credentials must \
             look like user:password"
        )),
        "{}",
        stderr(&output)
    );

    std::fs::write(&file, "lb:pw\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = run(dir.path(), &args, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!(
            "warning: the Marathon credentials file {shown} has mode 0644: group or others can \
             read the password; make it private with chmod 600"
        )),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_redirect_to_another_origin_is_followed_without_the_credentials_and_said() {
    let dir = tempfile::tempdir().unwrap();
    let leader = FakeMarathon::start();
    leader.set_state(APPS, TASKS);
    let follower = FakeMarathon::start();
    let elsewhere = format!("http://localhost:{}", leader.addr().port());
    follower.set_behaviour(Behaviour::Redirect(elsewhere.clone()));
    let credentials = format!("lb:{SECRET}");
    let args = [
        "-m",
        &follower.url(),
        "--auth-credentials",
        &credentials,
        "--dry-run",
    ];
    let output = run(dir.path(), &args, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(leader.requests().iter().all(|r| r.authorization.is_none()));
    let log = stderr(&output);
    let said = format!(
        "warning: {}/v2/apps redirected to {elsewhere}: followed without the Marathon \
         credentials (not one of the --marathon URLs; add it there to send them)",
        follower.url()
    );
    assert!(log.contains(&said), "{log}");

    // Listed, the leader's origin gets them.
    let both = format!("{},{elsewhere}", follower.url());
    let args = ["-m", &both, "--auth-credentials", &credentials, "--dry-run"];
    let output = run(dir.path(), &args, &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(leader.requests().iter().any(|r| r.authorization.is_some()));
    assert!(
        !stderr(&output).contains("followed without"),
        "{}",
        stderr(&output)
    );
}
