//! Bad answers through the binary against the stand-in Marathon on 127.0.0.1: over
//! `--max-apps`, `--max-tasks` or `--max-response-size`, crafted to blow up in memory, without
//! the `apps` or `tasks` list (issue 10), or not JSON at all (issue 13). Each is a bad answer
//! from that URL: a warning names the URL and what was wrong, the next URL is asked, and the
//! run exits 3 when none answers. Also: an agent given as an IPv6 literal (issue 12).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::marathon::{Behaviour, FakeMarathon, APPS_PATH, TASKS_PATH};

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

const APPS: &str = r#"{"apps": [
  {"id": "/web", "labels": {"HAPROXY_GROUP": "external"}, "portDefinitions": [{"port": 10000}]}
]}"#;
const TASKS: &str = r#"{"tasks": [
  {"id": "web.1", "appId": "/web", "host": "10.0.0.1", "ports": [31000], "state": "TASK_RUNNING"}
]}"#;

fn serving(apps: &str, tasks: &str) -> FakeMarathon {
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);
    marathon
}

/// A dry run of the binary with a clean environment (no settings of the caller's leak in).
fn dry_run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "--group",
            "*",
            "--dry-run",
            "--skip-validation",
            "--timeout",
            "5",
        ])
        .arg("--haproxy-config")
        .arg(dir.join("haproxy.cfg"))
        .args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("running the binary")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The run used `good` after `bad` failed with `expected` in its warning.
fn assert_failed_over(output: &Output, bad: &str, good: &str, expected: &str) {
    let log = stderr(output);
    assert_eq!(output.status.code(), Some(0), "{log}");
    let warning = log
        .lines()
        .find(|line| line.contains(&format!("Marathon {bad}: ")))
        .unwrap_or_else(|| panic!("no failover warning for {bad} in {log}"));
    assert!(warning.contains(expected), "{warning}");
    assert!(warning.ends_with(&format!("; used {good}")), "{warning}");
    let config = String::from_utf8_lossy(&output.stdout);
    assert!(
        config.contains("server 10_0_0_1_31000 10.0.0.1:31000"),
        "{config}"
    );
}

