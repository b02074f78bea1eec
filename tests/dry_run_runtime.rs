//! `--dry-run` says which way the real run would go, runtime or reload, and why, with the real
//! run's own decision: proven against a real master-worker HAProxy by making the real run
//! right after each dry run and comparing.

mod support;

use support::backend::Backend;
use support::runtime_rig::Rig;

/// The dry run's prediction: its one line on stderr, without the program's name.
fn prediction(rig: &Rig, extra: &[&str]) -> String {
    let mut flags = vec!["--dry-run"];
    flags.extend_from_slice(extra);
    let run = rig.run(&flags);
    run.assert_success();
    let line = run
        .stderr
        .lines()
        .find(|line| line.contains("would "))
        .unwrap_or_else(|| panic!("no prediction:\n{}", run.stderr));
    line.trim_start_matches("haproxy-marathon-sync: ")
        .to_string()
}

/// A prediction without the changed backends it lists after it (`; /web (web_PORT): ...`).
fn without_changes(line: &str) -> &str {
    line.split("; /web ").next().unwrap()
}

/// What the summary line says in its closing parentheses, before any warning.
fn how(summary: &str) -> &str {
    let summary = summary.split("; ").next().unwrap();
    let open = summary.find(" (").expect(summary);
    summary[open + 2..].strip_suffix(')').expect(summary)
}

#[test]
fn a_server_only_change_is_predicted_live_and_goes_live_without_a_reload() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    rig.marathon_runs(&[&a]);
    // The first run replaces the placeholder config HAProxy started with: a reload.
    let first = prediction(&rig, &[]);
    let why = first
        .strip_prefix("would apply: backends +1 -1, servers +1 -0 (reload needed: ")
        .and_then(|rest| rest.split_once("); ").map(|(why, _)| why))
        .unwrap_or_else(|| panic!("{first}"));
    let summary = rig.applied(&["--min-reload-interval", "1h"]);
    assert_eq!(how(&summary), format!("reloaded: {why}"), "{summary}");
    rig.assert_reloaded(1);
    let worker = rig.worker();

    // Within --min-reload-interval: a runtime update is never deferred, and the dry run knows.
    rig.marathon_runs(&[&a, &b]);
    for extra in [&["--diff"][..], &[][..]] {
        let mut flags = extra.to_vec();
        flags.extend(["--min-reload-interval", "1h"]);
        assert_eq!(
            without_changes(&prediction(&rig, &flags)),
            "would apply: backends +0 -0, servers +1 -0 (runtime, no reload)"
        );
    }
    let summary = rig.applied(&["--min-reload-interval", "1h"]);
    assert_eq!(how(&summary), "runtime, no reload", "{summary}");
    assert_eq!(rig.worker(), worker, "HAProxy was reloaded");
    assert_eq!(rig.haproxy.reloads(), Some(1));
    rig.serves_exactly(&["a", "b"]);
    rig.file_matches_a_fresh_render();
}

