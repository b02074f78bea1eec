//! A removed server still holding a connection, through the binary and a real master-worker
//! HAProxy: the cron-style run that removes it leaves it in maintenance (recorded in
//! `<config>.runtime-deletions`, shown by `status`) while its request completes, and a later
//! run with nothing to change deletes it once the request has ended, without a reload.

mod support;

use std::fs;
use std::thread;
use std::time::Duration;

use haproxy_marathon_sync::apply::runtime::{parse_servers_state, RunningServer};
use support::backend::{http_get, http_get_within, Backend, SlowBackend};
use support::haproxy::HAPROXY_DEADLINE;
use support::runtime_rig::Rig;
use support::sync::Sync;
use support::workspace::Workspace;

/// The tests' head with timeouts well past a run's length, so the held request outlives it.
const LONG_TIMEOUTS_HEAD: &str = "global\n  maxconn 1000\n  hard-stop-after 60s\n\ndefaults\n  \
                                  mode http\n  timeout connect 2s\n  timeout client 60s\n  \
                                  timeout server 60s\n";

/// How long the held request's client waits for its answer: within the head's timeouts, past
/// the several runs the test makes meanwhile on a loaded machine.
const HELD_REQUEST_WAIT: Duration = Duration::from_secs(50);

/// Most runs the test makes, waiting for HAProxy to let go of the ended connection.
const MAX_RETRY_RUNS: usize = 30;

/// `(backend, server)` of the server line at `address` in the config.
fn server_at(config: &str, address: &str) -> (String, String) {
    let mut backend = None;
    for line in config.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["backend", name, ..] => backend = Some(name.to_string()),
            ["server", name, at, ..] if *at == address => {
                return (
                    backend.expect("a server outside a backend"),
                    name.to_string(),
                )
            }
            _ => {}
        }
    }
    panic!("no server at {address} in:\n{config}")
}

/// The servers HAProxy's worker runs in `backend`.
fn running(rig: &Rig, backend: &str) -> Vec<RunningServer> {
    let answer = rig
        .haproxy
        .command(&format!("@1 show servers state {backend}"));
    let table = answer.trim_start_matches(|c: char| c != '1');
    parse_servers_state(table, backend).unwrap_or_else(|| panic!("{answer}"))
}

