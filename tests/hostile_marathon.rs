//! End to end through the binary with a Marathon that serves hostile apps and tasks (issue 9):
//! newlines that would add `global`/`program` sections, conditional blocks with `setenv`,
//! environment references and sample fetches, a task address with a server line in it. The run
//! must succeed for the well-formed apps, name each refused value (app, field, value, on one
//! line), render a config whose every line sits in a section we expect, pass `haproxy -c`, and
//! a real master-worker HAProxy started on it must run no `program` (a control run shows the
//! same HAProxy does run one when a config has it). Also the marathon-lb fidelity the grammars
//! must not cost: vhost lists with spaces, `--group ''`, weights beyond 64 bits, and conflicts
//! said out loud without changing the output.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::json;

use support::backend::{http_get, Backend};
use support::haproxy::{free_port, wait_for, Haproxy, HAPROXY_BIN};
use support::marathon::FakeMarathon;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");
/// A stand-in secret: the hostile BALANCE label asks HAProxy for it.
const SECRET: &str = "s3cr3t-never-shown";

/// A work directory with a head and a :9091 frontend that keep HAProxy on 127.0.0.1 and away
/// from system paths.
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
        support::cert::self_signed_pem(dir.path());
        Workspace { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }

    /// Where a `program` section of the payload would leave its mark.
    fn marker(&self) -> PathBuf {
        self.dir.path().join("pwned")
    }

    fn run(&self, marathon: &str, extra: &[&str]) -> Output {
        self.run_with(marathon, extra, &[])
    }

    fn run_with(&self, marathon: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .args(["--marathon", marathon, "--haproxy-config"])
            .arg(self.config())
            .arg("--templates")
            .arg(self.dir.path().join("templates"))
            .args(["--haproxy-bin", HAPROXY_BIN, "--reload-command", "true"])
            .arg("--ssl-certs")
            .arg(self.dir.path().join("cert.pem"))
            .args(["--timeout", "2", "--command-timeout", "10"])
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("running haproxy-marathon-sync")
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

fn app(id: &str, port: u16, labels: serde_json::Value) -> serde_json::Value {
    let mut all = json!({"HAPROXY_GROUP": "external", "HAPROXY_0_BIND_ADDR": "127.0.0.1"});
    for (key, value) in labels.as_object().unwrap() {
        all[key] = value.clone();
    }
    json!({"id": id, "labels": all, "portDefinitions": [{"port": port}], "healthChecks": []})
}

fn task(app_id: &str, id: &str, host: &str, port: u16) -> serde_json::Value {
    json!({"id": id, "appId": app_id, "host": host, "ports": [port], "state": "TASK_RUNNING"})
}

/// `/v2/tasks` with one task on 127.0.0.1:31000 for each app.
fn one_task_each(app_ids: &[&str]) -> serde_json::Value {
    let tasks: Vec<serde_json::Value> = app_ids
        .iter()
        .map(|id| task(id, &format!("{}.1", &id[1..]), "127.0.0.1", 31000))
        .collect();
    json!({ "tasks": tasks })
}

/// The hostile cluster: one app served as it should be, and beside it every kind of payload.
struct Hostile {
    apps: String,
    tasks: String,
    good_port: u16,
    checked_port: u16,
    ip_port: u16,
}

fn hostile_cluster(workspace: &Workspace, good: &Backend, other: &Backend) -> Hostile {
    let program = format!(
        "\nglobal\n  master-worker\n\nprogram evil\n  command /usr/bin/touch {}\n",
        workspace.marker().display()
    );
    let ports: Vec<u16> = (0..8).map(|_| free_port()).collect();
    let mut checked = app("/checked", ports[1], json!({"HAPROXY_0_MODE": "http"}));
    checked["healthChecks"] = json!([{"protocol": "HTTP", "portIndex": 0, "path": format!("/{program}"),
        "command": {"value": format!("true{program}")}}]);
    let mut ip_per_task = app("/ipt", ports[2], json!({}));
    ip_per_task["ipAddress"] = json!({"discovery": {"ports": [{"number": other.port}]}});
    let apps = json!({"apps": [
        app("/good", ports[0], json!({})),
        checked,
        ip_per_task,
        app("/blue", ports[3], json!({"HAPROXY_DEPLOYMENT_GROUP":
            format!("shop\n.if !defined(EVIL)\n  setenv EVIL 1\n.endif{program}")})),
        app("/balance", ports[4], json!({"HAPROXY_0_BALANCE":
            "hash \"${HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS}\""})),
        app("/revproxy", ports[5], json!({"HAPROXY_0_MODE": "http",
            "HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH": "%[env(HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS)]"})),
        app("/hosts", ports[6], json!({})),
        app(&format!("/named{program}"), ports[7], json!({})),
    ]});
    let mut ip_task = task("/ipt", "ipt.1", "127.0.0.1", other.port);
    ip_task["ipAddresses"] = json!([{"ipAddress": format!("127.0.0.1{program}")}]);
    let mut ip_task_ok = task("/ipt", "ipt.2", "127.0.0.1", other.port);
    ip_task_ok["ipAddresses"] = json!([{"ipAddress": "127.0.0.1"}]);
    let tasks = json!({"tasks": [
        task("/good", "good.1", "127.0.0.1", good.port),
        task("/checked", "checked.1", "127.0.0.1", other.port),
        ip_task,
        ip_task_ok,
        task("/blue", "blue.1", "127.0.0.1", other.port),
        task("/balance", "balance.1", "127.0.0.1", other.port),
        task("/revproxy", "revproxy.1", "127.0.0.1", other.port),
        task("/hosts", "hosts.1", &format!("127.0.0.1{program}"), other.port),
        task("/hosts", "hosts.2", "127.0.0.1", other.port),
    ]});
    Hostile {
        apps: apps.to_string(),
        tasks: tasks.to_string(),
        good_port: ports[0],
        checked_port: ports[1],
        ip_port: ports[2],
    }
}

/// Each section header of `config` (`frontend x`, `backend y`, `global`, ...); panics on a
/// line that is neither a header we expect nor inside a section.
fn section_headers(config: &str) -> BTreeSet<String> {
    let mut headers = BTreeSet::new();
    for line in config.lines() {
        if line.trim().is_empty() || line.starts_with(' ') {
            assert!(
                !headers.is_empty() || line.trim().is_empty(),
                "a line before any section: {line:?}"
            );
            continue;
        }
        headers.insert(line.to_string());
    }
    headers
}

#[test]
fn a_hostile_marathon_gets_no_line_no_section_and_no_program() {
    let workspace = Workspace::new();
    let good = Backend::start("good");
    let other = Backend::start("other");
    let hostile = hostile_cluster(&workspace, &good, &other);
    let marathon = FakeMarathon::start();
    marathon.set_state(&hostile.apps, &hostile.tasks);

    let credentials = format!("ops:{SECRET}");
    let output = workspace.run_with(
        &marathon.url(),
        &["--group", "external", "--dont-bind-http-https"],
        &[("HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS", &credentials)],
    );
    assert_exit(&output, 0);
    let stderr = text(&output.stderr);
    let config = fs::read_to_string(workspace.config()).unwrap();

    // Each refused value is named with its app and field, escaped onto one line.
    for expected in [
        r#"app /checked: healthChecks[0].path: "/\nglobal\n  master-worker\n\nprogram evil\n  command /usr/bin/touch "#,
        r#"app /ipt: task ipt.1: ipAddresses[0].ipAddress: "127.0.0.1\nglobal\n  master-worker"#,
        r#"app /blue: label HAPROXY_DEPLOYMENT_GROUP: the deployment group becomes the app id: "/shop\n.if !defined(EVIL)\n  setenv EVIL 1\n.endif\nglobal"#,
        r#"app /balance: label HAPROXY_0_BALANCE: "hash \"${HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS}\"": "${" at byte 6 is an environment reference"#,
        r#"app /revproxy: label HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH: "%[env(HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS)]": "%[" at byte 0 is a sample fetch"#,
        r#"app /hosts: task hosts.1: host: "127.0.0.1\nglobal\n  master-worker"#,
        r#"app /named\nglobal\n  master-worker\n\nprogram evil\n  command /usr/bin/touch "#,
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("warning: app "))
        .collect();
    assert_eq!(
        warnings.len(),
        7,
        "one warning per refused value:\n{stderr}"
    );
    assert!(!stderr.contains(SECRET) && !config.contains(SECRET));

    // Every line sits in a section we expect; nothing of the payloads is there.
    let mut expected: BTreeSet<String> = ["global", "defaults", "frontend marathon_http_appid_in"]
        .map(String::from)
        .into();
    for (name, port) in [
        ("good", hostile.good_port),
        ("checked", hostile.checked_port),
        ("ipt", hostile.ip_port),
    ] {
        expected.insert(format!("frontend {name}_{port}"));
        expected.insert(format!("backend {name}_{port}"));
    }
    let hosts_port = config
        .lines()
        .find_map(|line| line.strip_prefix("backend hosts_"))
        .expect("the /hosts app keeps its good task")
        .to_string();
    expected.insert(format!("frontend hosts_{hosts_port}"));
    expected.insert(format!("backend hosts_{hosts_port}"));
    assert_eq!(section_headers(&config), expected, "{config}");
    for word in [
        "evil",
        "program",
        "setenv",
        ".if",
        "master-worker",
        "${",
        "%[env",
    ] {
        assert!(
            !config.contains(word),
            "{word:?} reached the config:\n{config}"
        );
    }
    // The refused check is left out of HAProxy's checks; the app is served in http mode.
    let checked = config
        .split("\nbackend ")
        .find(|section| section.starts_with("checked_"))
        .unwrap();
    assert!(
        checked.contains("mode http") && !checked.contains("httpchk"),
        "{checked}"
    );
    // The IP-per-task app keeps its good task, the /hosts app its good host.
    assert_eq!(
        config.matches(&format!("127.0.0.1:{}", other.port)).count(),
        3,
        "{config}"
    );

    let check = Command::new(HAPROXY_BIN)
        .args(["-c", "-f"])
        .arg(workspace.config())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    // A control run: this HAProxy does start a `program` section when a config has one, so
    // the marker's absence below means something.
    let control_dir = tempfile::tempdir().unwrap();
    let control_mark = control_dir.path().join("control-ran");
    let control_port = free_port();
    let control_config = control_dir.path().join("control.cfg");
    fs::write(
        &control_config,
        format!(
            "global\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  timeout connect 2s\n  \
             timeout client 5s\n  timeout server 5s\n\nfrontend f\n  bind 127.0.0.1:{control_port}\n\n\
             program control\n  command /usr/bin/touch {}\n",
            control_mark.display()
        ),
    )
    .unwrap();
    {
        let _control = Haproxy::start(
            &control_config,
            &control_dir.path().join("run"),
            control_port,
        );
        assert!(
            wait_for(Duration::from_secs(15), || control_mark.exists()),
            "the control program never ran: the test would prove nothing"
        );
    }

    let haproxy = Haproxy::start(
        &workspace.config(),
        &workspace.dir.path().join("run"),
        hostile.good_port,
    );
    assert!(
        wait_for(Duration::from_secs(15), || matches!(
            http_get(hostile.good_port, "/"),
            Ok((200, body)) if body == "good"
        )),
        "the good app is not served:\n{}",
        haproxy.log_text()
    );
    assert!(matches!(http_get(hostile.checked_port, "/"), Ok((200, body)) if body == "other"));
    // The master has started its workers and answered: any program would have run by now.
    assert!(haproxy.show_proc().contains("worker"));
    assert!(
        !workspace.marker().exists(),
        "a payload's program ran:\n{}",
        haproxy.log_text()
    );
    drop(haproxy);
    assert!(!workspace.marker().exists());
}

#[test]
fn hostile_vhost_labels_are_refused_in_the_shared_frontends_too() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let port = free_port();
    let apps = json!({"apps": [
        app("/web", port, json!({"HAPROXY_0_VHOST": "web.example.com\n  use_backend evil if TRUE"})),
        app("/redir", port + 1, json!({"HAPROXY_0_VHOST": "r.example.com",
            "HAPROXY_0_HTTP_BACKEND_REDIR": "/%[env(HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS)]"})),
        app("/auth", port + 2, json!({"HAPROXY_0_VHOST": "a.example.com",
            "HAPROXY_0_AUTH": "Realm ${HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS}:u:$6$salt$hash"})),
        app("/fine", port + 3, json!({"HAPROXY_0_VHOST": "f.example.com",
            "HAPROXY_0_AUTH": "Realm:u:$6$rounds=5000$salt$hash"})),
    ]});
    let tasks = one_task_each(&["/web", "/redir", "/auth", "/fine"]);
    marathon.set_state(apps.to_string(), tasks.to_string());
    let output = workspace.run(&marathon.url(), &["--group", "external", "--dry-run"]);
    assert_exit(&output, 0);
    let stderr = text(&output.stderr);
    let config = text(&output.stdout);
    for expected in [
        r#"app /web: label HAPROXY_0_VHOST: "web.example.com\n  use_backend evil if TRUE": contains the control character '\n'"#,
        r#"app /redir: label HAPROXY_0_HTTP_BACKEND_REDIR: "/%[env(HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS)]": "%[" at byte 1 is a sample fetch"#,
        r#"app /auth: label HAPROXY_0_AUTH: "Realm ${HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS}:u:$6$salt$hash": the realm: "${" at byte 6 is an environment reference"#,
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(
        !config.contains("evil") && !config.contains("env("),
        "{config}"
    );
    assert!(
        config.contains("backend fine_") && config.contains("password $6$rounds=5000$salt$hash")
    );
    for id in ["web_", "redir_", "auth_"] {
        assert!(!config.contains(&format!("backend {id}")), "{config}");
    }
}

/// What the grammars must not cost: marathon-lb renders these, and so do we.
#[test]
fn marathon_lb_fidelity_spaced_vhosts_empty_group_and_huge_weights() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let port = free_port();
    let apps = json!({"apps": [
        app("/spaced", port, json!({"HAPROXY_0_VHOST": "a.example.com, b.example.com"})),
        // App-id order is the reverse of weight order, so only the weights can sort them.
        app("/b-heavy", port + 1, json!({"HAPROXY_0_VHOST": "w.example.com",
            "HAPROXY_0_BACKEND_WEIGHT": "100000000000000000000"})),
        app("/c-heavier", port + 2, json!({"HAPROXY_0_VHOST": "w.example.com",
            "HAPROXY_0_BACKEND_WEIGHT": "100000000000000000001"})),
        app("/a-light", port + 3, json!({"HAPROXY_0_VHOST": "w.example.com",
            "HAPROXY_0_BACKEND_WEIGHT": "9223372036854775807"})),
        app("/ungrouped", port + 4, json!({"HAPROXY_GROUP": ""})),
    ]});
    let tasks = one_task_each(&[
        "/spaced",
        "/b-heavy",
        "/c-heavier",
        "/a-light",
        "/ungrouped",
    ]);
    marathon.set_state(apps.to_string(), tasks.to_string());

    let output = workspace.run(&marathon.url(), &["--group", "external", "--dry-run"]);
    assert_exit(&output, 0);
    let config = text(&output.stdout);
    assert!(
        config.contains("hdr(host) -i  b.example.com\n"),
        "spaces after the comma are kept as marathon-lb keeps them:\n{config}"
    );
    let order: Vec<&str> = config
        .lines()
        .filter_map(|line| line.strip_prefix("  use_backend "))
        .filter_map(|rest| rest.split('_').next())
        .filter(|name| ["c-heavier", "b-heavy", "a-light"].contains(name))
        .collect();
    assert_eq!(
        &order[..3],
        ["c-heavier", "b-heavy", "a-light"],
        "weights order as Python's ints do:\n{config}"
    );
    let stderr = text(&output.stderr);
    for loser in ["b-heavy", "a-light"] {
        assert!(
            stderr.contains(&format!(
                "app /{loser}: vhost w.example.com is also claimed by app /c-heavier (service port \
                 {}); requests for it go to /c-heavier (its HAPROXY_{{n}}_BACKEND_WEIGHT is larger)",
                port + 2
            )),
            "{stderr}"
        );
    }
    assert!(!config.contains("ungrouped"));

    let output = workspace.run(
        &marathon.url(),
        &["--group", "", "--dont-bind-http-https", "--dry-run"],
    );
    assert_exit(&output, 0);
    let config = text(&output.stdout);
    assert!(
        config.contains(&format!("backend ungrouped_{}", port + 4)),
        "{config}"
    );
    assert!(!config.contains("backend spaced_"), "{config}");
}

