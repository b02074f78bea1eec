//! End to end through the built binary: a stand-in Marathon on 127.0.0.1 serving real JSON, a
//! real HAProxy in master-worker mode, tiny HTTP backends. Traffic must follow Marathon, every
//! failure must leave the live config byte-identical with the documented exit code.

mod support;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use support::backend::{traffic_reaches, Backend};
use support::haproxy::{wait_for, Haproxy};
use support::marathon::{Behaviour, FakeMarathon};
use support::ports::Port;
use support::workspace::{web_app, Workspace};

#[test]
fn traffic_follows_marathon_across_reloads_and_an_unchanged_run_does_nothing() {
    let workspace = Workspace::new();
    let (a, b) = (Backend::start("task-a"), Backend::start("task-b"));
    let service = Port::reserve();
    let service_port = service.number();
    let marathon = FakeMarathon::start();
    let (apps, tasks) = web_app(service_port, &[a.port]);
    marathon.set_state(&apps, &tasks);

    // First run: nothing live yet, so the config is written; HAProxy is not running yet.
    let first = workspace.run(&marathon.url(), "true", &[]);
    first.assert_exit(0);
    assert!(
        first.stderr.contains("applied"),
        "summary line: {}",
        first.stderr
    );
    let haproxy = Haproxy::start(
        &workspace.config(),
        &workspace.dir.path().join("run"),
        service_port,
    );
    assert!(
        traffic_reaches(service_port, "task-a"),
        "{}",
        haproxy.log_text()
    );

    // Marathon moves the task: the next run rewrites, reloads, and traffic follows.
    let (apps, tasks) = web_app(service_port, &[b.port]);
    marathon.set_state(&apps, &tasks);
    let before = workspace.reload_count();
    let second = workspace.run(&marathon.url(), &haproxy.reload_shell_command(), &[]);
    second.assert_exit(0);
    assert_eq!(workspace.reload_count(), before + 1);
    assert!(haproxy.wait_for_reloads(1), "{}", haproxy.show_proc());
    assert!(
        traffic_reaches(service_port, "task-b"),
        "{}",
        haproxy.log_text()
    );
    let config = fs::read_to_string(workspace.config()).unwrap();
    assert!(config.contains(&format!("127.0.0.1:{}", b.port)));
    assert!(!config.contains(&format!("127.0.0.1:{}", a.port)));

    // Same state again: nothing written, nothing reloaded, nothing printed.
    let modified = fs::metadata(workspace.config())
        .unwrap()
        .modified()
        .unwrap();
    let third = workspace.run(&marathon.url(), &haproxy.reload_shell_command(), &[]);
    third.assert_exit(0);
    assert_eq!(third.stdout, "");
    assert_eq!(third.stderr, "");
    assert_eq!(
        workspace.reload_count(),
        before + 1,
        "an unchanged run must not reload"
    );
    assert_eq!(
        fs::metadata(workspace.config())
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    assert!(traffic_reaches(service_port, "task-b"));
}

/// A workspace whose live config was written by a first run against a one-task `/web` app.
struct Live {
    workspace: Workspace,
    marathon: FakeMarathon,
    service_port: u16,
    /// The live config's bytes after the first run.
    config: Vec<u8>,
}

impl Live {
    fn new() -> Live {
        let workspace = Workspace::new();
        let marathon = FakeMarathon::start();
        // Reserved for the rest of the process: the tests take `Live` apart.
        let service_port = Port::reserve().leak();
        let (apps, tasks) = web_app(service_port, &[Port::reserve().leak()]);
        marathon.set_state(&apps, &tasks);
        workspace.run(&marathon.url(), "true", &[]).assert_exit(0);
        let config = fs::read(workspace.config()).unwrap();
        Live {
            workspace,
            marathon,
            service_port,
            config,
        }
    }
}

/// Marathon now runs `/web` on two other task ports (reserved for the rest of the process:
/// nothing connects to them, they only have to differ).
fn moved_state(marathon: &FakeMarathon, service_port: u16) {
    let task_ports = [Port::reserve().leak(), Port::reserve().leak()];
    let (apps, tasks) = web_app(service_port, &task_ports);
    marathon.set_state(&apps, &tasks);
}

#[test]
fn marathon_down_exits_3_and_leaves_the_live_config_alone() {
    let Live {
        workspace,
        marathon,
        config: live,
        ..
    } = Live::new();

    marathon.set_behaviour(Behaviour::Status(503));
    let output = workspace.run(&marathon.url(), "true", &[]);
    output.assert_exit(3);
    let stderr = output.stderr.clone();
    assert!(
        stderr.contains(&marathon.url()) && stderr.contains("503"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert_eq!(fs::read(workspace.config()).unwrap(), live);
}

#[test]
fn a_candidate_haproxy_rejects_exits_6_keeps_live_and_shows_haproxys_error() {
    let Live {
        workspace,
        marathon,
        service_port,
        config: live,
        ..
    } = Live::new();

    // An operator's template override with a typo renders fine but HAProxy refuses it.
    fs::write(
        workspace.dir.path().join("templates/HAPROXY_BACKEND_HEAD"),
        "\nbackend {backend}\n  balance {balance}\n  mode {mode}\n  no-such-directive on\n",
    )
    .unwrap();
    moved_state(&marathon, service_port);
    let output = workspace.run(&marathon.url(), "true", &[]);
    output.assert_exit(6);
    let stderr = output.stderr.clone();
    assert!(
        stderr.contains("no-such-directive"),
        "haproxy's complaint is shown: {stderr}"
    );
    assert!(
        stderr.contains("haproxy.cfg.rejected:"),
        "the complaint points at the kept copy: {stderr}"
    );
    assert_eq!(fs::read(workspace.config()).unwrap(), live);
    assert!(workspace.config().with_extension("cfg.rejected").exists());
    assert_eq!(workspace.reload_count(), 1, "only the first run reloaded");
}

#[test]
fn a_failing_reload_exits_8_and_restores_the_previous_config() {
    let Live {
        workspace,
        marathon,
        service_port,
        config: live,
        ..
    } = Live::new();

    moved_state(&marathon, service_port);
    let output = workspace.run(&marathon.url(), "echo reload refused >&2; exit 1", &[]);
    output.assert_exit(8);
    assert!(
        output.stderr.contains("reload refused"),
        "{}",
        output.stderr
    );
    assert_eq!(fs::read(workspace.config()).unwrap(), live);

    // The next run does not mistake the restored file for "unchanged": it retries the change.
    let retry = workspace.run(&marathon.url(), "true", &[]);
    retry.assert_exit(0);
    assert_ne!(fs::read(workspace.config()).unwrap(), live);
}

#[test]
fn a_held_lock_exits_5_and_changes_nothing() {
    use fs2::FileExt;
    let Live {
        workspace,
        marathon,
        service_port,
        config: live,
        ..
    } = Live::new();

    moved_state(&marathon, service_port);
    let lock_path = PathBuf::from(format!("{}.lock", workspace.config().display()));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    lock.lock_exclusive().unwrap();
    let output = workspace.run(&marathon.url(), "true", &["--lock-timeout", "0.3"]);
    output.assert_exit(5);
    assert!(
        output.stderr.contains(&lock_path.display().to_string()),
        "{}",
        output.stderr
    );
    assert_eq!(fs::read(workspace.config()).unwrap(), live);
    FileExt::unlock(&lock).unwrap();
}

#[test]
fn dry_run_diff_prints_the_change_and_writes_nothing() {
    let Live {
        workspace,
        marathon,
        service_port,
        config: live,
        ..
    } = Live::new();

    let unchanged = workspace.run(&marathon.url(), "true", &["--dry-run", "--diff"]);
    unchanged.assert_exit(0);
    assert_eq!(unchanged.stdout, "", "no diff when equal");

    let new_port = Port::reserve().leak();
    let (apps, tasks) = web_app(service_port, &[new_port]);
    marathon.set_state(&apps, &tasks);
    let output = workspace.run(&marathon.url(), "true", &["--dry-run", "--diff"]);
    output.assert_exit(0);
    let diff = output.stdout;
    assert!(
        diff.lines()
            .any(|l| l.starts_with('+') && l.contains(&new_port.to_string())),
        "{diff}"
    );
    assert_eq!(fs::read(workspace.config()).unwrap(), live);
    assert_eq!(workspace.reload_count(), 1);
}

#[test]
fn interval_mode_survives_a_marathon_outage_and_applies_when_it_is_back() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    marathon.set_behaviour(Behaviour::Status(503));
    let ports = [Port::reserve(), Port::reserve()];
    let (apps, tasks) = web_app(ports[0].number(), &[ports[1].number()]);
    marathon.set_state(&apps, &tasks);

    // Guarded: stopped when the test ends, passed or failed, so no loop outlives it.
    let mut child = workspace
        .sync(&marathon.url(), "true")
        .args(["--skip-validation", "--interval", "100ms"])
        .spawn();
    let failed_twice =
        marathon.wait_for_requests(support::marathon::APPS_PATH, 2, Duration::from_secs(10));
    let written_during_outage = workspace.config().exists();
    marathon.clear_behaviours();
    let applied = wait_for(Duration::from_secs(10), || workspace.reload_count() == 1);
    let (status, on_term, stderr) = child.stop_and_read_stderr();
    assert!(
        failed_twice,
        "the loop kept polling through the outage: {stderr}"
    );
    assert!(
        !written_during_outage,
        "nothing is written while Marathon fails: {stderr}"
    );
    assert!(applied, "applied once Marathon was back: {stderr}");
    assert!(
        on_term && status.success(),
        "SIGTERM ends the loop cleanly: {status:?} {stderr}"
    );
    assert!(stderr.contains("503"), "the outage was logged: {stderr}");
    assert!(fs::read_to_string(workspace.config())
        .unwrap()
        .contains("backend web_"));
}

#[test]
fn an_app_haproxy_rejects_is_left_out_and_the_rest_applied_with_exit_10() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let ports: Vec<Port> = (0..3).map(|_| Port::reserve()).collect();
    let (good_port, bad_port, other_port) =
        (ports[0].number(), ports[1].number(), ports[2].number());
    // Three apps; /broken carries a raw template label with a directive HAProxy refuses.
    let app = |id: &str, port: u16, extra: &str| {
        format!(
            r#"{{"id":"{id}","labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_BIND_ADDR":"127.0.0.1"{extra}}},"portDefinitions":[{{"port":{port}}}],"healthChecks":[]}}"#
        )
    };
    let task = |id: &str, n: usize| {
        format!(
            r#"{{"id":"{}.{n}","appId":"{id}","host":"127.0.0.1","ports":[{}],"state":"TASK_RUNNING"}}"#,
            &id[1..],
            31000 + n
        )
    };
    let broken_label = r#","HAPROXY_0_BACKEND_HEAD":"\nbackend {backend}\n  balance {balance}\n  mode {mode}\n  no-such-directive on\n""#;
    let apps = format!(
        r#"{{"apps":[{},{},{}]}}"#,
        app("/good", good_port, ""),
        app("/broken", bad_port, broken_label),
        app("/other", other_port, "")
    );
    let tasks = format!(
        r#"{{"tasks":[{},{},{}]}}"#,
        task("/good", 1),
        task("/broken", 2),
        task("/other", 3)
    );
    marathon.set_state(&apps, &tasks);

    let output = workspace.run(&marathon.url(), "true", &[]);
    output.assert_exit(10);
    let stderr = output.stderr.clone();
    assert!(
        stderr.contains("/broken") && stderr.contains("no-such-directive"),
        "{stderr}"
    );
    // Only the rejected app is named as left out (the summary line names the changed ones).
    let left_out = stderr
        .lines()
        .find(|line| line.contains("left out"))
        .unwrap();
    assert!(
        !left_out.contains("/good (") && !left_out.contains("/other ("),
        "{stderr}"
    );
    let config = fs::read_to_string(workspace.config()).unwrap();
    assert!(config.contains(&format!("backend good_{good_port}")));
    assert!(config.contains(&format!("backend other_{other_port}")));
    assert!(
        !config.contains("broken_"),
        "the rejected app is left out:\n{config}"
    );
    assert_eq!(workspace.reload_count(), 1);
}

/// Issue 4's proof through the binary: a real master-worker HAProxy under constant load while
/// the binary, run once per Marathon change, applies 50 server-set changes and reloads through
/// the master CLI. No request may fail.
#[test]
fn fifty_changes_through_the_binary_under_load_fail_no_request() {
    const CHANGES: usize = 50;
    let workspace = Workspace::new();
    // What our default head carries for hitless reloads, minus the system paths a test avoids.
    fs::write(
        workspace.dir.path().join("templates/HAPROXY_HEAD"),
        "global\n  hard-stop-after 10s\n\ndefaults\n  mode http\n  retries 3\n  \
         option redispatch\n  option http-server-close\n  option idle-close-on-response\n  \
         timeout connect 3s\n  timeout client 30s\n  timeout server 30s\n  \
         timeout http-keep-alive 1s\n  timeout http-request 15s\n",
    )
    .unwrap();
    let backends: Vec<Backend> = ["A", "B", "C", "D"].map(Backend::start).into();
    let ports: Vec<u16> = backends.iter().map(|b| b.port).collect();
    // A window sliding over the backends, alternately 2 and 3 wide: every change adds and
    // removes servers.
    let window = |i: usize| -> Vec<u16> { (0..2 + i % 2).map(|k| ports[(i + k) % 4]).collect() };
    let service = Port::reserve();
    let service_port = service.number();
    let marathon = FakeMarathon::start();
    let (apps, tasks) = web_app(service_port, &window(0));
    marathon.set_state(&apps, &tasks);
    workspace.run(&marathon.url(), "true", &[]).assert_exit(0);
    let haproxy = Haproxy::start(
        &workspace.config(),
        &workspace.dir.path().join("run"),
        service_port,
    );
    let socket = haproxy.master_socket.display().to_string();

    let load = support::load::Load::start(service_port, 4, 2, Duration::from_secs(300));
    assert!(wait_for(Duration::from_secs(10), || backends
        .iter()
        .any(|b| b.served() > 0)));
    for i in 1..=CHANGES {
        let (apps, tasks) = web_app(service_port, &window(i));
        marathon.set_state(&apps, &tasks);
        let output = workspace.run(
            &marathon.url(),
            "false",
            &["--haproxy-master-socket", &socket, "--no-runtime-api"],
        );
        output.assert_exit(0);
    }
    let tally = load.stop();
    eprintln!(
        "through the binary: {} requests, {} failed, {} non-200, {CHANGES} changes; per backend {:?}",
        tally.requests, tally.failures, tally.non_200, tally.by_body
    );
    assert_eq!(
        haproxy.reloads(),
        Some(CHANGES as u32),
        "{}",
        haproxy.show_proc()
    );
    assert_eq!(
        (tally.failures, tally.non_200),
        (0, 0),
        "{}",
        tally.described.join("\n")
    );
    assert!(
        tally.requests >= 200,
        "too little load to mean anything: {tally:?}"
    );
    assert_eq!(
        workspace.reload_count(),
        1,
        "the master socket, not the reload command, reloads"
    );
}

/// The Faults table's "first Marathon down" row through the binary: with the first URL refusing
/// connections, the next one is used; a changing run names the refused URL and the one used,
/// and an unchanged run (same state, same refusal) prints nothing.
#[test]
fn a_refused_first_marathon_is_named_on_a_changing_run_and_an_unchanged_run_is_silent() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let refused = Port::reserve();
    let ports: Vec<Port> = (0..2).map(|_| Port::reserve()).collect();
    let (apps, tasks) = web_app(ports[0].number(), &[ports[1].number()]);
    marathon.set_state(&apps, &tasks);
    let sources = format!("{},{}", refused.refused_url(), marathon.url());

    let changing = workspace.run(&sources, "true", &[]);
    changing.assert_exit(0).assert_stderr_contains("applied");
    let warning = changing
        .stderr
        .lines()
        .find(|line| line.contains(&refused.refused_url()))
        .unwrap_or_else(|| panic!("no line names the refused URL:\n{}", changing.stderr));
    assert!(
        warning.contains("warning") && warning.contains(&format!("used {}", marathon.url())),
        "the warning names the URL used too: {warning}"
    );
    assert_eq!(workspace.reload_count(), 1);

    workspace
        .run(&sources, "true", &[])
        .assert_exit(0)
        .assert_silent();
    assert_eq!(workspace.reload_count(), 1);
}
