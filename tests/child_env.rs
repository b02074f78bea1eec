//! The environment of everything the tool starts, through the built binary: `haproxy -c`, the
//! reload command and what they start never see our `HAPROXY_MARATHON_SYNC_*` settings
//! (credentials above all), and a config line that asks HAProxy for our credentials variable
//! gets nothing to print, log or store.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::haproxy::{free_port, HAPROXY_BIN};
use support::marathon::FakeMarathon;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

/// The Marathon password: every test looks for this string where it must not be.
const PASSWORD: &str = "s3cret-Pa55word-7f1c";
const USER: &str = "ops";

/// One HTTP app `/web` on `service_port` with one task at 127.0.0.1:`task_port`.
fn web_state(service_port: u16, task_port: u16) -> (String, String) {
    let apps = format!(
        r#"{{"apps":[{{"id":"/web","instances":1,"labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"}},"networks":[{{"mode":"host"}}],"portDefinitions":[{{"port":{service_port},"protocol":"tcp"}}],"healthChecks":[]}}]}}"#
    );
    let tasks = format!(
        r#"{{"tasks":[{{"id":"web.1","appId":"/web","host":"127.0.0.1","ports":[{task_port}],"state":"TASK_RUNNING"}}]}}"#
    );
    (apps, tasks)
}

/// A temp directory with templates that keep HAProxy on 127.0.0.1 and off system paths.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new(head: &str) -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let templates = dir.path().join("templates");
        fs::create_dir(&templates).unwrap();
        fs::write(templates.join("HAPROXY_HEAD"), head).unwrap();
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

    /// An executable `sh` script.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Runs the binary once against `marathon`, our settings given only through the
    /// environment, the password among them.
    fn run(&self, marathon: &FakeMarathon, haproxy_bin: &Path, reload: &str) -> Output {
        Command::new(BIN)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HAPROXY_MARATHON_SYNC_MARATHON", marathon.url())
            .env("HAPROXY_MARATHON_SYNC_GROUP", "external")
            .env(
                "HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS",
                format!("{USER}:{PASSWORD}"),
            )
            .env(
                "HAPROXY_MARATHON_SYNC_HAPROXY_CONFIG",
                self.path("haproxy.cfg"),
            )
            .env("HAPROXY_MARATHON_SYNC_TEMPLATES", self.path("templates"))
            .env("HAPROXY_MARATHON_SYNC_HAPROXY_BIN", haproxy_bin)
            .env("HAPROXY_MARATHON_SYNC_RELOAD_COMMAND", reload)
            .env("HAPROXY_MARATHON_SYNC_DONT_BIND_HTTP_HTTPS", "true")
            .env("HAPROXY_MARATHON_SYNC_COMMAND_TIMEOUT", "10")
            // The operator's: a template variable (unused by this app) and an unrelated one.
            .env(
                "HAPROXY_BACKEND_REDIRECT_HTTP_TO_HTTPS",
                "  bind-process 1\\n",
            )
            .env("OPERATOR_MARKER", "kept")
            .stdin(Stdio::null())
            .output()
            .expect("running haproxy-marathon-sync")
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file under `dir`, recursively, with its content.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let metadata = fs::symlink_metadata(&path).unwrap();
        if metadata.is_dir() {
            found.extend(files_under(&path));
        } else if metadata.is_file() {
            found.push((path.clone(), fs::read(&path).unwrap()));
        }
    }
    found
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// `NAME=value` lines of an `env` dump.
fn names_in(dump: &str) -> Vec<&str> {
    dump.lines()
        .filter_map(|line| line.split_once('=').map(|(name, _)| name))
        .collect()
}

const HEAD: &str = "global\n  maxconn 1000\n\ndefaults\n  mode http\n  timeout connect 2s\n  \
                    timeout client 5s\n  timeout server 5s\n";

#[test]
fn validation_and_reload_commands_and_their_children_get_no_setting_of_ours() {
    let workspace = Workspace::new(HEAD);
    let marathon = FakeMarathon::start();
    marathon.require_basic_auth(USER, PASSWORD);
    let (apps, tasks) = web_state(free_port(), free_port());
    marathon.set_state(apps, tasks);
    let check_env = workspace.path("check.env");
    let check = workspace.script(
        "haproxy-check",
        &format!("env > '{}'\nexec {HAPROXY_BIN} \"$@\"", check_env.display()),
    );
    let (reload_env, child_env) = (workspace.path("reload.env"), workspace.path("child.env"));
    let reload = format!(
        "env > '{}' && sh -c \"env > '{}'\"",
        reload_env.display(),
        child_env.display()
    );

    let output = workspace.run(&marathon, &check, &reload);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr:\n{}",
        text(&output.stderr)
    );
    assert!(
        marathon.request_count("/v2/apps") > 0,
        "the run read Marathon with the credentials"
    );
    for dump in [&check_env, &reload_env, &child_env] {
        let env = fs::read_to_string(dump)
            .unwrap_or_else(|e| panic!("{} was not written: {e}", dump.display()));
        let names = names_in(&env);
        let ours: Vec<&&str> = names
            .iter()
            .filter(|name| name.starts_with("HAPROXY_MARATHON_SYNC_"))
            .collect();
        assert!(ours.is_empty(), "{} inherited {ours:?}", dump.display());
        assert!(
            !env.contains(PASSWORD),
            "{} holds the password",
            dump.display()
        );
        // Decided: the rest of the environment, the operator's template variables included,
        // is inherited as before.
        assert!(
            names.contains(&"OPERATOR_MARKER"),
            "{}:\n{env}",
            dump.display()
        );
        assert!(
            names.contains(&"HAPROXY_BACKEND_REDIRECT_HTTP_TO_HTTPS"),
            "{}:\n{env}",
            dump.display()
        );
        assert!(names.contains(&"PATH"), "{}:\n{env}", dump.display());
    }
}

#[test]
fn haproxy_asked_for_our_credentials_variable_has_nothing_to_print_or_store() {
    // An operator's head (templates are unrestricted) with a directive HAProxy expands from its
    // environment and, being unknown, prints back in full: with the variable inherited, the
    // error read `unknown keyword 'unknown-keyword-ops:<password>'`.
    let head = format!(
        "{HEAD}\nglobal\n  \"unknown-keyword-${{HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS}}\"\n"
    );
    let workspace = Workspace::new(&head);
    let marathon = FakeMarathon::start();
    marathon.require_basic_auth(USER, PASSWORD);
    let (apps, tasks) = web_state(free_port(), free_port());
    marathon.set_state(apps, tasks);

    let output = workspace.run(&marathon, Path::new(HAPROXY_BIN), "true");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(6), "stderr:\n{stderr}");
    assert!(
        stderr.contains("unknown keyword 'unknown-keyword-'"),
        "HAProxy read the line and expanded the variable to nothing:\n{stderr}"
    );
    assert!(
        !contains(&output.stderr, PASSWORD) && !contains(&output.stdout, PASSWORD),
        "the password was printed:\n{stderr}"
    );
    let stored = files_under(workspace.dir.path());
    let names: Vec<String> = stored
        .iter()
        .map(|(path, _)| path.display().to_string())
        .collect();
    assert!(
        names
            .iter()
            .any(|name| name.ends_with("haproxy.cfg.status")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|name| name.ends_with("haproxy.cfg.rejected")),
        "{names:?}"
    );
    for (path, content) in &stored {
        assert!(
            !contains(content, PASSWORD),
            "{} holds the password",
            path.display()
        );
    }
}
