//! Runtime updates through the binary: cron-style runs (one per Marathon change) against a
//! stand-in Marathon and a real master-worker HAProxy given as `--haproxy-master-socket`.
//! Server-only changes go live through the master CLI with the worker kept (no reload) and no
//! request failing under load; structural changes, sticky apps, `--no-runtime-api` and a
//! runtime command HAProxy refuses all reload, and HAProxy ends running what is on disk.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use haproxy_marathon_sync::apply::runtime::parse_servers_state;
use support::backend::{http_get, Backend};
use support::haproxy::{free_port, wait_for, HAPROXY_DEADLINE};
use support::load::Load;
use support::runtime_rig::Rig;
use support::sync::Sync;
use support::workspace::web_app;

#[test]
fn scale_up_scale_down_and_a_task_move_run_live_under_load_without_a_reload() {
    let backends: Vec<Backend> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let (a, b, c, d) = (&backends[0], &backends[1], &backends[2], &backends[3]);
    let rig = Rig::start();
    rig.marathon_runs(&[a]);
    let first = rig.applied(&[]);
    assert!(first.contains("(reloaded: "), "a new app reloads: {first}");
    rig.assert_reloaded(1);
    rig.serves_exactly(&["a"]);
    let worker = rig.worker();
    let load = Load::start(rig.service_port, 3, 1, Duration::from_secs(120));

    let steps: [(&str, Vec<&Backend>, Vec<&str>); 4] = [
        ("scale up", vec![a, b, c], vec!["a", "b", "c"]),
        ("scale down", vec![b], vec!["b"]),
        ("task move", vec![d], vec!["d"]),
        ("scale up again", vec![d, a], vec!["d", "a"]),
    ];
    for (step, running, names) in steps {
        rig.marathon_runs(&running);
        let summary = rig.applied(&[]);
        assert!(
            summary.contains("(runtime, no reload)"),
            "{step}: {summary}"
        );
        rig.serves_exactly(&names);
        assert_eq!(rig.worker(), worker, "{step}: HAProxy was reloaded");
        rig.file_matches_a_fresh_render();
    }
    let tally = load.stop();
    assert_eq!(
        (tally.failures, tally.non_200),
        (0, 0),
        "requests failed during runtime updates: {:#?}",
        tally.described
    );
    assert!(
        tally.requests > 20,
        "too little load to prove anything: {tally:?}"
    );
    assert_eq!(
        rig.haproxy.reloads(),
        Some(1),
        "only the first run reloaded"
    );
    assert!(!rig.workspace.path("haproxy.cfg.runtime-pending").exists());

    // The record counts them apart: one reload, four runtime updates.
    let status = Sync::new()
        .arg("status")
        .config(rig.workspace.config())
        .run();
    assert!(
        status.stdout.contains("(runtime, no reload)")
            && status.stdout.contains("reloads 1, runtime updates 4"),
        "{}{}",
        status.stdout,
        status.stderr
    );

    // A structural change (a second app) still reloads, and both apps serve.
    let (apps, tasks) = web_app(rig.service_port, &[d.port, a.port]);
    let other_port = free_port();
    let other_app = format!(
        r#",{{"id":"/other","instances":1,"labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"}},"networks":[{{"mode":"host"}}],"portDefinitions":[{{"port":{other_port},"protocol":"tcp"}}],"healthChecks":[]}}]}}"#
    );
    let other_task = format!(
        r#",{{"id":"other.0","appId":"/other","host":"127.0.0.1","ports":[{}],"state":"TASK_RUNNING"}}]}}"#,
        b.port
    );
    let apps = apps.strip_suffix("]}").unwrap().to_string() + &other_app;
    let tasks = tasks.strip_suffix("]}").unwrap().to_string() + &other_task;
    rig.marathon.set_state(apps, tasks);
    let summary = rig.applied(&[]);
    assert!(summary.contains("(reloaded: "), "{summary}");
    rig.assert_reloaded(2);
    rig.serves_exactly(&["d", "a"]);
    assert!(wait_for(HAPROXY_DEADLINE, || {
        http_get(other_port, "/").is_ok_and(|(code, body)| code == 200 && body == "b")
    }));
    rig.file_matches_a_fresh_render();
}

