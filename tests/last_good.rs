//! Last-known-good per app, through the binary run once per Marathon change (as cron runs it),
//! with a real master-worker HAProxy and real traffic: a live app whose new definition cannot be
//! rendered keeps serving at its last good definition with Marathon's current tasks, exit 10,
//! named in the warning, `status` and the metrics; once fixed it follows Marathon again; the
//! kept state survives between runs and goes when the app is deleted. Dry runs never write it.

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::backend::{http_get, Backend};
use support::haproxy::{free_port, wait_for, Haproxy};
use support::marathon::FakeMarathon;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

/// A work directory with template overrides that keep HAProxy on 127.0.0.1 and free of system
/// paths, and a metrics file.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let templates = dir.path().join("templates");
        fs::create_dir(&templates).unwrap();
        fs::write(
            templates.join("HAPROXY_HEAD"),
            "global\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  timeout connect 2s\n  \
             timeout client 5s\n  timeout server 5s\n",
        )
        .unwrap();
        fs::write(
            templates.join("HAPROXY_HTTP_FRONTEND_APPID_HEAD"),
            format!(
                "\nfrontend marathon_http_appid_in\n  bind 127.0.0.1:{}\n  mode http\n",
                free_port()
            ),
        )
        .unwrap();
        Workspace { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }

    fn last_good(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg.last-good")
    }

    fn metrics(&self) -> PathBuf {
        self.dir.path().join("metrics.prom")
    }

    fn run(&self, marathon: &FakeMarathon, reload: &str, extra: &[&str]) -> Output {
        Command::new(BIN)
            .args(["--marathon", &marathon.url(), "--group", "external"])
            .arg("--dont-bind-http-https")
            .arg("--haproxy-config")
            .arg(self.config())
            .arg("--templates")
            .arg(self.dir.path().join("templates"))
            .arg("--metrics-file")
            .arg(self.metrics())
            .args(["--haproxy-bin", support::haproxy::HAPROXY_BIN])
            .args(["--reload-command", reload])
            .args(["--timeout", "2", "--command-timeout", "10"])
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::null())
            .output()
            .expect("running haproxy-marathon-sync")
    }

    fn status(&self) -> String {
        let output = Command::new(BIN)
            .arg("--haproxy-config")
            .arg(self.config())
            .arg("status")
            .env_clear()
            .output()
            .expect("running status");
        text(&output.stdout)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// One app on 127.0.0.1:`port` in http mode, with `labels` added and one task on `task_port`.
fn app(id: &str, port: u16, labels: &str, version: &str) -> String {
    format!(
        r#"{{"id":"{id}","version":"{version}","versionInfo":{{"lastConfigChangeAt":"{version}"}},"labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"{labels}}},"portDefinitions":[{{"port":{port}}}],"healthChecks":[]}}"#
    )
}

fn task(id: &str, port: u16) -> String {
    format!(
        r#"{{"id":"{}.{port}","appId":"{id}","host":"127.0.0.1","ports":[{port}],"state":"TASK_RUNNING"}}"#,
        &id[1..]
    )
}

fn state(marathon: &FakeMarathon, apps: &[String], tasks: &[String]) {
    marathon.set_state(
        format!(r#"{{"apps":[{}]}}"#, apps.join(",")),
        format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")),
    );
}

/// Waits (bounded) until a request through HAProxy on `port` is answered 200 by `name`.
fn traffic_reaches(port: u16, name: &str) -> bool {
    wait_for(
        Duration::from_secs(15),
        || matches!(http_get(port, "/"), Ok((200, body)) if body == name),
    )
}

#[test]
fn a_live_app_redeployed_with_a_bad_label_keeps_answering_and_follows_the_fix() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (first, second) = (Backend::start("task-1"), Backend::start("task-2"));
    let port = free_port();
    let balance = |value: &str| format!(r#","HAPROXY_0_BALANCE":"{value}""#);
    state(
        &marathon,
        &[app("/web", port, &balance("leastconn"), "v1")],
        &[task("/web", first.port)],
    );
    assert_exit(&workspace.run(&marathon, "true", &[]), 0);
    let kept = fs::read_to_string(workspace.last_good()).unwrap();
    assert!(
        kept.contains("\"/web\"") && kept.contains("\"v1\""),
        "{kept}"
    );
    let haproxy = Haproxy::start(&workspace.config(), &workspace.dir.path().join("run"), port);
    assert!(traffic_reaches(port, "task-1"), "{}", haproxy.log_text());

    // A typo in the redeploy, and Marathon replaced the task: held at v1, on the new task.
    state(
        &marathon,
        &[app("/web", port, &balance("leastconns"), "v2")],
        &[task("/web", second.port)],
    );
    let held = workspace.run(&marathon, &haproxy.reload_shell_command(), &[]);
    assert_exit(&held, 10);
    let stderr = text(&held.stderr);
    assert!(
        stderr.contains("app /web: label HAPROXY_0_BALANCE")
            && stderr.contains("leastconns")
            && stderr.contains("held at its last good definition (version v1)"),
        "{stderr}"
    );
    let live = fs::read(workspace.config()).unwrap();
    let config = text(&live);
    assert!(config.contains("  balance leastconn\n"), "{config}");
    assert!(config.contains(&second.address()) && !config.contains(&first.address()));
    assert!(haproxy.wait_for_reloads(1), "{}", haproxy.show_proc());
    assert!(traffic_reaches(port, "task-2"), "{}", haproxy.log_text());
    let status = workspace.status();
    assert!(status.contains("held back:    /web"), "{status}");
    let metrics = fs::read_to_string(workspace.metrics()).unwrap();
    assert!(
        metrics.contains("haproxy_marathon_sync_apps_held 1\n"),
        "{metrics}"
    );
    assert!(
        fs::read_to_string(workspace.last_good())
            .unwrap()
            .contains("\"v1\""),
        "the store keeps the last good version"
    );

    // The next cron run says it again and changes nothing.
    let again = workspace.run(&marathon, &haproxy.reload_shell_command(), &[]);
    assert_exit(&again, 10);
    assert!(text(&again.stderr).contains("version v1"));
    assert_eq!(fs::read(workspace.config()).unwrap(), live);

    // Fixed: rendered from Marathon again.
    state(
        &marathon,
        &[app("/web", port, &balance("first"), "v3")],
        &[task("/web", second.port)],
    );
    let fixed = workspace.run(&marathon, &haproxy.reload_shell_command(), &[]);
    assert_exit(&fixed, 0);
    let config = fs::read_to_string(workspace.config()).unwrap();
    assert!(config.contains("  balance first\n"), "{config}");
    assert!(haproxy.wait_for_reloads(2), "{}", haproxy.show_proc());
    assert!(traffic_reaches(port, "task-2"), "{}", haproxy.log_text());
    assert!(fs::read_to_string(workspace.last_good())
        .unwrap()
        .contains("\"v3\""));
    assert!(!workspace.status().contains("held back"));
    assert!(fs::read_to_string(workspace.metrics())
        .unwrap()
        .contains("haproxy_marathon_sync_apps_held 0\n"));
}

#[test]
fn a_live_app_whose_new_sections_haproxy_rejects_keeps_serving_at_its_last_good_definition() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let backend = Backend::start("web-task");
    let (port, other_port) = (free_port(), free_port());
    let other = Backend::start("other-task");
    let apps = |web_labels: &str, version: &str, other_task: u16| {
        (
            vec![
                app("/web", port, web_labels, version),
                app("/other", other_port, "", "v1"),
            ],
            vec![task("/web", backend.port), task("/other", other_task)],
        )
    };
    let (list, tasks) = apps("", "v1", other.port);
    state(&marathon, &list, &tasks);
    assert_exit(&workspace.run(&marathon, "true", &[]), 0);
    let haproxy = Haproxy::start(&workspace.config(), &workspace.dir.path().join("run"), port);
    assert!(traffic_reaches(port, "web-task"), "{}", haproxy.log_text());

    // A template label that formats but that HAProxy refuses; /other changes too and lands.
    let moved = Backend::start("other-moved");
    let refused = r#","HAPROXY_0_BACKEND_HEAD":"\nbackend {backend}\n  balance {balance}\n  mode {mode}\n  no-such-directive on\n""#;
    let (list, tasks) = apps(refused, "v2", moved.port);
    state(&marathon, &list, &tasks);
    let output = workspace.run(&marathon, &haproxy.reload_shell_command(), &[]);
    assert_exit(&output, 10);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("app /web: HAProxy rejects its sections")
            && stderr.contains("no-such-directive")
            && stderr.contains("held at its last good definition (version v1)"),
        "{stderr}"
    );
    assert!(!stderr.contains("app /other"), "{stderr}");
    let config = fs::read_to_string(workspace.config()).unwrap();
    assert!(!config.contains("no-such-directive"), "{config}");
    assert!(config.contains(&moved.address()), "{config}");
    assert!(haproxy.wait_for_reloads(1), "{}", haproxy.show_proc());
    assert!(traffic_reaches(port, "web-task"), "{}", haproxy.log_text());
    assert!(traffic_reaches(other_port, "other-moved"));
}