#[test]
fn a_removed_server_with_a_request_in_flight_is_deleted_by_a_later_unchanged_run() {
    let slow = SlowBackend::start();
    let fast = Backend::start("fast");
    let rig = Rig::start_in(Workspace::with_head(LONG_TIMEOUTS_HEAD));
    rig.marathon_runs_ports(&[slow.port]);
    let first = rig.applied(&[]);
    assert!(first.contains("(reloaded: "), "a new app reloads: {first}");
    rig.assert_reloaded(1);
    let worker = rig.worker();
    let config = fs::read_to_string(rig.workspace.config()).unwrap();
    let (backend, name) = server_at(&config, &format!("127.0.0.1:{}", slow.port));
    let what = format!("{backend}/{name}");

    // A request the slow task holds until the test releases it.
    let port = rig.service_port;
    let request = thread::spawn(move || http_get_within(port, "/", HELD_REQUEST_WAIT));
    slow.accepted
        .recv_timeout(HAPROXY_DEADLINE)
        .expect("the request never reached the slow task");

    // The slow task is gone from Marathon: the run adds the new one live and leaves the old
    // one in maintenance, its request still in flight.
    rig.marathon_runs(&[&fast]);
    let summary = rig.applied(&[]);
    assert!(summary.contains("(runtime, no reload)"), "{summary}");
    assert!(
        summary.contains(&format!(
            "left in maintenance until their connections end, deleted by a later run: {what}"
        )),
        "{summary}"
    );
    let record = rig.workspace.path("haproxy.cfg.runtime-deletions");
    let recorded = fs::read_to_string(&record).expect("the pending deletion is recorded");
    assert!(
        recorded.contains(&what) && recorded.contains(&worker.to_string()),
        "{recorded}"
    );
    let slow_server = running(&rig, &backend)
        .into_iter()
        .find(|s| s.name == name)
        .expect("the slow server is kept while its request is in flight");
    assert_eq!(slow_server.admin_state & 1, 1, "in forced maintenance");
    assert_eq!(
        http_get(rig.service_port, "/").unwrap(),
        (200, "fast".into())
    );

    // While it is pending, an unchanged run says so in one line and `status` shows it.
    let unchanged = rig.run(&[]);
    unchanged.assert_success();
    assert_eq!(
        unchanged.stderr,
        format!(
            "haproxy-marathon-sync: still in maintenance until their connections end, deletion \
             retried by the next run: {what}\n"
        )
    );
    let status = Sync::new()
        .arg("status")
        .config(rig.workspace.config())
        .run();
    assert!(
        status.stdout.contains(&format!(
            "to delete:    {what} (in maintenance until their connections end, worker {worker})"
        )),
        "{}{}",
        status.stdout,
        status.stderr
    );
    let json = Sync::new()
        .args(["status", "--json"])
        .config(rig.workspace.config())
        .run();
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect(&json.stdout);
    assert_eq!(
        json["pending_deletions"],
        serde_json::json!({"worker": worker, "servers": [what]}),
        "{json}"
    );
    let dry = rig.run(&["--dry-run"]);
    dry.assert_success()
        .assert_stderr_contains(&format!("by an earlier runtime update: {what}"));

    slow.release.send(()).unwrap();
    let answer = request
        .join()
        .unwrap()
        .expect("the request in flight failed");
    assert_eq!(answer, (200, "slow".to_string()));

    // Marathon and the config unchanged: a later run deletes it (HAProxy may take a moment to
    // let go of the ended connection, so a run may still find it pending).
    let deleted = format!(
        "haproxy-marathon-sync: deleted the servers an earlier runtime update left in \
         maintenance: {what}\n"
    );
    let mut stderr = Vec::new();
    for _ in 0..MAX_RETRY_RUNS {
        let run = rig.run(&[]);
        run.assert_success();
        stderr.push(run.stderr.clone());
        if run.stderr == deleted {
            break;
        }
        assert_eq!(run.stderr, unchanged.stderr, "neither deleted nor pending");
    }
    assert_eq!(stderr.last(), Some(&deleted), "{stderr:#?}");
    assert!(!record.exists(), "the record goes once nothing is pending");
    assert!(running(&rig, &backend).iter().all(|s| s.name != name));
    assert_eq!(rig.worker(), worker, "HAProxy was reloaded");
    assert_eq!(rig.haproxy.reloads(), Some(1));

    // Then unchanged runs are silent again, `status` no longer lists it, and the file is a
    // fresh render that HAProxy runs.
    let quiet = rig.run(&[]);
    quiet.assert_success();
    assert_eq!(quiet.stderr, "");
    let status = Sync::new()
        .arg("status")
        .config(rig.workspace.config())
        .run();
    assert!(!status.stdout.contains("to delete:"), "{}", status.stdout);
    rig.serves_exactly(&["fast"]);
    rig.file_matches_a_fresh_render();
}

#[test]
fn a_reload_makes_the_pending_deletions_moot() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    rig.marathon_runs(&[&a, &b]);
    rig.applied(&[]);
    rig.assert_reloaded(1);
    let config = fs::read_to_string(rig.workspace.config()).unwrap();
    let (backend, name) = server_at(&config, &b.address());
    let worker = rig.worker();

    // A record left by an earlier run for this worker, for a server the file still has: not
    // ours to delete, so the run drops it and HAProxy keeps serving the server.
    let record = rig.workspace.path("haproxy.cfg.runtime-deletions");
    fs::write(
        &record,
        format!(r#"{{"worker":{worker},"servers":["{backend}/{name}"]}}"#),
    )
    .unwrap();
    let run = rig.run(&[]);
    run.assert_success();
    assert_eq!(run.stderr, "");
    assert!(!record.exists());
    rig.serves_exactly(&["a", "b"]);

    // A record for a worker that is gone (HAProxy was reloaded since) is dropped unread.
    fs::write(
        &record,
        format!(
            r#"{{"worker":{},"servers":["{backend}/{name}"]}}"#,
            worker + 100_000
        ),
    )
    .unwrap();
    let run = rig.run(&[]);
    run.assert_success();
    assert_eq!(run.stderr, "");
    assert!(!record.exists());
    assert_eq!(rig.worker(), worker);
    rig.serves_exactly(&["a", "b"]);
}
