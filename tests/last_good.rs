//! Last-known-good per app, through the binary run once per Marathon change (as cron runs it),
//! with a real master-worker HAProxy and real traffic: a live app whose new definition cannot be
//! rendered keeps serving at its last good definition with Marathon's current tasks, exit 10,
//! named in the warning, `status` and the metrics; once fixed it follows Marathon again; the
//! kept state survives between runs and goes when the app is deleted. Dry runs never write it.

mod support;

use std::fs;

use support::backend::{traffic_reaches, Backend};
use support::haproxy::Haproxy;
use support::marathon::FakeMarathon;
use support::ports::Port;
use support::sync::Run;
use support::workspace::{http_app, running_task, Workspace};

/// One cron run against `marathon` with `reload`, the workspace's metrics file and `extra`.
fn run(workspace: &Workspace, marathon: &FakeMarathon, reload: &str, extra: &[&str]) -> Run {
    workspace
        .sync(&marathon.url(), reload)
        .arg("--metrics-file")
        .arg(workspace.metrics())
        .args(extra)
        .run()
}

#[test]
fn a_live_app_redeployed_with_a_bad_label_keeps_answering_and_follows_the_fix() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (first, second) = (Backend::start("task-1"), Backend::start("task-2"));
    let service = Port::reserve();
    let port = service.number();
    let balance = |value| [("HAPROXY_0_BALANCE", value)];
    marathon.set_apps(
        &[http_app("/web", port, &balance("leastconn"), "v1")],
        &[running_task("/web", first.port)],
    );
    run(&workspace, &marathon, "true", &[]).assert_exit(0);
    let kept = fs::read_to_string(workspace.last_good()).unwrap();
    assert!(
        kept.contains("\"/web\"") && kept.contains("\"v1\""),
        "{kept}"
    );
    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), port);
    assert!(traffic_reaches(port, "task-1"), "{}", haproxy.log_text());

    // A typo in the redeploy, and Marathon replaced the task: held at v1, on the new task.
    marathon.set_apps(
        &[http_app("/web", port, &balance("leastconns"), "v2")],
        &[running_task("/web", second.port)],
    );
    let held = run(&workspace, &marathon, &haproxy.reload_shell_command(), &[]);
    held.assert_exit(10);
    assert!(
        held.stderr.contains("app /web: label HAPROXY_0_BALANCE")
            && held.stderr.contains("leastconns")
            && held
                .stderr
                .contains("held at its last good definition (version v1)"),
        "{}",
        held.stderr
    );
    let live = workspace.read_config().unwrap();
    let config = String::from_utf8_lossy(&live);
    assert!(config.contains("  balance leastconn\n"), "{config}");
    assert!(config.contains(&second.address()) && !config.contains(&first.address()));
    assert!(haproxy.wait_for_reloads(1), "{}", haproxy.show_proc());
    assert!(traffic_reaches(port, "task-2"), "{}", haproxy.log_text());
    let status = workspace.status().stdout;
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

    // The next cron run changes nothing and, the same app being held for the same reason,
    // says nothing: the exit status, `status` and the metrics tell.
    run(&workspace, &marathon, &haproxy.reload_shell_command(), &[])
        .assert_exit(10)
        .assert_silent();
    assert_eq!(workspace.read_config().unwrap(), live);

    // Fixed: rendered from Marathon again.
    marathon.set_apps(
        &[http_app("/web", port, &balance("first"), "v3")],
        &[running_task("/web", second.port)],
    );
    run(&workspace, &marathon, &haproxy.reload_shell_command(), &[]).assert_exit(0);
    let config = fs::read_to_string(workspace.config()).unwrap();
    assert!(config.contains("  balance first\n"), "{config}");
    assert!(haproxy.wait_for_reloads(2), "{}", haproxy.show_proc());
    assert!(traffic_reaches(port, "task-2"), "{}", haproxy.log_text());
    assert!(fs::read_to_string(workspace.last_good())
        .unwrap()
        .contains("\"v3\""));
    assert!(!workspace.status().stdout.contains("held back"));
    assert!(fs::read_to_string(workspace.metrics())
        .unwrap()
        .contains("haproxy_marathon_sync_apps_held 0\n"));
}

