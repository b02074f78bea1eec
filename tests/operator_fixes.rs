//! What operators see, through the binary run as cron runs it: apps held or left out are said
//! when that changes, not on every unchanged run (the exit status and `status` keep telling);
//! the dry run's words; the blast-radius guard and an app Marathon still runs with no task;
//! `status` for a config never synced; `--check-age` naming the age; counts in the singular; a
//! `log-forward` section read as a section. The `--interval` loop keeps quiet as cron runs do.

mod support;

use std::fs;

use haproxy_marathon_sync::apply::runtime_plan::{classify, Change};
use haproxy_marathon_sync::apply::Inventory;
use support::marathon::FakeMarathon;
use support::ports::Port;
use support::sync::{Run, Sync};
use support::workspace::{http_app, running_task, Workspace};

/// One cron run against `marathon`, the reload a no-op, with the metrics file and `extra`.
fn run(workspace: &Workspace, marathon: &FakeMarathon, extra: &[&str]) -> Run {
    workspace
        .sync(&marathon.url(), "true")
        .arg("--metrics-file")
        .arg(workspace.metrics())
        .args(extra)
        .run()
}

/// Marathon runs one app, `/web`, with one task, balanced by `balance` (a bad one is held).
fn serve_web(marathon: &FakeMarathon, web: &Port, balance: &str, version: &str) {
    marathon.set_apps(
        &[http_app(
            "/web",
            web.number(),
            &[("HAPROXY_0_BALANCE", balance)],
            version,
        )],
        &[running_task("/web", 31001)],
    );
}

fn metrics(workspace: &Workspace) -> String {
    fs::read_to_string(workspace.metrics()).unwrap()
}

#[test]
fn a_held_app_is_said_when_that_changes_and_not_on_every_unchanged_run() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (web, other) = (Port::reserve(), Port::reserve());
    let set = |balance: &str, version: &str| {
        marathon.set_apps(
            &[
                http_app(
                    "/web",
                    web.number(),
                    &[("HAPROXY_0_BALANCE", balance)],
                    version,
                ),
                http_app("/other", other.number(), &[], "v1"),
            ],
            &[running_task("/web", 31001), running_task("/other", 31002)],
        );
    };
    set("leastconn", "v1");
    run(&workspace, &marathon, &[]).assert_exit(0);

    // Newly held: said, exit 10.
    set("leastconns", "v2");
    run(&workspace, &marathon, &[])
        .assert_exit(10)
        .assert_stderr_contains("app /web: label HAPROXY_0_BALANCE")
        .assert_stderr_contains("held at its last good definition (version v1)");
    let live = workspace.read_config().unwrap();

    // The same, nothing changed: silent, but the exit status, status and metrics still tell.
    run(&workspace, &marathon, &[])
        .assert_exit(10)
        .assert_silent();
    assert_eq!(workspace.read_config().unwrap(), live);
    let status = workspace.status();
    status.assert_exit(0);
    assert!(
        status.stdout.contains("held back:    /web"),
        "{}",
        status.stdout
    );
    assert!(metrics(&workspace).contains("haproxy_marathon_sync_apps_held 1\n"));
    // At debug level it is said every run.
    run(&workspace, &marathon, &["--log-level", "debug"])
        .assert_exit(10)
        .assert_stderr_contains("held at its last good definition (version v1)");

    // Another reason: said again.
    set("no such", "v3");
    run(&workspace, &marathon, &[])
        .assert_exit(10)
        .assert_stderr_contains("no such")
        .assert_stderr_contains("held at its last good definition (version v1)");
    run(&workspace, &marathon, &[])
        .assert_exit(10)
        .assert_silent();

    // Fixed back to what is live: nothing to write, but the release is news, said once.
    set("leastconn", "v4");
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_stderr_contains("app /web: rendered from its current definition again");
    assert_eq!(workspace.read_config().unwrap(), live);
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_silent();
    assert!(!workspace.status().stdout.contains("held back"));
    assert!(metrics(&workspace).contains("haproxy_marathon_sync_apps_held 0\n"));
}