fn apps(count: usize) -> String {
    let apps: Vec<String> = (0..count)
        .map(|i| format!(r#"{{"id": "/a{i}"}}"#))
        .collect();
    format!(r#"{{"apps": [{}]}}"#, apps.join(","))
}

#[test]
fn more_apps_than_max_apps_is_a_bad_answer_and_the_next_url_is_asked() {
    let dir = tempfile::tempdir().unwrap();
    let crowded = serving(&apps(3), TASKS);
    let good = serving(APPS, TASKS);
    let sources = format!("{},{}", crowded.url(), good.url());
    let output = dry_run(dir.path(), &["-m", &sources, "--max-apps", "2"], &[]);
    assert_failed_over(
        &output,
        &crowded.url(),
        &good.url(),
        "GET /v2/apps: more than 2 apps (the limit set by --max-apps)",
    );
    assert_eq!(crowded.request_count(TASKS_PATH), 0);
}

#[test]
fn the_limits_come_from_the_environment_too_and_none_answering_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let crowded = serving(APPS, r#"{"tasks": [{"id": "a"}, {"id": "b"}]}"#);
    let output = dry_run(
        dir.path(),
        &["-m", &crowded.url()],
        &[("HAPROXY_MARATHON_SYNC_MAX_TASKS", "1")],
    );
    let log = stderr(&output);
    assert_eq!(output.status.code(), Some(3), "{log}");
    assert!(
        log.contains(&format!(
            "{}: GET /v2/tasks: more than 1 tasks (the limit set by --max-tasks)",
            crowded.url()
        )),
        "{log}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn an_answer_over_max_response_size_is_a_bad_answer() {
    let dir = tempfile::tempdir().unwrap();
    let big = serving(&apps(100), TASKS);
    let good = serving(APPS, TASKS);
    let sources = format!("{},{}", big.url(), good.url());
    let output = dry_run(
        dir.path(),
        &["-m", &sources, "--max-response-size", "1K"],
        &[],
    );
    assert_failed_over(
        &output,
        &big.url(),
        &good.url(),
        "GET /v2/apps: the answer is larger than the limit of 1024 bytes",
    );
    let bad_size = dry_run(
        dir.path(),
        &["-m", &good.url(), "--max-response-size", "1X"],
        &[],
    );
    // A value that does not parse is a usage error, like every other bad flag value.
    assert_eq!(bad_size.status.code(), Some(2), "{}", stderr(&bad_size));
    assert!(stderr(&bad_size).contains("--max-response-size"));
}

#[test]
fn a_crafted_answer_that_would_explode_in_memory_is_refused_while_read() {
    let dir = tempfile::tempdir().unwrap();
    // 200,000 empty health checks: 600 KB of JSON, once 40 MB of structs.
    let checks = vec!["{}"; 200_000].join(",");
    let crafted = serving(
        &format!(r#"{{"apps": [{{"id": "/x", "healthChecks": [{checks}]}}]}}"#),
        TASKS,
    );
    let good = serving(APPS, TASKS);
    let sources = format!("{},{}", crafted.url(), good.url());
    let output = dry_run(dir.path(), &["-m", &sources], &[]);
    assert_failed_over(
        &output,
        &crafted.url(),
        &good.url(),
        "GET /v2/apps: the answer would take more than 4 bytes of memory per byte once read",
    );
}

#[test]
fn answers_without_their_list_are_bad_answers_not_an_empty_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let good = serving(APPS, TASKS);
    let cases = [
        (
            "{}",
            TASKS,
            "GET /v2/apps: the object has no \"apps\" list: not Marathon's answer",
        ),
        (
            r#"{"apps": null}"#,
            TASKS,
            "GET /v2/apps: \"apps\" is null, not a list: not Marathon's answer",
        ),
        (
            APPS,
            r#"{"message": "ok"}"#,
            "GET /v2/tasks: the object has no \"tasks\" list: not Marathon's answer",
        ),
        (
            APPS,
            r#"{"tasks": null}"#,
            "GET /v2/tasks: \"tasks\" is null, not a list",
        ),
        (
            "[]",
            TASKS,
            "GET /v2/apps: invalid type: sequence, expected a JSON object",
        ),
    ];
    for (apps, tasks, expected) in cases {
        let bad = serving(apps, tasks);
        let sources = format!("{},{}", bad.url(), good.url());
        let output = dry_run(dir.path(), &["-m", &sources], &[]);
        assert_failed_over(&output, &bad.url(), &good.url(), expected);

        let alone = dry_run(dir.path(), &["-m", &bad.url()], &[]);
        assert_eq!(alone.status.code(), Some(3), "{}", stderr(&alone));
    }
}

#[test]
fn a_snapshot_obeys_the_same_limits() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("snapshot");
    std::fs::create_dir(&snapshot).unwrap();
    std::fs::write(snapshot.join("apps.json"), apps(3)).unwrap();
    std::fs::write(snapshot.join("tasks.json"), TASKS).unwrap();
    let shown = snapshot.display().to_string();
    let output = dry_run(dir.path(), &["-m", &shown, "--max-apps", "2"], &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("apps.json: more than 2 apps (the limit set by --max-apps)"),
        "{}",
        stderr(&output)
    );
    let output = dry_run(
        dir.path(),
        &["-m", &shown, "--max-response-size", "64"],
        &[],
    );
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains("larger than the limit of 64 bytes (--max-response-size)"),
        "{}",
        stderr(&output)
    );
    std::fs::write(snapshot.join("apps.json"), "{}").unwrap();
    let output = dry_run(dir.path(), &["-m", &shown], &[]);
    assert_eq!(output.status.code(), Some(3));
    assert!(stderr(&output).contains("has no \"apps\" list"));
}

/// A server that answers every request with a login page, as a proxy in front of Marathon
/// might; serves `count` connections at most, each bounded in time.
fn html_server(count: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(count) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let body = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[test]
fn an_html_answer_says_it_was_html_and_how_it_began_capped_at_64_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let login_page = html_server(1);
    let good = serving(APPS, TASKS);
    let sources = format!("{login_page},{}", good.url());
    let output = dry_run(dir.path(), &["-m", &sources], &[]);
    assert_failed_over(
        &output,
        &login_page,
        &good.url(),
        "GET /v2/apps: not JSON (Content-Type: text/html; charset=utf-8): it begins \
         \"<!DOCTYPE html>\\n<html><head><title>Sign in</title></head></html>…\"",
    );
}

#[test]
fn json_logs_name_the_url_that_failed_and_the_metric_reason() {
    let dir = tempfile::tempdir().unwrap();
    let down = FakeMarathon::start();
    down.set_behaviour(Behaviour::Status(503));
    let good = serving(APPS, TASKS);
    let sources = format!("{},{}", down.url(), good.url());
    let output = dry_run(dir.path(), &["-m", &sources, "--log-format", "json"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let warning: serde_json::Value = stderr(&output)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| {
            line["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("Marathon "))
        })
        .expect("a failover warning");
    assert_eq!(warning["source"], down.url().as_str(), "{warning}");
    assert_eq!(warning["failure"], "marathon_unavailable", "{warning}");
    assert_eq!(good.request_count(APPS_PATH), 1);

    let alone = dry_run(
        dir.path(),
        &["-m", &down.url(), "--log-format", "json"],
        &[],
    );
    assert_eq!(alone.status.code(), Some(3));
    let error: serde_json::Value = stderr(&alone)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|line| line["level"] == "error")
        .expect("an error line");
    assert_eq!(error["failure"], "marathon_unavailable", "{error}");
}

#[test]
fn an_agent_registered_by_an_ipv6_literal_is_said_to_be_ipv6() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = r#"{"tasks": [
      {"id": "web.1", "appId": "/web", "host": "10.0.0.1", "ports": [31000], "state": "TASK_RUNNING"},
      {"id": "web.2", "appId": "/web", "host": "fd00::7", "ports": [31001], "state": "TASK_RUNNING"}
    ]}"#;
    let marathon = serving(APPS, tasks);
    let output = dry_run(dir.path(), &["-m", &marathon.url()], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(
            "app /web: agent \"fd00::7\" is an IPv6 address; its tasks are skipped, as in \
             marathon-lb, which reaches agents over IPv4 only"
        ),
        "{}",
        stderr(&output)
    );
    let config = String::from_utf8_lossy(&output.stdout);
    assert!(
        config.contains("10.0.0.1:31000") && !config.contains("fd00"),
        "{config}"
    );
}
