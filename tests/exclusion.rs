//! What is left out, and what is not an app's fault, through the binary with a real
//! master-worker HAProxy: a listener another process holds leaves out only the app that wants
//! it (named with its port, exit 10, the other apps' changes land, later runs not blocked);
//! an operator template HAProxy rejects fails the run (exit 6, nothing changed, no app
//! bisected out, never a hint at `--force`).

mod support;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::backend::{http_get, Backend};
use support::haproxy::{free_port, wait_for, Haproxy};
use support::marathon::FakeMarathon;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

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

    fn template(&self, name: &str) -> PathBuf {
        self.dir.path().join("templates").join(name)
    }

    fn run(&self, marathon: &FakeMarathon, reload: Reload<'_>, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(BIN);
        command
            .args(["--marathon", &marathon.url(), "--group", "external"])
            .arg("--dont-bind-http-https")
            .arg("--haproxy-config")
            .arg(self.config())
            .arg("--templates")
            .arg(self.dir.path().join("templates"))
            .args(["--haproxy-bin", support::haproxy::HAPROXY_BIN])
            .args(["--timeout", "2", "--command-timeout", "10"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        match reload {
            Reload::Command(line) => command.args(["--reload-command", line]),
            Reload::Master(socket) => command
                .arg("--no-runtime-api")
                .arg("--haproxy-master-socket")
                .arg(socket),
        };
        command.output().expect("running haproxy-marathon-sync")
    }
}

#[derive(Clone, Copy)]
enum Reload<'a> {
    Command(&'a str),
    Master(&'a Path),
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

fn app(id: &str, port: u16, labels: &str) -> String {
    format!(
        r#"{{"id":"{id}","version":"v1","labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"{labels}}},"portDefinitions":[{{"port":{port}}}],"healthChecks":[]}}"#
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

fn traffic_reaches(port: u16, name: &str) -> bool {
    wait_for(
        Duration::from_secs(15),
        || matches!(http_get(port, "/"), Ok((200, body)) if body == name),
    )
}

#[test]
fn a_port_another_process_holds_leaves_out_its_app_and_the_other_changes_land() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (web_port, web_task, moved_task) = (
        free_port(),
        Backend::start("web-1"),
        Backend::start("web-2"),
    );
    state(
        &marathon,
        &[app("/web", web_port, "")],
        &[task("/web", web_task.port)],
    );
    assert_exit(&workspace.run(&marathon, Reload::Command("true"), &[]), 0);
    let haproxy = Haproxy::start(
        &workspace.config(),
        &workspace.dir.path().join("run"),
        web_port,
    );
    let master = Reload::Master(&haproxy.master_socket);
    assert!(traffic_reaches(web_port, "web-1"), "{}", haproxy.log_text());

    // Another process on the host listens where the new app /new wants to; /web moves.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let new_task = Backend::start("new-1");
    let apps = [app("/web", web_port, ""), app("/new", taken, "")];
    let tasks = [task("/web", moved_task.port), task("/new", new_task.port)];
    state(&marathon, &apps, &tasks);
    let output = workspace.run(&marathon, master, &[]);
    assert_exit(&output, 10);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "app /new: service port {taken}: cannot listen on 127.0.0.1:{taken}"
        )) && stderr.contains("in use"),
        "{stderr}"
    );
    let live = fs::read(workspace.config()).unwrap();
    let config = text(&live);
    assert!(!config.contains(&format!("new_{taken}")), "{config}");
    assert!(config.contains(&moved_task.address()), "{config}");
    assert!(haproxy.wait_for_reloads(1), "{}", haproxy.show_proc());
    assert!(traffic_reaches(web_port, "web-2"), "{}", haproxy.log_text());

    // The next run is not blocked: the same answer, and nothing to change.
    let again = workspace.run(&marathon, master, &[]);
    assert_exit(&again, 10);
    assert!(text(&again.stderr).contains(&format!("127.0.0.1:{taken}")));
    assert_eq!(fs::read(workspace.config()).unwrap(), live);

    // The port is freed: the app lands.
    drop(squatter);
    let freed = workspace.run(&marathon, master, &[]);
    assert_exit(&freed, 0);
    assert!(haproxy.wait_for_reloads(2), "{}", haproxy.show_proc());
    assert!(traffic_reaches(taken, "new-1"), "{}", haproxy.log_text());
}

#[test]
fn a_live_app_moved_to_a_port_another_process_holds_stays_on_its_last_good_port() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (port, backend) = (free_port(), Backend::start("web-1"));
    state(
        &marathon,
        &[app("/web", port, "")],
        &[task("/web", backend.port)],
    );
    assert_exit(&workspace.run(&marathon, Reload::Command("true"), &[]), 0);
    let haproxy = Haproxy::start(&workspace.config(), &workspace.dir.path().join("run"), port);
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let moved = app("/web", taken, "").replace("\"v1\"", "\"v2\"");
    state(&marathon, &[moved], &[task("/web", backend.port)]);
    let live = fs::read(workspace.config()).unwrap();
    let output = workspace.run(&marathon, Reload::Master(&haproxy.master_socket), &[]);
    assert_exit(&output, 10);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("app /web: service port {taken}"))
            && stderr.contains("held at its last good definition (version v1)"),
        "{stderr}"
    );
    assert_eq!(
        fs::read(workspace.config()).unwrap(),
        live,
        "v1 is what is live"
    );
    assert!(traffic_reaches(port, "web-1"), "{}", haproxy.log_text());
}

