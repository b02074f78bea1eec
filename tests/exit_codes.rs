//! One test per row of the README's exit-status table, each reaching its code through the
//! built binary (tests/readme_claims.rs checks every row has its `exit_N_...` test here).
//! Each failing run must also leave the live config as it was.

mod support;

use std::fs;

use support::marathon::FakeMarathon;
use support::mounts::Immutable;
use support::ports::Port;
use support::sync::Sync;
use support::workspace::{web_app, Workspace};

/// A stand-in Marathon serving `/web` with `tasks` task ports, and a workspace whose live config
/// a first run wrote from it.
fn live(tasks: usize) -> (Workspace, FakeMarathon, Vec<Port>) {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let ports: Vec<Port> = (0..=tasks).map(|_| Port::reserve()).collect();
    let task_ports: Vec<u16> = ports[1..].iter().map(Port::number).collect();
    let (apps, tasks) = web_app(ports[0].number(), &task_ports);
    marathon.set_state(apps, tasks);
    workspace
        .run(&marathon.url(), "true", &[])
        .assert_success()
        .assert_stderr_contains("applied");
    (workspace, marathon, ports)
}

/// Marathon now runs `/web` on `count` other task ports.
fn move_tasks(marathon: &FakeMarathon, ports: &mut Vec<Port>, count: usize) {
    let fresh: Vec<Port> = (0..count).map(|_| Port::reserve()).collect();
    let numbers: Vec<u16> = fresh.iter().map(Port::number).collect();
    let (apps, tasks) = web_app(ports[0].number(), &numbers);
    marathon.set_state(apps, tasks);
    ports.extend(fresh);
}

#[test]
fn exit_0_applied_unchanged_and_dry_run() {
    let (workspace, marathon, mut ports) = live(1);
    workspace
        .run(&marathon.url(), "true", &[])
        .assert_success()
        .assert_silent();
    move_tasks(&marathon, &mut ports, 1);
    let before = workspace.read_config();
    workspace
        .run(&marathon.url(), "true", &["--dry-run"])
        .assert_success()
        .assert_stdout_contains("backend web_");
    assert_eq!(workspace.read_config(), before, "a dry run writes nothing");
    workspace
        .run(&marathon.url(), "true", &[])
        .assert_success()
        .assert_stderr_contains("applied");
    assert_ne!(workspace.read_config(), before);
}

#[test]
fn exit_1_an_unreadable_credentials_file() {
    let (workspace, marathon, _ports) = live(1);
    let before = workspace.read_config();
    let missing = workspace.path("no-such-credentials");
    workspace
        .sync(&marathon.url(), "true")
        .arg("--marathon-auth-credential-file")
        .arg(&missing)
        .run()
        .assert_exit(1)
        .assert_stderr_contains(&missing.display().to_string());
    assert_eq!(workspace.read_config(), before);
}

#[test]
fn exit_2_a_usage_error() {
    Sync::new()
        .args(["--marathon", "http://127.0.0.1:1", "--no-such-flag"])
        .run()
        .assert_exit(2)
        .assert_stderr_contains("--no-such-flag");
}

#[test]
fn exit_3_no_marathon_answers() {
    let (workspace, _marathon, _ports) = live(1);
    let before = workspace.read_config();
    let refused = Port::reserve();
    workspace
        .run(&refused.refused_url(), "true", &[])
        .assert_exit(3)
        .assert_stderr_contains(&refused.refused_url());
    assert_eq!(workspace.read_config(), before);
}

#[test]
fn exit_4_a_template_that_does_not_render() {
    let (workspace, marathon, mut ports) = live(1);
    let before = workspace.read_config();
    move_tasks(&marathon, &mut ports, 1);
    fs::remove_file(workspace.templates().join("HAPROXY_HEAD")).unwrap();
    workspace.set_template(
        "HAPROXY_HEAD.j2",
        "global\n  maxconn {{ no_such_variable }}\n",
    );
    workspace
        .run(&marathon.url(), "true", &[])
        .assert_exit(4)
        .assert_stderr_contains("HAPROXY_HEAD");
    assert_eq!(workspace.read_config(), before);
    assert_eq!(workspace.reload_count(), 1, "only the first run reloaded");
}

#[test]
fn exit_5_the_lock_held_past_the_timeout() {
    use fs2::FileExt;
    let (workspace, marathon, mut ports) = live(1);
    let before = workspace.read_config();
    move_tasks(&marathon, &mut ports, 1);
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(workspace.path("haproxy.cfg.lock"))
        .unwrap();
    lock.lock_exclusive().unwrap();
    workspace
        .run(&marathon.url(), "true", &["--lock-timeout", "0.2"])
        .assert_exit(5)
        .assert_stderr_contains("haproxy.cfg.lock");
    assert_eq!(workspace.read_config(), before);
    FileExt::unlock(&lock).unwrap();
}

