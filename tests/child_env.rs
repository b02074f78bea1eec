//! The environment of everything the tool starts, through the built binary: `haproxy -c`, the
//! reload command and what they start never see our `HAPROXY_MARATHON_SYNC_*` settings
//! (credentials above all), and a config line that asks HAProxy for our credentials variable
//! gets nothing to print, log or store.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use support::haproxy::{free_port, HAPROXY_BIN};
use support::marathon::FakeMarathon;
use support::sync::{Run, Sync};
use support::workspace::{web_app, Workspace};

/// The Marathon password: every test looks for this string where it must not be.
const PASSWORD: &str = "s3cret-Pa55word-7f1c";
const USER: &str = "ops";

/// Runs the binary once in `workspace` against `marathon`, our settings given only through the
/// environment, the password among them.
fn run(workspace: &Workspace, marathon: &FakeMarathon, haproxy_bin: &Path, reload: &str) -> Run {
    Sync::new()
        .env("HAPROXY_MARATHON_SYNC_MARATHON", marathon.url())
        .env("HAPROXY_MARATHON_SYNC_GROUP", "external")
        .env(
            "HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS",
            format!("{USER}:{PASSWORD}"),
        )
        .env("HAPROXY_MARATHON_SYNC_HAPROXY_CONFIG", workspace.config())
        .env("HAPROXY_MARATHON_SYNC_TEMPLATES", workspace.templates())
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
        .run()
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
    let workspace = Workspace::with_head(HEAD);
    let marathon = FakeMarathon::start();
    marathon.require_basic_auth(USER, PASSWORD);
    let (apps, tasks) = web_app(free_port(), &[free_port()]);
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

    let output = run(&workspace, &marathon, &check, &reload);
    assert_eq!(output.status.code(), Some(0), "stderr:\n{}", output.stderr);
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
    let workspace = Workspace::with_head(&head);
    let marathon = FakeMarathon::start();
    marathon.require_basic_auth(USER, PASSWORD);
    let (apps, tasks) = web_app(free_port(), &[free_port()]);
    marathon.set_state(apps, tasks);

    let output = run(&workspace, &marathon, Path::new(HAPROXY_BIN), "true");
    let stderr = &output.stderr;
    assert_eq!(output.status.code(), Some(6), "stderr:\n{stderr}");
    assert!(
        stderr.contains("unknown keyword 'unknown-keyword-'"),
        "HAProxy read the line and expanded the variable to nothing:\n{stderr}"
    );
    assert!(
        !output.stderr.contains(PASSWORD) && !output.stdout.contains(PASSWORD),
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