#[test]
fn an_operator_template_haproxy_rejects_exits_6_changes_nothing_and_blames_no_app() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (sticky_port, plain_port) = (free_port(), free_port());
    let (sticky_task, plain_task) = (Backend::start("sticky-1"), Backend::start("plain-1"));
    state(
        &marathon,
        &[
            app("/sticky", sticky_port, r#","HAPROXY_0_STICKY":"true""#),
            app("/plain", plain_port, ""),
        ],
        &[
            task("/sticky", sticky_task.port),
            task("/plain", plain_task.port),
        ],
    );
    assert_exit(&workspace.run(&marathon, Reload::Command("true"), &[]), 0);
    let haproxy = Haproxy::start(
        &workspace.config(),
        &workspace.dir.path().join("run"),
        sticky_port,
    );
    assert!(traffic_reaches(sticky_port, "sticky-1"));
    let live = fs::read(workspace.config()).unwrap();
    let reload = haproxy.reload_shell_command();

    // A typo in the operator's sticky options: HAProxy refuses every sticky backend.
    let sticky_file = workspace.template("HAPROXY_BACKEND_STICKY_OPTIONS");
    fs::write(
        &sticky_file,
        "  cookie mesosphere_server_id insert indirect nocahce\n",
    )
    .unwrap();
    let output = workspace.run(&marathon, Reload::Command(&reload), &[]);
    assert_exit(&output, 6);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "HAProxy rejects the operator's template HAPROXY_BACKEND_STICKY_OPTIONS (from {})",
            sticky_file.display()
        )) && stderr.contains("[ALERT]")
            && stderr.contains("'cookie' supports"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("app left out") && !stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(fs::read(workspace.config()).unwrap(), live);
    let rejected = fs::read_to_string(workspace.dir.path().join("haproxy.cfg.rejected")).unwrap();
    assert!(rejected.contains("nocahce"));
    fs::remove_file(&sticky_file).unwrap();

    // A broken backend head from the environment hits every backend: the operator's too.
    let output = workspace.run(
        &marathon,
        Reload::Command(&reload),
        &[(
            "HAPROXY_BACKEND_HEAD",
            "\\nbackend {backend}\\n  balance {balance}\\n  mode {mode}\\n  no-such-option on\\n",
        )],
    );
    assert_exit(&output, 6);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(
            "HAProxy rejects the operator's template HAPROXY_BACKEND_HEAD (from the environment variable)"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("app left out") && !stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(fs::read(workspace.config()).unwrap(), live);
    assert!(traffic_reaches(sticky_port, "sticky-1"));
    assert!(traffic_reaches(plain_port, "plain-1"));
}
