//! Hostile template labels and templates, end to end through the binary with a stand-in
//! Marathon and a real HAProxy: a label that opens `global` or `program` sections or a stats
//! socket leaves only its own app out (named with label and keyword) and runs nothing; format
//! specs that would exhaust memory or time leave their app out; a `--templates` path that does
//! not exist fails the run before anything is written.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::backend::{http_get, Backend};
use support::haproxy::{free_port, wait_for, Haproxy, HAPROXY_BIN};
use support::marathon::FakeMarathon;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

/// Longest any one run of the binary may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Exit code of a template failure (`Exit::Template` in main.rs).
const EXIT_TEMPLATE: i32 = 4;

/// A work directory with a head that keeps HAProxy on 127.0.0.1, away from system paths, and
/// within the open-file limit.
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
            "global\n  maxconn 1000\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  \
             timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n",
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

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("haproxy.cfg")
    }

    /// Runs the binary once (bounded by [`RUN_LIMIT`]; the child is killed by PID past it).
    fn run(&self, marathon: &str, templates: &Path, extra: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(["--marathon", marathon, "--group", "external"])
            .arg("--dont-bind-http-https")
            .arg("--haproxy-config")
            .arg(self.config())
            .arg("--templates")
            .arg(templates)
            .args(["--haproxy-bin", HAPROXY_BIN, "--reload-command", "true"])
            .args(["--timeout", "5", "--command-timeout", "20"])
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting haproxy-marathon-sync");
        let finished = wait_for(RUN_LIMIT, || matches!(child.try_wait(), Ok(Some(_))));
        if !finished {
            let _ = child.kill();
            let _ = child.wait();
            panic!("haproxy-marathon-sync did not finish within {RUN_LIMIT:?}");
        }
        child.wait_with_output().expect("collecting the run's output")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// One host-networking app on `127.0.0.1:service_port` with one task on `task_port` and the
/// given extra labels.
fn app(id: &str, service_port: u16, task_port: u16, labels: &[(&str, &str)]) -> (String, String) {
    let mut all = serde_json::Map::new();
    all.insert("HAPROXY_GROUP".into(), "external".into());
    all.insert("HAPROXY_0_MODE".into(), "http".into());
    all.insert("HAPROXY_0_BIND_ADDR".into(), "127.0.0.1".into());
    for (name, value) in labels {
        all.insert((*name).into(), (*value).into());
    }
    let app = serde_json::json!({
        "id": id,
        "instances": 1,
        "labels": all,
        "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": service_port, "protocol": "tcp"}],
        "healthChecks": [],
    });
    let task = serde_json::json!({
        "id": format!("{}.1", id.trim_start_matches('/')),
        "appId": id,
        "host": "127.0.0.1",
        "ports": [task_port],
        "state": "TASK_RUNNING",
    });
    (app.to_string(), task.to_string())
}

fn state(apps: &[(String, String)]) -> (String, String) {
    let (apps, tasks): (Vec<&str>, Vec<&str>) = apps
        .iter()
        .map(|(app, task)| (app.as_str(), task.as_str()))
        .unzip();
    (
        format!(r#"{{"apps":[{}]}}"#, apps.join(",")),
        format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")),
    )
}

/// The `program` payload a hostile label carries: it would create `marker` when run.
fn program_payload(marker: &Path) -> String {
    format!(
        "program pwn\n  command /usr/bin/touch {}\n",
        marker.display()
    )
}

/// Control: the payload is live. HAProxy in master-worker mode runs a `program` section, so
/// the hostile-label test below would see the marker if the label got through.
#[test]
fn the_program_payload_runs_when_haproxy_is_given_it() {
    let workspace = Workspace::new();
    let marker = workspace.path("pwned");
    let port = free_port();
    let config = workspace.path("control.cfg");
    fs::write(
        &config,
        format!(
            "global\n  maxconn 100\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  \
             timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n\nfrontend f\n  \
             bind 127.0.0.1:{port}\n\n{}",
            program_payload(&marker)
        ),
    )
    .unwrap();
    let _haproxy = Haproxy::start(&config, &workspace.path("control-run"), port);
    assert!(
        wait_for(Duration::from_secs(15), || marker.exists()),
        "the program section did not run; the hostile-label test would prove nothing"
    );
}

#[test]
fn a_label_leaving_its_section_leaves_only_its_app_out_and_runs_nothing() {
    let workspace = Workspace::new();
    let marker = workspace.path("pwned");
    let good_backend = Backend::start("good");
    let good_port = free_port();
    let head = "\nbackend {backend}\n  balance {balance}\n  mode {mode}\n";
    let with_global = format!(
        "{head}\nglobal\n  master-worker\n\n{}",
        program_payload(&marker)
    );
    let with_program = format!("{head}\n{}", program_payload(&marker));
    let with_stats = format!("{head}  stats socket ipv4@127.0.0.1:{} level admin\n", free_port());
    let apps = [
        app("/good", good_port, good_backend.port, &[]),
        app(
            "/evil-global",
            free_port(),
            free_port(),
            &[("HAPROXY_0_BACKEND_HEAD", &with_global)],
        ),
        app(
            "/evil-program",
            free_port(),
            free_port(),
            &[("HAPROXY_0_BACKEND_HEAD", &with_program)],
        ),
        app(
            "/evil-stats",
            free_port(),
            free_port(),
            &[("HAPROXY_0_BACKEND_HEAD", &with_stats)],
        ),
    ];
    let (apps, tasks) = state(&apps);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);
    // A typo'd template file is named, with the section it was probably meant for.
    fs::write(
        workspace.path("templates/HAPROXY_BACKEND_HAED"),
        "\nbackend {backend}\n",
    )
    .unwrap();

    let output = workspace.run(&marathon.url(), &workspace.path("templates"), &[]);
    assert_exit(&output, 0);
    let stderr = text(&output.stderr);
    for (app, keyword) in [
        ("/evil-global", "`global`"),
        ("/evil-program", "`program`"),
        ("/evil-stats", "`stats`"),
    ] {
        let warned = stderr.lines().any(|line| {
            line.contains(app) && line.contains("HAPROXY_0_BACKEND_HEAD") && line.contains(keyword)
        });
        assert!(warned, "no warning naming {app}, its label and {keyword}:\n{stderr}");
    }
    assert!(
        stderr.contains("HAPROXY_BACKEND_HAED") && stderr.contains("HAPROXY_BACKEND_HEAD?"),
        "{stderr}"
    );

    let config = fs::read_to_string(workspace.config()).unwrap();
    assert!(config.contains("backend good_"), "{config}");
    for refused in ["evil", "program", "master-worker", "stats socket", "touch"] {
        assert!(!config.contains(refused), "{refused:?} reached the config:\n{config}");
    }
    let check = Command::new(HAPROXY_BIN)
        .arg("-c")
        .arg("-f")
        .arg(workspace.config())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), good_port);
    assert!(
        wait_for(
            Duration::from_secs(15),
            || matches!(http_get(good_port, "/"), Ok((200, body)) if body == "good")
        ),
        "the good app is not served"
    );
    let processes = haproxy.show_proc();
    assert!(!processes.contains("pwn"), "{processes}");
    assert!(!marker.exists(), "a program ran");
}