#[test]
fn cron_runs_keep_the_last_good_state_and_drop_it_when_the_app_is_deleted() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let ports = [free_port(), free_port(), free_port()];
    let bad = r#","HAPROXY_0_BALANCE":"leastconns""#;
    let cluster = |a_labels: &str, a_version: &str, with_a: bool| {
        let mut apps = vec![app("/b", ports[1], "", "v1"), app("/c", ports[2], "", "v1")];
        let mut tasks = vec![task("/b", 31002), task("/c", 31003)];
        if with_a {
            apps.insert(0, app("/a", ports[0], a_labels, a_version));
            tasks.insert(0, task("/a", 31001));
        }
        (apps, tasks)
    };
    let (apps, tasks) = cluster("", "v1", true);
    state(&marathon, &apps, &tasks);
    assert_exit(&workspace.run(&marathon, "true", &[]), 0);

    // Run 2: /a breaks; it is held, in a run that shares no memory with the first.
    let (apps, tasks) = cluster(bad, "v2", true);
    state(&marathon, &apps, &tasks);
    assert_exit(&workspace.run(&marathon, "true", &[]), 10);
    let live = fs::read(workspace.config()).unwrap();
    assert!(text(&live).contains(&format!("backend a_{}", ports[0])));
    let kept = fs::read(workspace.last_good()).unwrap();
    assert!(text(&kept).contains("\"/a\""), "{}", text(&kept));

    // A dry run reads the store (still held) and writes nothing.
    let dry = workspace.run(&marathon, "true", &["--dry-run"]);
    assert_exit(&dry, 10);
    assert!(text(&dry.stdout).contains(&format!("backend a_{}", ports[0])));
    assert_eq!(fs::read(workspace.last_good()).unwrap(), kept);
    assert_eq!(fs::read(workspace.config()).unwrap(), live);

    // Run 3: /a is deleted from Marathon: its kept definition goes with it.
    let (apps, tasks) = cluster("", "", false);
    state(&marathon, &apps, &tasks);
    assert_exit(&workspace.run(&marathon, "true", &[]), 0);
    let kept = fs::read_to_string(workspace.last_good()).unwrap();
    assert!(
        !kept.contains("\"/a\"") && kept.contains("\"/b\""),
        "{kept}"
    );

    // Run 4: /a comes back broken: a new app now, left out as before (exit 0; the config is
    // the one without /a, so this run changes nothing and prints nothing), listed by `status`.
    let (apps, tasks) = cluster(bad, "v3", true);
    state(&marathon, &apps, &tasks);
    let back = workspace.run(&marathon, "true", &["--log-level", "debug"]);
    assert_exit(&back, 0);
    let stderr = text(&back.stderr);
    assert!(
        stderr.contains("app /a: label HAPROXY_0_BALANCE") && stderr.contains("app left out"),
        "{stderr}"
    );
    assert!(!fs::read_to_string(workspace.config())
        .unwrap()
        .contains("backend a_"));
    assert!(workspace.status().contains("left out:     /a"));
}