#[test]
fn a_structural_change_is_predicted_with_the_real_runs_reason() {
    let a = Backend::start("a");
    let rig = Rig::start();
    rig.marathon_runs(&[&a]);
    rig.applied(&["--min-reload-interval", "1h"]);
    rig.assert_reloaded(1);

    // A changed label: the backend's balance.
    let (apps, tasks) = support::workspace::web_app(rig.service_port, &[a.port]);
    let apps = apps.replace(
        r#""HAPROXY_0_MODE":"http""#,
        r#""HAPROXY_0_MODE":"http","HAPROXY_0_BALANCE":"leastconn""#,
    );
    rig.marathon.set_state(apps, tasks);
    let deferred = prediction(&rig, &["--min-reload-interval", "1h"]);
    assert!(
        deferred.starts_with("would defer the change (backends +0 -0, servers +0 -0) until ")
            && deferred.contains(" (--min-reload-interval; reload needed: backend web_"),
        "{deferred}"
    );
    let predicted = prediction(&rig, &["--diff"]);
    let why = predicted
        .strip_prefix("would apply: backends +0 -0, servers +0 -0 (reload needed: ")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{predicted}"));
    assert!(why.contains("balance leastconn"), "{why}");
    let summary = rig.applied(&[]);
    assert_eq!(how(&summary), format!("reloaded: {why}"), "{summary}");
    rig.assert_reloaded(2);
    rig.serves_exactly(&["a"]);
    rig.file_matches_a_fresh_render();

    // With runtime updates off, the dry run says so.
    let b = Backend::start("b");
    let (apps, tasks) = support::workspace::web_app(rig.service_port, &[a.port, b.port]);
    let apps = apps.replace(
        r#""HAPROXY_0_MODE":"http""#,
        r#""HAPROXY_0_MODE":"http","HAPROXY_0_BALANCE":"leastconn""#,
    );
    rig.marathon.set_state(apps, tasks);
    assert_eq!(
        without_changes(&prediction(&rig, &["--no-runtime-api"])),
        "would apply: backends +0 -0, servers +1 -0 (reload needed: --no-runtime-api)"
    );
}

#[test]
fn without_a_master_socket_the_dry_run_says_reload() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    rig.marathon_runs(&[&a]);
    rig.applied(&[]);
    rig.assert_reloaded(1);
    rig.marathon_runs(&[&a, &b]);
    let run = rig
        .workspace
        .run(&rig.marathon.url(), "false", &["--dry-run", "--diff"]);
    run.assert_success();
    assert!(
        run.stderr.starts_with(
            "haproxy-marathon-sync: would apply: backends +0 -0, servers +1 -0 (reload: no \
             --haproxy-master-socket); "
        ),
        "{}",
        run.stderr
    );
    // With the socket, the same change would go live.
    assert_eq!(
        without_changes(&prediction(&rig, &[])),
        "would apply: backends +0 -0, servers +1 -0 (runtime, no reload)"
    );
}

/// A run killed after putting its file in place and before HAProxy confirmed the reload leaves
/// the worker on an older config than the file: a server-only change against the file must
/// still reload, or the worker would be edited against a config it never loaded.
#[test]
fn a_leftover_reload_marker_turns_a_server_only_change_into_a_reload() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    rig.marathon_runs(&[&a]);
    rig.applied(&[]);
    rig.assert_reloaded(1);
    let marker = rig.workspace.path("haproxy.cfg.reload-pending");
    std::fs::write(&marker, "").unwrap();
    rig.marathon_runs(&[&a, &b]);
    assert_eq!(
        without_changes(&prediction(&rig, &[])),
        "would apply: backends +0 -0, servers +1 -0 (reload needed: a previous run was \
         stopped before its reload was confirmed)"
    );
    let summary = rig.applied(&[]);
    assert_eq!(
        how(&summary),
        "reloaded: a previous run was stopped before its reload was confirmed",
        "{summary}"
    );
    rig.assert_reloaded(2);
    assert!(!marker.exists());
}

#[test]
fn a_leftover_runtime_marker_is_predicted_as_the_reload_it_causes() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let rig = Rig::start();
    rig.marathon_runs(&[&a]);
    rig.applied(&[]);
    rig.assert_reloaded(1);
    let marker = rig.workspace.path("haproxy.cfg.runtime-pending");
    std::fs::write(&marker, "").unwrap();
    assert_eq!(
        prediction(&rig, &[]),
        format!(
            "would reload HAProxy: {} is unchanged, but a previous run was stopped during a \
             runtime update",
            rig.workspace.config().display()
        )
    );
    rig.marathon_runs(&[&a, &b]);
    assert_eq!(
        without_changes(&prediction(&rig, &[])),
        "would apply: backends +0 -0, servers +1 -0 (reload needed: a previous run was \
         stopped during a runtime update)"
    );
    let summary = rig.applied(&[]);
    assert_eq!(
        how(&summary),
        "reloaded: a previous run was stopped during a runtime update",
        "{summary}"
    );
    assert!(!marker.exists());
}