#[test]
fn huge_format_specs_leave_their_app_out_and_the_rest_renders() {
    let workspace = Workspace::new();
    let good_port = free_port();
    let apps = [
        app("/good", good_port, free_port(), &[]),
        app(
            "/wide",
            free_port(),
            free_port(),
            &[("HAPROXY_0_BACKEND_HEAD", "\nbackend {backend:>99999999999}\n")],
        ),
        app(
            "/grouped",
            free_port(),
            free_port(),
            &[(
                "HAPROXY_0_FRONTEND_HEAD",
                "\nfrontend {backend}\n  bind {bindAddr}:{servicePort:0150000,}\n",
            )],
        ),
    ];
    let (apps, tasks) = state(&apps);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);

    let output = workspace.run(&marathon.url(), &workspace.path("templates"), &["--dry-run"]);
    assert_exit(&output, 0);
    let stderr = text(&output.stderr);
    for (app, label) in [
        ("/wide", "BACKEND_HEAD"),
        ("/grouped", "FRONTEND_HEAD"),
    ] {
        let warned = stderr.lines().any(|line| {
            line.contains(app) && line.contains(label) && line.contains("above the limit of 1024")
        });
        assert!(warned, "no warning naming {app} and {label}:\n{stderr}");
    }
    let config = text(&output.stdout);
    assert!(config.contains("backend good_"), "{config}");
    assert!(!config.contains("wide_") && !config.contains("grouped_"), "{config}");
}

#[test]
fn an_operator_template_with_a_huge_spec_fails_the_run_naming_it() {
    let workspace = Workspace::new();
    fs::write(
        workspace.path("templates/HAPROXY_BACKEND_HEAD"),
        "\nbackend {backend:>99999999999}\n",
    )
    .unwrap();
    let (apps, tasks) = state(&[app("/good", free_port(), free_port(), &[])]);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);
    fs::write(workspace.config(), "# live\n").unwrap();

    let output = workspace.run(&marathon.url(), &workspace.path("templates"), &[]);
    assert_exit(&output, EXIT_TEMPLATE);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("HAPROXY_BACKEND_HEAD") && stderr.contains("above the limit of 1024"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(workspace.config()).unwrap(), "# live\n");
}

#[test]
fn a_templates_path_that_does_not_exist_fails_before_anything_is_written() {
    let workspace = Workspace::new();
    let (apps, tasks) = state(&[app("/good", free_port(), free_port(), &[])]);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);
    let live = "global\n  maxconn 10\n# the operator's own head\n";
    fs::write(workspace.config(), live).unwrap();

    let missing = Path::new("/does/not/exist");
    let output = workspace.run(&marathon.url(), missing, &[]);
    assert_exit(&output, EXIT_TEMPLATE);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("/does/not/exist") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(workspace.config()).unwrap(), live);

    let not_a_dir = workspace.path("templates/HAPROXY_HEAD");
    let output = workspace.run(&marathon.url(), &not_a_dir, &[]);
    assert_exit(&output, EXIT_TEMPLATE);
    assert!(text(&output.stderr).contains("is not a directory"));
    assert_eq!(fs::read_to_string(workspace.config()).unwrap(), live);
    let beside: Vec<String> = fs::read_dir(workspace.dir.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("haproxy.cfg") && name != "haproxy.cfg")
        .collect();
    // Only the run record (and the lock it is updated under) note the failed run.
    assert!(
        beside
            .iter()
            .all(|name| name.ends_with(".status") || name.ends_with(".lock")),
        "files written beside the config: {beside:?}"
    );
}