/// A definition is kept as our own JSON of the parsed app: read back, every corpus case's
/// apps must render exactly as Marathon's original JSON does.
#[test]
fn every_corpus_definition_read_back_from_the_store_renders_the_same() {
    use haproxy_marathon_sync::marathon::{App, AppList, TaskList};
    use haproxy_marathon_sync::{model, render};
    let cases = support::corpus::load_cases();
    assert!(!cases.is_empty(), "the compatibility corpus is missing");
    for case in &cases {
        let apps: AppList = serde_json::from_str(&case.apps_json).unwrap();
        let tasks: TaskList = serde_json::from_str(&case.tasks_json).unwrap();
        let kept: Vec<App> = apps
            .apps
            .iter()
            .map(|app| serde_json::from_slice(&serde_json::to_vec(app).unwrap()).unwrap())
            .collect();
        let resolve = |host: &str| case.resolve(host);
        let render_config = case.render_config();
        let templates = render::Templates::load(&render_config).unwrap();
        let render_with = |apps: &[App]| {
            let (model, warnings) =
                model::build(apps, &tasks.tasks, &case.model_config(), &resolve);
            let rendered = render::render(&model, &templates, &render_config)
                .map(|rendered| rendered.config)
                .map_err(|error| format!("{error:#}"));
            (rendered, warnings)
        };
        assert_eq!(
            render_with(&apps.apps),
            render_with(&kept),
            "case {}",
            case.name
        );
    }
}