#[test]
fn no_runtime_api_reloads_every_change() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    rig.marathon_runs(&[&a]);
    rig.applied(&[]);
    rig.assert_reloaded(1);
    rig.marathon_runs(&[&a, &b]);
    let summary = rig.applied(&["--no-runtime-api"]);
    assert!(
        summary.contains("(reloaded: --no-runtime-api)"),
        "{summary}"
    );
    rig.assert_reloaded(2);
    rig.serves_exactly(&["a", "b"]);
    rig.file_matches_a_fresh_render();
}

#[test]
fn a_sticky_app_reloads() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    let sticky = |backends: &[&Backend]| {
        let ports: Vec<u16> = backends.iter().map(|b| b.port).collect();
        let (apps, tasks) = web_app(rig.service_port, &ports);
        let apps = apps.replace(
            r#""HAPROXY_0_MODE":"http""#,
            r#""HAPROXY_0_MODE":"http","HAPROXY_0_STICKY":"true""#,
        );
        rig.marathon.set_state(apps, tasks);
    };
    sticky(&[&a]);
    rig.applied(&[]);
    rig.assert_reloaded(1);
    sticky(&[&a, &b]);
    let summary = rig.applied(&[]);
    assert!(summary.contains("(reloaded: "), "{summary}");
    assert!(!summary.contains("runtime"), "{summary}");
    rig.assert_reloaded(2);
    rig.serves_exactly(&["a", "b"]);
    rig.file_matches_a_fresh_render();
}

#[test]
fn a_runtime_command_haproxy_refuses_falls_back_to_a_reload_of_the_file() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    rig.marathon_runs(&[&a]);
    rig.applied(&[]);
    rig.assert_reloaded(1);

    // The server the next run adds is already in the worker under its name, elsewhere: the
    // executor finds the mismatch and the run reloads instead.
    rig.marathon_runs(&[&a, &b]);
    let preview = rig.run(&["--dry-run"]);
    preview.assert_success();
    let line = preview
        .stdout
        .lines()
        .find(|line| line.contains(&b.address()))
        .unwrap_or_else(|| panic!("no server line for b:\n{}", preview.stdout))
        .to_string();
    let name = line.split_whitespace().nth(1).unwrap().to_string();
    let backend = preview
        .stdout
        .lines()
        .take_while(|l| *l != line)
        .filter_map(|l| l.strip_prefix("backend "))
        .last()
        .unwrap()
        .to_string();
    let added = rig
        .haproxy
        .command(&format!("@1 add server {backend}/{name} 127.0.0.1:9"));
    assert!(added.contains("New server registered."), "{added}");

    let summary = rig.applied(&[]);
    assert!(
        summary.contains("(reloaded: the runtime update failed: "),
        "{summary}"
    );
    rig.assert_reloaded(2);
    rig.serves_exactly(&["a", "b"]);
    let state = rig
        .haproxy
        .command(&format!("@1 show servers state {backend}"));
    let state = state.trim_start_matches(|c: char| c != '1');
    let running = parse_servers_state(state, &backend).unwrap_or_else(|| panic!("{state}"));
    let ports: BTreeSet<u16> = running.iter().map(|s| s.port).collect();
    assert_eq!(
        ports,
        BTreeSet::from([a.port, b.port]),
        "HAProxy runs the file's servers: {running:?}"
    );
    assert!(!rig.workspace.path("haproxy.cfg.runtime-pending").exists());
    rig.file_matches_a_fresh_render();
}

#[test]
fn a_leftover_runtime_marker_reloads_and_min_reload_interval_never_defers_a_runtime_update() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    rig.marathon_runs(&[&a]);
    rig.applied(&["--min-reload-interval", "1h"]);
    rig.assert_reloaded(1);

    // Within the interval, a server-only change still goes live.
    rig.marathon_runs(&[&a, &b]);
    let summary = rig.applied(&["--min-reload-interval", "1h"]);
    assert!(summary.contains("(runtime, no reload)"), "{summary}");
    rig.serves_exactly(&["a", "b"]);
    assert_eq!(rig.haproxy.reloads(), Some(1));

    // A run killed during a runtime update leaves the marker: the next run reloads, even with
    // nothing to change, and clears it.
    let marker = rig.workspace.path("haproxy.cfg.runtime-pending");
    fs::write(&marker, "").unwrap();
    let run = rig.run(&[]);
    run.assert_success()
        .assert_stderr_contains("a previous run was stopped during a runtime update");
    rig.assert_reloaded(2);
    assert!(!marker.exists());
    rig.serves_exactly(&["a", "b"]);
}