#[test]
fn exit_6_haproxy_rejects_the_candidate() {
    let (workspace, marathon, mut ports) = live(1);
    let before = workspace.read_config();
    move_tasks(&marathon, &mut ports, 1);
    workspace.set_template(
        "HAPROXY_BACKEND_HEAD",
        "\nbackend {backend}\n  balance {balance}\n  mode {mode}\n  no-such-directive on\n",
    );
    workspace
        .run(&marathon.url(), "true", &[])
        .assert_exit(6)
        .assert_stderr_contains("no-such-directive");
    assert_eq!(workspace.read_config(), before);
    assert!(workspace.path("haproxy.cfg.rejected").exists());
}

#[test]
fn exit_7_the_new_config_cannot_be_written() {
    let (workspace, marathon, mut ports) = live(1);
    let before = workspace.read_config();
    move_tasks(&marathon, &mut ports, 1);
    let files_before: Vec<_> = fs::read_dir(workspace.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let run = {
        let _frozen = Immutable::new(workspace.dir.path());
        workspace.run(&marathon.url(), "true", &[])
    };
    run.assert_exit(7)
        .assert_stderr_contains(&workspace.dir.path().display().to_string());
    assert_eq!(workspace.read_config(), before);
    let files_after: Vec<_> = fs::read_dir(workspace.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files_after, files_before, "no temp file left");
}

#[test]
fn exit_8_the_reload_fails_and_the_old_config_is_back() {
    let (workspace, marathon, mut ports) = live(1);
    let before = workspace.read_config();
    move_tasks(&marathon, &mut ports, 1);
    workspace
        .run(&marathon.url(), "echo reload refused >&2; exit 1", &[])
        .assert_exit(8)
        .assert_stderr_contains("reload refused");
    assert_eq!(workspace.read_config(), before);
}

#[test]
fn exit_9_the_blast_radius_guard_refuses_and_force_applies() {
    let (workspace, marathon, _ports) = live(3);
    let before = workspace.read_config();
    // Marathon answers with no apps at all: an empty answer never wipes a live config.
    marathon.set_state(r#"{"apps": []}"#, r#"{"tasks": []}"#);
    workspace
        .run(&marathon.url(), "true", &[])
        .assert_exit(9)
        .assert_stderr_contains("--force");
    assert_eq!(workspace.read_config(), before);
    assert_eq!(workspace.reload_count(), 1, "nothing was reloaded");
    workspace
        .run(&marathon.url(), "true", &["--force"])
        .assert_success();
    assert_ne!(workspace.read_config(), before);
}

#[test]
fn exit_10_an_app_haproxy_rejects_is_left_out() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let ports: Vec<Port> = (0..2).map(|_| Port::reserve()).collect();
    let app = |id: &str, port: u16, extra: &str| {
        format!(
            r#"{{"id":"{id}","labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_BIND_ADDR":"127.0.0.1"{extra}}},"portDefinitions":[{{"port":{port}}}],"healthChecks":[]}}"#
        )
    };
    let broken = r#","HAPROXY_0_BACKEND_HEAD":"\nbackend {backend}\n  mode {mode}\n  no-such-directive on\n""#;
    let apps = format!(
        r#"{{"apps":[{},{}]}}"#,
        app("/good", ports[0].number(), ""),
        app("/broken", ports[1].number(), broken)
    );
    let tasks = r#"{"tasks":[{"id":"good.1","appId":"/good","host":"127.0.0.1","ports":[31001],"state":"TASK_RUNNING"},{"id":"broken.1","appId":"/broken","host":"127.0.0.1","ports":[31002],"state":"TASK_RUNNING"}]}"#;
    marathon.set_state(apps, tasks);
    workspace
        .run(&marathon.url(), "true", &[])
        .assert_exit(10)
        .assert_stderr_contains("/broken")
        .assert_stderr_contains("no-such-directive");
    let config = String::from_utf8(workspace.read_config().unwrap()).unwrap();
    assert!(config.contains("backend good_"), "{config}");
    assert!(!config.contains("broken_"), "{config}");
}

#[test]
fn exit_11_status_check_age_without_a_recent_success() {
    let workspace = Workspace::new();
    let status = |workspace: &Workspace| {
        Sync::new()
            .arg("status")
            .config(workspace.config())
            .args(["--check-age", "5m"])
            .run()
    };
    // A config that no run has synced yet (a fresh install): no success recorded.
    std::fs::write(workspace.config(), "").unwrap();
    status(&workspace)
        .assert_exit(11)
        .assert_stderr_contains("is recorded yet (--check-age 5m)");
    let marathon = FakeMarathon::start();
    let ports = [Port::reserve(), Port::reserve()];
    let (apps, tasks) = web_app(ports[0].number(), &[ports[1].number()]);
    marathon.set_state(apps, tasks);
    workspace.run(&marathon.url(), "true", &[]).assert_success();
    status(&workspace).assert_success();
}

#[test]
fn exit_12_status_on_a_path_with_neither_config_nor_record() {
    let workspace = Workspace::new();
    Sync::new()
        .arg("status")
        .config(workspace.config())
        .run()
        .assert_exit(12)
        .assert_stderr_contains("neither ")
        .assert_stderr_contains("is --haproxy-config right?");
}