#[test]
fn a_new_app_left_out_is_said_once_even_when_nothing_else_changes() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (web, new) = (Port::reserve(), Port::reserve());
    let web_app = http_app("/web", web.number(), &[], "v1");
    let web_task = running_task("/web", 31001);
    marathon.set_apps(
        std::slice::from_ref(&web_app),
        std::slice::from_ref(&web_task),
    );
    run(&workspace, &marathon, &[]).assert_exit(0);

    // A new app whose label does not parse: the candidate is the live config, yet the
    // operator hears of it once (it was silent for ever before).
    let bad = http_app("/new", new.number(), &[("HAPROXY_0_BALANCE", "nope")], "v1");
    marathon.set_apps(
        &[web_app.clone(), bad],
        &[web_task.clone(), running_task("/new", 31002)],
    );
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_stderr_contains("app /new: label HAPROXY_0_BALANCE")
        .assert_stderr_contains("app left out");
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_silent();
    let status = workspace.status().stdout;
    assert!(status.contains("left out:     /new"), "{status}");

    // Deleted from Marathon: said once.
    marathon.set_apps(&[web_app], &[web_task]);
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_stderr_contains("app /new: no longer in Marathon");
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_silent();
}

#[test]
fn the_dry_run_says_what_the_real_run_would_do_and_not_that_it_applied() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let web = Port::reserve();
    let set = |balance: &str, version: &str| serve_web(&marathon, &web, balance, version);
    set("leastconn", "v1");
    run(&workspace, &marathon, &[]).assert_exit(0);
    set("leastconns", "v2");
    run(&workspace, &marathon, &[]).assert_exit(10);
    // The real run said it already; a person asking with a dry run is told everything.
    let dry = run(&workspace, &marathon, &["--dry-run", "--diff"]);
    dry.assert_exit(10)
        .assert_stderr_contains("dry run, the real run would do the same: app /web")
        .assert_stderr_lacks("applied");
}

/// HAProxy 2.6's `log-forward` section ends the backend before it: a change in it is named as
/// its own, and a server change in the backend before it stays a runtime update.
#[test]
fn a_log_forward_section_is_read_as_a_section_of_its_own() {
    let config = |bind: &str, servers: &[&str]| {
        let mut text =
            String::from("global\n  daemon\n\nbackend web_10000\n  balance roundrobin\n");
        for server in servers {
            text.push_str(&format!("  server {server} 10.0.0.1:{}\n", &server[1..]));
        }
        text.push_str(&format!(
            "\nlog-forward syslog\n  dgram-bind {bind}\n  log 10.0.0.9:514 local0\n"
        ));
        text
    };
    let live = config("127.0.0.1:1514", &["s31001"]);
    let moved = config("127.0.0.1:1515", &["s31001"]);
    match classify(&live, &moved) {
        Change::ReloadRequired(reason) => {
            assert_eq!(reason.to_string(), "log-forward syslog changed");
        }
        other => panic!("expected a reload, got {other:?}"),
    }
    let scaled = config("127.0.0.1:1514", &["s31001", "s31002"]);
    assert!(
        matches!(classify(&live, &scaled), Change::RuntimeOnly(_)),
        "{:?}",
        classify(&live, &scaled)
    );
    let inventory = Inventory::of(&scaled);
    assert_eq!(inventory.backends.len(), 1);
    assert_eq!(inventory.servers.len(), 2);
}

#[test]
fn status_of_a_config_never_synced_says_so_in_words_and_names_it_absolutely() {
    let workspace = Workspace::new();
    fs::write(workspace.config(), "global\n").unwrap();
    let status = Sync::new()
        .args(["status", "--haproxy-config", "haproxy.cfg"])
        .current_dir(workspace.dir.path())
        .run();
    status.assert_exit(0);
    let absolute = workspace.config().display().to_string();
    assert!(
        status
            .stdout
            .starts_with(&format!("config:       {absolute} (")),
        "{}",
        status.stdout
    );
    assert!(
        status
            .stdout
            .contains("last run:     never: no run has recorded itself for this config yet\n"),
        "{}",
        status.stdout
    );
    assert!(!status.stdout.contains(", -"), "{}", status.stdout);

    let stale = Sync::new()
        .args([
            "status",
            "--haproxy-config",
            "haproxy.cfg",
            "--check-age",
            "5m",
        ])
        .current_dir(workspace.dir.path())
        .run();
    stale.assert_exit(11).assert_stderr_contains(&format!(
        "no successful sync of {absolute} is recorded yet (--check-age 5m)"
    ));
}