#[test]
fn conflicts_are_said_on_changing_and_dry_runs_and_the_output_stays_marathon_lbs() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let port = free_port();
    let apps = json!({"apps": [
        app("/one", port, json!({})),
        app("/two", port + 1, json!({"HAPROXY_0_PORT": port.to_string()})),
    ]});
    let tasks = json!({"tasks": [task("/one", "one.1", "127.0.0.1", 31000),
        task("/two", "two.1", "127.0.0.1", 31001)]});
    marathon.set_state(apps.to_string(), tasks.to_string());
    let flags = ["--group", "external", "--dont-bind-http-https"];
    let said = format!(
        "app /two: service port {port} (bind 127.0.0.1:{port}) is also bound by app /one \
         (service port {port}) (bind 127.0.0.1:{port}): both bind it and HAProxy splits its new \
         connections between them"
    );

    let dry = workspace.run(&marathon.url(), &[&flags[..], &["--dry-run"]].concat());
    assert_exit(&dry, 0);
    assert!(text(&dry.stderr).contains(&said), "{}", text(&dry.stderr));
    let config = text(&dry.stdout);
    assert_eq!(
        config
            .matches(&format!("  bind 127.0.0.1:{port}\n"))
            .count(),
        2,
        "{config}"
    );

    let changing = workspace.run(&marathon.url(), &flags);
    assert_exit(&changing, 0);
    assert!(
        text(&changing.stderr).contains(&said),
        "{}",
        text(&changing.stderr)
    );
    assert_eq!(fs::read_to_string(workspace.config()).unwrap(), config);

    let unchanged = workspace.run(&marathon.url(), &flags);
    assert_exit(&unchanged, 0);
    assert_eq!(text(&unchanged.stderr), "", "an unchanged run stays silent");
}
