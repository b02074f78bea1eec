//! The rows of the README's Faults table that name an exit status, through the built binary
//! (the library-level tests in tests/apply.rs and tests/reload.rs prove the details): each run
//! exits with the documented code and leaves the live config byte for byte as it was.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use support::marathon::FakeMarathon;
use support::mounts::SmallDisk;
use support::ports::Port;
use support::workspace::{web_app, Workspace};

/// A workspace whose live config a first run wrote, and Marathon already changed since.
struct Changed {
    workspace: Workspace,
    marathon: FakeMarathon,
    live: Vec<u8>,
    _ports: Vec<Port>,
}

impl Changed {
    fn new() -> Changed {
        Changed::first_run_with(&[])
    }

    /// The first run gets `extra` too.
    fn first_run_with(extra: &[&str]) -> Changed {
        let workspace = Workspace::new();
        let marathon = FakeMarathon::start();
        let ports: Vec<Port> = (0..3).map(|_| Port::reserve()).collect();
        let (apps, tasks) = web_app(ports[0].number(), &[ports[1].number()]);
        marathon.set_state(apps, tasks);
        workspace
            .run(&marathon.url(), "true", extra)
            .assert_success();
        let live = workspace.read_config().unwrap();
        let (apps, tasks) = web_app(ports[0].number(), &[ports[2].number()]);
        marathon.set_state(apps, tasks);
        Changed {
            workspace,
            marathon,
            live,
            _ports: ports,
        }
    }

    fn url(&self) -> String {
        self.marathon.url()
    }

    fn assert_live_untouched(&self) {
        assert_eq!(
            self.workspace.read_config().as_deref(),
            Some(self.live.as_slice()),
            "the live config changed"
        );
    }

    /// An executable script in the workspace.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.workspace.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }
}

#[test]
fn haproxy_missing_exits_6_and_changes_nothing() {
    let changed = Changed::new();
    let missing = changed.workspace.path("no-such-haproxy");
    changed
        .workspace
        .run(
            &changed.url(),
            "true",
            &["--haproxy-bin", missing.to_str().unwrap()],
        )
        .assert_exit(6)
        .assert_stderr_contains("no-such-haproxy");
    changed.assert_live_untouched();
    assert_eq!(changed.workspace.reload_count(), 1);
}

#[test]
fn a_hanging_haproxy_check_is_killed_at_the_timeout_and_exits_6() {
    let changed = Changed::new();
    let hanging = changed.script("hanging-haproxy", "exec sleep 60");
    let run = changed
        .workspace
        .sync(&changed.url(), "true")
        .arg("--haproxy-bin")
        .arg(&hanging)
        .args(["--command-timeout", "0.5"])
        .run();
    run.assert_exit(6);
    changed.assert_live_untouched();
    assert_eq!(changed.workspace.reload_count(), 1);
}

#[test]
fn a_hanging_reload_is_killed_rolled_back_and_exits_8() {
    let changed = Changed::new();
    changed
        .workspace
        .run(&changed.url(), "exec sleep 60", &["--command-timeout", "1"])
        .assert_exit(8);
    changed.assert_live_untouched();
    // The next run retries the change.
    changed
        .workspace
        .run(&changed.url(), "true", &[])
        .assert_success()
        .assert_stderr_contains("applied");
    assert_ne!(changed.workspace.read_config().unwrap(), changed.live);
}

#[test]
fn a_master_socket_that_does_not_answer_exits_8_before_anything_is_written() {
    let changed = Changed::new();
    let socket = changed.workspace.path("no-master.sock");
    let files_before = names(changed.workspace.dir.path());
    changed
        .workspace
        .run(
            &changed.url(),
            "true",
            &["--haproxy-master-socket", socket.to_str().unwrap()],
        )
        .assert_exit(8)
        .assert_stderr_contains("no-master.sock");
    changed.assert_live_untouched();
    let files_after: Vec<String> = names(changed.workspace.dir.path())
        .into_iter()
        .filter(|name| !name.ends_with(".status"))
        .collect();
    let files_before: Vec<String> = files_before
        .into_iter()
        .filter(|name| !name.ends_with(".status"))
        .collect();
    assert_eq!(
        files_after, files_before,
        "nothing written but the run record"
    );
}

#[test]
fn a_full_filesystem_exits_7_and_leaves_no_temp_file() {
    let workspace = Workspace::new();
    let etc = workspace.path("etc");
    fs::create_dir(&etc).unwrap();
    let _disk = SmallDisk::new(&etc, "64k");
    let config = etc.join("haproxy.cfg");
    let old = "# the live config\n";
    fs::write(&config, old).unwrap();
    // A cluster whose config is far larger than the disk.
    let marathon = FakeMarathon::start();
    let apps: Vec<String> = (0..400)
        .map(|i| {
            format!(
                r#"{{"id":"/app-{i}","labels":{{"HAPROXY_GROUP":"external"}},"portDefinitions":[{{"port":{}}}],"healthChecks":[]}}"#,
                11000 + i
            )
        })
        .collect();
    let tasks: Vec<String> = (0..400)
        .map(|i| {
            format!(
                r#"{{"id":"app-{i}.1","appId":"/app-{i}","host":"10.0.{}.{}","ports":[31000],"state":"TASK_RUNNING"}}"#,
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    marathon.set_state(
        format!(r#"{{"apps":[{}]}}"#, apps.join(",")),
        format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")),
    );
    workspace
        .sync(&marathon.url(), "true")
        .arg("--lock-file")
        .arg(workspace.path("apply.lock"))
        .config(&config)
        .arg("--skip-validation")
        .run()
        .assert_exit(7);
    assert_eq!(fs::read_to_string(&config).unwrap(), old);
    let left: Vec<String> = names(&etc)
        .into_iter()
        .filter(|name| name != "haproxy.cfg" && !name.starts_with("haproxy.cfg.status"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn a_change_within_the_min_reload_interval_is_deferred_with_exit_0() {
    // The first run reloads and records when (cron runs share no memory but the state file).
    let changed = Changed::first_run_with(&["--min-reload-interval", "1h"]);
    let run = changed
        .workspace
        .run(&changed.url(), "true", &["--min-reload-interval", "1h"]);
    run.assert_success();
    assert_eq!(run.stderr.lines().count(), 1, "one line:\n{}", run.stderr);
    run.assert_stderr_contains("change deferred until");
    changed.assert_live_untouched();
    assert_eq!(changed.workspace.reload_count(), 1);
    // Without the interval, the same change is applied: it was never lost.
    changed
        .workspace
        .run(&changed.url(), "true", &[])
        .assert_success()
        .assert_stderr_contains("applied");
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