#[test]
fn check_age_says_how_old_the_last_sync_is_and_the_limit() {
    let workspace = Workspace::new();
    fs::write(workspace.config(), "global\n").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = (now - 600.0).floor();
    let record = format!(
        r#"{{"last_run_unix":{at},"last_outcome":"unchanged","last_success_unix":{at},"runs_total":1}}"#
    );
    fs::write(workspace.path("haproxy.cfg.status"), record).unwrap();
    let stale = Sync::new()
        .arg("status")
        .config(workspace.config())
        .args(["--check-age", "5m"])
        .run();
    stale.assert_exit(11);
    let words = format!(
        "the last successful sync of {} was 10m0",
        workspace.config().display()
    );
    stale
        .assert_stderr_contains(&words)
        .assert_stderr_contains("s ago (")
        .assert_stderr_contains("Z): older than 5m (--check-age)");
    Sync::new()
        .arg("status")
        .config(workspace.config())
        .args(["--check-age", "11m"])
        .run()
        .assert_exit(0);
}

/// An app Marathon still runs whose tasks all vanish from the answer is a backend left without
/// servers (exit 9, nothing written), as the README promises; scaled to 0 instances on
/// purpose, or deleted, it goes, and the summary names its app.
#[test]
fn a_backend_gone_with_its_apps_tasks_is_named_with_its_app_and_why() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let ports = [Port::reserve(), Port::reserve(), Port::reserve()];
    let [web, big, gone] = ports.each_ref().map(Port::number);
    let big_tasks: Vec<String> = (0..4).map(|i| running_task("/big", 31010 + i)).collect();
    let set = |web_app: String, web_tasks: bool, with_gone: bool| {
        let mut apps = vec![web_app, http_app("/big", big, &[], "v1")];
        let mut tasks = big_tasks.clone();
        if web_tasks {
            tasks.push(running_task("/web", 31001));
        }
        if with_gone {
            apps.push(http_app("/gone", gone, &[], "v1"));
            tasks.push(running_task("/gone", 31002));
        }
        marathon.set_apps(&apps, &tasks);
    };
    let web_app = || http_app("/web", web, &[], "v1");
    set(web_app(), true, true);
    run(&workspace, &marathon, &[]).assert_exit(0);
    let live = workspace.read_config().unwrap();

    // /web's task is missing from the answer (restarting, or failing its health checks), the
    // app still in Marathon: 1 server of 6 is under --max-server-loss, and one app's tasks
    // never hold back the other apps' changes, so it goes, and the summary says why.
    set(web_app(), false, true);
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_stderr_contains(&format!(
            "/web (web_{web}): backend removed (no task of the app can be served) \
             -127.0.0.1:31001"
        ));
    // Back, then scaled to 0: a backend removed on purpose says nothing more.
    set(web_app(), true, true);
    run(&workspace, &marathon, &[]).assert_exit(0);
    assert_eq!(workspace.read_config().unwrap(), live);

    // Scaled to 0 instances on purpose: it goes, named with its app.
    set(web_app().replacen('{', "{\"instances\":0,", 1), false, true);
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_stderr_contains(&format!(
            "/web (web_{web}): backend removed -127.0.0.1:31001"
        ));

    // Deleted: its last good definition names it.
    set(
        web_app().replacen('{', "{\"instances\":0,", 1),
        false,
        false,
    );
    run(&workspace, &marathon, &[])
        .assert_exit(0)
        .assert_stderr_contains(&format!(
            "/gone (gone_{gone}): backend removed -127.0.0.1:31002"
        ));
}

/// The `--interval` loop (its runs woken by SIGHUP) says a held app once, as cron runs do.
#[test]
fn the_interval_loop_says_a_held_app_once() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let web = Port::reserve();
    let set = |balance: &str, version: &str| serve_web(&marathon, &web, balance, version);
    set("leastconn", "v1");
    run(&workspace, &marathon, &[]).assert_exit(0);
    set("leastconns", "v2");
    let runs = || -> u64 {
        fs::read(workspace.path("haproxy.cfg.status"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
            .and_then(|record| record["runs_total"].as_u64())
            .unwrap_or(0)
    };
    let log = workspace.path("loop.log");
    let mut looping = workspace
        .sync(&marathon.url(), "true")
        .args(["--interval", "1h"])
        .spawn_with_stderr(fs::File::create(&log).unwrap());
    let patience = std::time::Duration::from_secs(20);
    for total in 2..=4 {
        if total > 2 {
            looping.signal(libc::SIGHUP);
        }
        let ran = support::haproxy::wait_for(patience, || runs() >= total);
        assert!(ran, "run {total}: {}", fs::read_to_string(&log).unwrap());
    }
    let (_, stopped_on_term) = looping.stop();
    assert!(stopped_on_term);
    let said = fs::read_to_string(&log).unwrap();
    // The first loop run's warning and its error line; the two runs after it say nothing.
    let lines = said.matches("app /web: label HAPROXY_0_BALANCE").count();
    assert_eq!(lines, 2, "{said}");
}