#[test]
fn a_live_app_whose_new_sections_haproxy_rejects_keeps_serving_at_its_last_good_definition() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let backend = Backend::start("web-task");
    let (service, other_service) = (Port::reserve(), Port::reserve());
    let (port, other_port) = (service.number(), other_service.number());
    let other = Backend::start("other-task");
    let set_cluster = |web_labels: &[(&str, &str)], version: &str, other_task: u16| {
        marathon.set_apps(
            &[
                http_app("/web", port, web_labels, version),
                http_app("/other", other_port, &[], "v1"),
            ],
            &[
                running_task("/web", backend.port),
                running_task("/other", other_task),
            ],
        );
    };
    set_cluster(&[], "v1", other.port);
    run(&workspace, &marathon, "true", &[]).assert_exit(0);
    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), port);
    assert!(traffic_reaches(port, "web-task"), "{}", haproxy.log_text());

    // A template label that formats but that HAProxy refuses; /other changes too and lands.
    let moved = Backend::start("other-moved");
    let refused = [(
        "HAPROXY_0_BACKEND_HEAD",
        "\nbackend {backend}\n  balance {balance}\n  mode {mode}\n  no-such-directive on\n",
    )];
    set_cluster(&refused, "v2", moved.port);
    let output = run(&workspace, &marathon, &haproxy.reload_shell_command(), &[]);
    output.assert_exit(10);
    let stderr = &output.stderr;
    assert!(
        stderr.contains("app /web: HAProxy rejects its sections")
            && stderr.contains("no-such-directive")
            && stderr.contains("held at its last good definition (version v1)"),
        "{stderr}"
    );
    output.assert_stderr_lacks("app /other");
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
    let services = [Port::reserve(), Port::reserve(), Port::reserve()];
    let ports = services.each_ref().map(Port::number);
    let bad = [("HAPROXY_0_BALANCE", "leastconns")];
    let set_cluster = |a_labels: &[(&str, &str)], a_version: &str, with_a: bool| {
        let mut apps = vec![
            http_app("/b", ports[1], &[], "v1"),
            http_app("/c", ports[2], &[], "v1"),
        ];
        let mut tasks = vec![running_task("/b", 31002), running_task("/c", 31003)];
        if with_a {
            apps.insert(0, http_app("/a", ports[0], a_labels, a_version));
            tasks.insert(0, running_task("/a", 31001));
        }
        marathon.set_apps(&apps, &tasks);
    };
    set_cluster(&[], "v1", true);
    run(&workspace, &marathon, "true", &[]).assert_exit(0);

    // Run 2: /a breaks; it is held, in a run that shares no memory with the first.
    set_cluster(&bad, "v2", true);
    run(&workspace, &marathon, "true", &[]).assert_exit(10);
    let live = workspace.read_config().unwrap();
    assert!(String::from_utf8_lossy(&live).contains(&format!("backend a_{}", ports[0])));
    let kept = fs::read(workspace.last_good()).unwrap();
    let kept_text = String::from_utf8_lossy(&kept);
    assert!(kept_text.contains("\"/a\""), "{kept_text}");

    // A dry run reads the store (still held) and writes nothing.
    run(&workspace, &marathon, "true", &["--dry-run"])
        .assert_exit(10)
        .assert_stdout_contains(&format!("backend a_{}", ports[0]));
    assert_eq!(fs::read(workspace.last_good()).unwrap(), kept);
    assert_eq!(workspace.read_config().unwrap(), live);

    // Run 3: /a is deleted from Marathon: its kept definition goes with it.
    set_cluster(&[], "", false);
    run(&workspace, &marathon, "true", &[]).assert_exit(0);
    let kept = fs::read_to_string(workspace.last_good()).unwrap();
    assert!(
        !kept.contains("\"/a\"") && kept.contains("\"/b\""),
        "{kept}"
    );

    // Run 4: /a comes back broken: a new app now, left out as before (exit 0; the config is
    // the one without /a, so this run changes nothing and prints nothing), listed by `status`.
    set_cluster(&bad, "v3", true);
    let back = run(&workspace, &marathon, "true", &["--log-level", "debug"]);
    back.assert_exit(0);
    assert!(
        back.stderr.contains("app /a: label HAPROXY_0_BALANCE")
            && back.stderr.contains("app left out"),
        "{}",
        back.stderr
    );
    assert!(!fs::read_to_string(workspace.config())
        .unwrap()
        .contains("backend a_"));
    assert!(workspace.status().stdout.contains("left out:     /a"));
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
