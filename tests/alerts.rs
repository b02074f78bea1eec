//! The shipped Prometheus alerting rules (packaging/haproxy-marathon-sync.rules.yml) are valid
//! (`promtool check rules`), fire when they should and only then (`promtool test rules`, with
//! the summaries a person reads), and name only metrics the binary really writes.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::sync::Sync;

fn rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/haproxy-marathon-sync.rules.yml")
}

fn promtool(args: &[&str], file: &Path) -> String {
    let output = Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .expect("promtool runs (scripts/test installs Debian's prometheus package)");
    let said = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "promtool {args:?}:\n{said}");
    said
}

#[test]
fn the_rules_file_checks_clean() {
    let said = promtool(&["check", "rules"], &rules());
    assert!(said.contains("SUCCESS: 5 rules found"), "{said}");
}

/// Unit tests of every rule: fires after its `for`, not before, and not on healthy series.
const RULE_TESTS: &str = r#"
rule_files: [RULES]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'haproxy_marathon_sync_last_success_timestamp_seconds{instance="lb1"}'
        values: '0x20'
      - series: 'haproxy_marathon_sync_last_success_timestamp_seconds{instance="lb2"}'
        values: '0+60x20'
    alert_rule_test:
      - eval_time: 6m
        alertname: HaproxyMarathonSyncStale
        exp_alerts: []
      - eval_time: 10m
        alertname: HaproxyMarathonSyncStale
        exp_alerts:
          - exp_labels: {severity: critical, instance: lb1}
            exp_annotations:
              summary: "haproxy-marathon-sync on lb1 has not synced for 10m 0s"
              description: "Run `haproxy-marathon-sync status` on the host; `last error` says why."
  - interval: 1m
    input_series:
      - series: 'haproxy_marathon_sync_failures_total{instance="lb1",reason="lock_timeout"}'
        values: '0+1x30'
      - series: 'haproxy_marathon_sync_failures_total{instance="lb1",reason="marathon_unavailable"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: HaproxyMarathonSyncFailing
        exp_alerts:
          - exp_labels: {severity: warning, instance: lb1, reason: lock_timeout}
            exp_annotations:
              summary: "haproxy-marathon-sync on lb1: 15 runs failed with lock_timeout in 15 minutes"
              description: "See `haproxy-marathon-sync status` and the journal (journalctl -u haproxy-marathon-sync.service -p warning)."
  - interval: 1m
    input_series:
      - series: 'haproxy_marathon_sync_apps_excluded{instance="lb1"}'
        values: '0 0 2x20'
      - series: 'haproxy_marathon_sync_apps_excluded{instance="lb2"}'
        values: '0x22'
      - series: 'haproxy_marathon_sync_event_stream_up{instance="lb1"}'
        values: '1 1 0x20'
      - series: 'haproxy_marathon_sync_apps_held{instance="lb1"}'
        values: '0 0 1x20'
      - series: 'haproxy_marathon_sync_apps_held{instance="lb2"}'
        values: '0x22'
    alert_rule_test:
      - eval_time: 5m
        alertname: HaproxyMarathonSyncAppsHeld
        exp_alerts: []
      - eval_time: 15m
        alertname: HaproxyMarathonSyncAppsHeld
        exp_alerts:
          - exp_labels: {severity: warning, instance: lb1}
            exp_annotations:
              summary: "haproxy-marathon-sync on lb1 holds 1 app(s) at their last good definition"
              description: "`haproxy-marathon-sync status` lists them; the journal's warnings name the label or HAProxy error and the version each is held at."
      - eval_time: 5m
        alertname: HaproxyMarathonSyncAppsLeftOut
        exp_alerts: []
      - eval_time: 15m
        alertname: HaproxyMarathonSyncAppsLeftOut
        exp_alerts:
          - exp_labels: {severity: warning, instance: lb1}
            exp_annotations:
              summary: "haproxy-marathon-sync on lb1 leaves out 2 app(s)"
              description: "The warnings in the journal name each app and the label or HAProxy error at fault."
      - eval_time: 15m
        alertname: HaproxyMarathonSyncEventStreamDown
        exp_alerts:
          - exp_labels: {severity: warning, instance: lb1}
            exp_annotations:
              summary: "haproxy-marathon-sync on lb1 cannot read Marathon's event stream and is polling"
              description: "Changes reach HAProxy at --interval instead of within a second; check /v2/events on Marathon."
"#;

#[test]
fn each_rule_fires_when_it_should_with_a_summary_a_person_can_act_on() {
    let dir = tempfile::tempdir().unwrap();
    let tests = dir.path().join("rules_test.yml");
    let rules = rules().display().to_string();
    std::fs::write(&tests, RULE_TESTS.replace("RULES", &format!("'{rules}'"))).unwrap();
    let said = promtool(&["test", "rules"], &tests);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn the_rules_name_only_metrics_the_binary_writes() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("metrics.prom");
    let run = Sync::new()
        .marathon(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster"))
        .group("external")
        .config(dir.path().join("haproxy.cfg"))
        .arg("--metrics-file")
        .arg(&metrics)
        .args(["--skip-validation", "--reload-command", "true"])
        .run();
    assert!(run.status.success(), "{}", run.stderr);
    let written = std::fs::read_to_string(&metrics).unwrap();
    let rules_text = std::fs::read_to_string(rules()).unwrap();
    let named: Vec<&str> = rules_text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("haproxy_marathon_sync_"))
        .collect();
    assert!(named.len() >= 4, "{named:?}");
    for name in named {
        // event_stream_up is written only under --sse, which this run is not.
        if name == "haproxy_marathon_sync_event_stream_up" {
            assert!(written.contains("haproxy_marathon_sync_apps "));
            continue;
        }
        assert!(
            written.contains(&format!("# TYPE {name} ")),
            "{name} is not in the metrics:\n{written}"
        );
    }
}
