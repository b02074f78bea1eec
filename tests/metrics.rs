//! Metrics and the run record never lose data: a lock timeout, a failure before the lock, keep
//! the counters and the last success time and count the failure under its reason, within
//! `--run-timeout`; `apps` counts the apps rendered; `status` usage errors exit 2 and a path
//! with nothing there says so. Through the binary, reading saved Marathon snapshots.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// Apps `/a0..` in group `external` and `/i0..` in group `internal`, one task each.
    fn new(external: usize, internal: usize) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let marathon = dir.path().join("marathon");
        std::fs::create_dir(&marathon).unwrap();
        let mut apps = Vec::new();
        let mut tasks = Vec::new();
        let groups = std::iter::repeat_n(("a", "external"), external)
            .chain(std::iter::repeat_n(("i", "internal"), internal));
        for (number, (prefix, group)) in groups.enumerate() {
            let id = format!("/{prefix}{number}");
            apps.push(format!(
                r#"{{"id":"{id}","labels":{{"HAPROXY_GROUP":"{group}"}},"portDefinitions":[{{"port":{}}}]}}"#,
                10000 + number
            ));
            tasks.push(format!(
                r#"{{"id":"t{number}","appId":"{id}","host":"10.0.0.{}","ports":[{}]}}"#,
                number + 1,
                31000 + number
            ));
        }
        std::fs::write(
            marathon.join("apps.json"),
            format!(r#"{{"apps":[{}]}}"#, apps.join(",")),
        )
        .unwrap();
        std::fs::write(
            marathon.join("tasks.json"),
            format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")),
        )
        .unwrap();
        Workspace { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run_from(&self, marathon: &str, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_haproxy-marathon-sync"))
            .arg("--marathon")
            .arg(self.path(marathon))
            .args(["--group", "external", "--haproxy-config"])
            .arg(self.path("haproxy.cfg"))
            .arg("--metrics-file")
            .arg(self.path("metrics.prom"))
            .args(["--skip-validation", "--reload-command", "true"])
            .args(extra)
            .output()
            .unwrap()
    }

    fn run(&self, extra: &[&str]) -> Output {
        self.run_from("marathon", extra)
    }

    /// `name{labels} value` of the metrics file.
    fn metric(&self, name: &str) -> Option<f64> {
        let text = std::fs::read_to_string(self.path("metrics.prom")).unwrap();
        let prefix = format!("haproxy_marathon_sync_{name} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map(|value| value.parse().unwrap())
    }

    /// Holds `<config>.lock` in a `flock` child until it is dropped (killed by its PID).
    fn hold_lock(&self) -> LockHolder {
        let mut child = Command::new("flock")
            .arg("-x")
            .arg(self.path("haproxy.cfg.lock"))
            .args(["-c", "echo locked; exec sleep 60"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("flock (util-linux) runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "locked\n");
        LockHolder(child)
    }
}

struct LockHolder(Child);

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The same Unix time, give or take the last bit a JSON round trip of the record may change.
fn assert_same_time(found: Option<f64>, expected: f64) {
    let found = found.expect("the metric is there");
    assert!((found - expected).abs() < 1e-3, "{found} is not {expected}");
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_lock_timeout_keeps_the_counters_and_the_last_success_and_waits_only_once() {
    let workspace = Workspace::new(2, 0);
    let first = workspace.run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let success = workspace.metric("last_success_timestamp_seconds").unwrap();

    let _held = workspace.hold_lock();
    let started = Instant::now();
    let blocked = workspace.run(&["--lock-timeout", "2s"]);
    let took = started.elapsed();
    assert_eq!(blocked.status.code(), Some(5), "{}", text(&blocked.stderr));
    // One wait of 2 s, not two (the record's update does not wait again).
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert_eq!(workspace.metric("runs_total"), Some(2.0));
    assert_eq!(workspace.metric("changes_applied_total"), Some(1.0));
    assert_eq!(
        workspace.metric(r#"failures_total{reason="lock_timeout"}"#),
        Some(1.0)
    );
    assert_same_time(workspace.metric("last_success_timestamp_seconds"), success);
    assert_eq!(workspace.metric("last_run_success"), Some(0.0));
}

#[test]
fn the_run_timeout_bounds_the_lock_wait_and_the_record_update() {
    let workspace = Workspace::new(1, 0);
    let first = workspace.run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let _held = workspace.hold_lock();
    let started = Instant::now();
    let blocked = workspace.run(&["--lock-timeout", "30s", "--run-timeout", "2s"]);
    let took = started.elapsed();
    assert_eq!(blocked.status.code(), Some(5), "{}", text(&blocked.stderr));
    assert!(took < Duration::from_millis(3500), "took {took:?}");
    assert_eq!(workspace.metric("runs_total"), Some(2.0));
}

#[test]
fn a_failure_before_the_lock_is_counted_under_its_reason_and_keeps_the_rest() {
    let workspace = Workspace::new(1, 0);
    let first = workspace.run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let success = workspace.metric("last_success_timestamp_seconds").unwrap();
    let down = workspace.run_from("no-such-snapshot", &[]);
    assert_eq!(down.status.code(), Some(3), "{}", text(&down.stderr));
    assert_eq!(workspace.metric("runs_total"), Some(2.0));
    assert_eq!(
        workspace.metric(r#"failures_total{reason="marathon_unavailable"}"#),
        Some(1.0)
    );
    assert_same_time(workspace.metric("last_success_timestamp_seconds"), success);
}

#[test]
fn apps_counts_the_apps_rendered_not_every_app_marathon_has() {
    let workspace = Workspace::new(3, 4);
    let run = workspace.run(&[]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    assert_eq!(workspace.metric("apps"), Some(3.0));
    assert_eq!(workspace.metric("backends"), Some(3.0));
    let text = std::fs::read_to_string(workspace.path("metrics.prom")).unwrap();
    assert!(
        text.contains("haproxy_marathon_sync_phase_duration_seconds{phase=\"isolate\"} 0\n"),
        "{text}"
    );
}

#[test]
fn status_usage_errors_exit_2_and_a_path_with_nothing_there_exits_12() {
    let workspace = Workspace::new(1, 0);
    let status = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_haproxy-marathon-sync"))
            .arg("status")
            .arg("--haproxy-config")
            .arg(workspace.path("haproxy.cfg"))
            .args(extra)
            .output()
            .unwrap()
    };
    let bad = status(&["--check-age", "5x"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).starts_with("haproxy-marathon-sync: error: status --check-age: "),
        "{}",
        text(&bad.stderr)
    );
    let nothing = status(&[]);
    assert_eq!(nothing.status.code(), Some(12));
    assert_eq!(
        text(&nothing.stderr),
        format!(
            "haproxy-marathon-sync: error: status: neither {} nor its run record exists: no run \
             has used this path (is --haproxy-config right?)\n",
            workspace.path("haproxy.cfg").display()
        )
    );
    assert!(nothing.stdout.is_empty());
    workspace.run(&[]);
    assert_eq!(status(&[]).status.code(), Some(0));
}

#[test]
fn a_lock_that_cannot_be_created_still_counts_the_run_and_keeps_the_last_success() {
    let workspace = Workspace::new(1, 0);
    let first = workspace.run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let success = workspace.metric("last_success_timestamp_seconds").unwrap();
    let nowhere = workspace.path("no-such-directory/haproxy.cfg.lock");
    let failed = workspace.run(&["--lock-file", nowhere.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(7), "{}", text(&failed.stderr));
    assert!(
        text(&failed.stderr).contains(&format!("opening lock file {}", nowhere.display())),
        "{}",
        text(&failed.stderr)
    );
    assert_eq!(workspace.metric("runs_total"), Some(2.0));
    assert_eq!(
        workspace.metric(r#"failures_total{reason="write_failed"}"#),
        Some(1.0)
    );
    assert_same_time(workspace.metric("last_success_timestamp_seconds"), success);
}

#[test]
fn the_search_for_rejected_apps_is_timed_as_its_own_phase_and_apps_counts_what_was_rendered() {
    let workspace = Workspace::new(2, 0);
    let marathon = workspace.path("marathon");
    let apps = std::fs::read_to_string(marathon.join("apps.json")).unwrap();
    let bad = r#"{"id":"/bad","labels":{"HAPROXY_GROUP":"external","HAPROXY_0_BACKEND_HEAD":"backend {backend}\n  no-such-directive\n"},"portDefinitions":[{"port":10999}]}"#;
    std::fs::write(
        marathon.join("apps.json"),
        apps.replacen("[", &format!("[{bad},"), 1),
    )
    .unwrap();
    let tasks = std::fs::read_to_string(marathon.join("tasks.json")).unwrap();
    let bad_task = r#"{"id":"bad.1","appId":"/bad","host":"10.0.9.1","ports":[31999]},"#;
    std::fs::write(
        marathon.join("tasks.json"),
        tasks.replacen("[", &format!("[{bad_task}"), 1),
    )
    .unwrap();
    let (key, cert) = (workspace.path("key.pem"), workspace.path("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (scripts/test installs it)");
    assert!(made.status.success());
    let pem = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
    std::fs::write(workspace.path("both.pem"), pem).unwrap();

    let run = Command::new(env!("CARGO_BIN_EXE_haproxy-marathon-sync"))
        .arg("--marathon")
        .arg(&marathon)
        .args(["--group", "external", "--haproxy-config"])
        .arg(workspace.path("haproxy.cfg"))
        .arg("--metrics-file")
        .arg(workspace.path("metrics.prom"))
        .arg("--ssl-certs")
        .arg(workspace.path("both.pem"))
        .args([
            "--haproxy-bin",
            "/usr/sbin/haproxy",
            "--reload-command",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(10), "{}", text(&run.stderr));
    assert_eq!(workspace.metric("apps"), Some(2.0));
    assert_eq!(workspace.metric("apps_excluded"), Some(1.0));
    let isolate = workspace
        .metric(r#"phase_duration_seconds{phase="isolate"}"#)
        .unwrap();
    assert!(isolate > 0.0, "the bisection took {isolate} s");
}
