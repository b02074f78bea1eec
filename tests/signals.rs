//! Signals in the long-running modes, through the binary: SIGHUP runs now, SIGUSR1 reloads
//! HAProxy with the live file (the reload command, or the master CLI of a real HAProxy), SIGTERM
//! ends the loop. Each signal goes to the child this test started, by PID, and is seen by its
//! effect: the config rewritten, the reload command's log, the master's reload counter.

mod support;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use support::haproxy::{free_port, http_config, wait_for, Haproxy};
use support::marathon::FakeMarathon;
use support::process::Guarded;
use support::workspace::web_app;

const PATIENCE: Duration = Duration::from_secs(20);

/// The shared workspace (its head and held appid port keep HAProxy on 127.0.0.1) with a
/// snapshot directory for `--marathon`.
struct Workspace {
    shared: support::workspace::Workspace,
}

impl Workspace {
    fn new() -> Workspace {
        let shared = support::workspace::Workspace::new();
        fs::create_dir(shared.path("snapshot")).unwrap();
        Workspace { shared }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.shared.path(name)
    }

    fn set_snapshot(&self, (apps, tasks): (String, String)) {
        fs::write(self.path("snapshot/apps.json"), apps).unwrap();
        fs::write(self.path("snapshot/tasks.json"), tasks).unwrap();
    }

    fn config_text(&self) -> String {
        fs::read_to_string(self.shared.config()).unwrap_or_default()
    }

    fn reloads(&self) -> usize {
        self.shared.reload_count()
    }

    /// The binary in a loop on `marathon`, validating with the real HAProxy.
    fn spawn(&self, marathon: &str, extra: &[&str]) -> Running {
        let stderr = self.path("stderr");
        let child = self
            .shared
            .bare(marathon)
            .group("external")
            .arg("--dont-bind-http-https")
            .reload_command(&format!(
                "echo reload >> '{}'",
                self.shared.reload_log().display()
            ))
            .args(["--interval", "1h", "--command-timeout", "10"])
            .args(extra)
            .spawn_with_stderr(fs::File::create(&stderr).unwrap());
        Running { child, stderr }
    }
}

/// The loop under test; stopped (SIGTERM, then SIGKILL) by its guard when dropped.
struct Running {
    child: Guarded,
    stderr: PathBuf,
}

impl Running {
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: a plain syscall on the PID of the child this test started and has not reaped.
        let sent = unsafe { libc::kill(self.child.pid() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({signal})");
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, and the exit status once it ended (bounded).
    fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        self.child.wait_timeout(PATIENCE)
    }
}

fn assert_waited(what: &str, held: bool, running: &Running) {
    assert!(held, "{what}; the loop said:\n{}", running.stderr());
}

#[test]
fn interval_loop_runs_on_sighup_and_reloads_the_live_file_on_sigusr1() {
    let workspace = Workspace::new();
    let (service_port, first, second, third) = (free_port(), free_port(), free_port(), free_port());
    workspace.set_snapshot(web_app(service_port, &[first]));
    let snapshot = workspace.path("snapshot");
    let running = workspace.spawn(snapshot.to_str().unwrap(), &[]);
    let started = wait_for(PATIENCE, || workspace.reloads() == 1);
    assert_waited("the first run applied and reloaded", started, &running);

    // SIGHUP: a full run now, long before the hour is up.
    workspace.set_snapshot(web_app(service_port, &[first, second]));
    running.signal(libc::SIGHUP);
    let ran = wait_for(PATIENCE, || {
        workspace.config_text().contains(&format!(":{second}")) && workspace.reloads() == 2
    });
    assert_waited("SIGHUP ran and applied the new task", ran, &running);

    // SIGUSR1: the live file reloaded, nothing rendered (the third task stays out).
    workspace.set_snapshot(web_app(service_port, &[first, second, third]));
    let live = workspace.config_text();
    // As a run killed before its reload, or during a runtime update, leaves them: once HAProxy
    // runs the file on disk, they have nothing left to finish.
    let config = workspace.shared.config();
    let markers = [".reload-pending", ".runtime-pending"]
        .map(|suffix| PathBuf::from(format!("{}{suffix}", config.display())));
    for marker in &markers {
        fs::write(marker, "").unwrap();
    }
    running.signal(libc::SIGUSR1);
    let reloaded = wait_for(PATIENCE, || workspace.reloads() == 3);
    assert_waited("SIGUSR1 ran the reload command", reloaded, &running);
    assert_eq!(workspace.config_text(), live, "SIGUSR1 renders nothing");
    let settled = wait_for(PATIENCE, || markers.iter().all(|marker| !marker.exists()));
    assert_waited(
        "SIGUSR1's reload cleared the interrupted-run markers",
        settled,
        &running,
    );

    let stderr = running.stderr();
    assert!(stderr.contains("SIGHUP received: running now"), "{stderr}");
    assert!(
        stderr.contains("SIGUSR1 received: reloading HAProxy with the live configuration"),
        "{stderr}"
    );
    let status = running.stop();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert_eq!(workspace.reloads(), 3, "SIGTERM reloads nothing");
}

#[test]
fn sigusr1_refuses_a_live_file_haproxy_rejects_and_the_loop_goes_on() {
    let workspace = Workspace::new();
    let (service_port, first) = (free_port(), free_port());
    workspace.set_snapshot(web_app(service_port, &[first]));
    let snapshot = workspace.path("snapshot");
    let running = workspace.spawn(snapshot.to_str().unwrap(), &[]);
    let started = wait_for(PATIENCE, || workspace.reloads() == 1);
    assert_waited("the first run applied", started, &running);

    // Someone broke the live file by hand: the reload is refused, named, and not attempted.
    fs::write(workspace.path("haproxy.cfg"), "global\n  no-such-keyword\n").unwrap();
    running.signal(libc::SIGUSR1);
    let said = wait_for(PATIENCE, || running.stderr().contains("does not validate"));
    assert_waited("the refusal was logged", said, &running);
    assert_eq!(workspace.reloads(), 1);

    // The loop is still there: SIGHUP puts a good config back.
    running.signal(libc::SIGHUP);
    let repaired = wait_for(PATIENCE, || workspace.reloads() == 2);
    assert_waited("SIGHUP repaired the live file", repaired, &running);
    assert!(workspace.config_text().contains(&format!(":{first}")));
    assert!(running.stop().is_some_and(|s| s.success()));
}

/// `--sse` with a real HAProxy reloaded through its master CLI: SIGUSR1 is a master `reload`
/// (its counter moves), SIGHUP a run that picks up what Marathon says now.
#[test]
fn sse_loop_obeys_the_same_signals_through_the_master_socket() {
    let workspace = Workspace::new();
    let (service_port, first, second) = (free_port(), free_port(), free_port());
    let marathon = FakeMarathon::start();
    let (apps, tasks) = web_app(service_port, &[first]);
    marathon.set_state(apps, tasks);

    // HAProxy runs before the tool's first run, with a serverless config of its own.
    let haproxy_port = free_port();
    fs::write(
        workspace.path("haproxy.cfg"),
        http_config(haproxy_port, "placeholder", &[]),
    )
    .unwrap();
    let haproxy = Haproxy::start(
        &workspace.path("haproxy.cfg"),
        &workspace.path("run"),
        haproxy_port,
    );
    let socket = haproxy.master_socket.to_str().unwrap().to_string();
    let running = workspace.spawn(
        &marathon.url(),
        &[
            "--sse",
            "--haproxy-master-socket",
            &socket,
            "--no-runtime-api",
            "--force",
        ],
    );
    let applied = wait_for(PATIENCE, || {
        workspace.config_text().contains(&format!(":{first}")) && haproxy.reloads() == Some(1)
    });
    assert_waited(
        "the first run reloaded through the master",
        applied,
        &running,
    );

    let (apps, tasks) = web_app(service_port, &[first, second]);
    marathon.set_state(apps, tasks);
    running.signal(libc::SIGHUP);
    let ran = wait_for(PATIENCE, || {
        workspace.config_text().contains(&format!(":{second}")) && haproxy.reloads() == Some(2)
    });
    assert_waited("SIGHUP ran and reloaded", ran, &running);

    let live = workspace.config_text();
    running.signal(libc::SIGUSR1);
    assert!(
        haproxy.wait_for_reloads(3),
        "SIGUSR1 reloaded the master: {}",
        running.stderr()
    );
    assert_eq!(workspace.config_text(), live);
    assert_eq!(
        workspace.reloads(),
        0,
        "the master CLI, not the reload command"
    );
    assert!(running.stop().is_some_and(|s| s.success()));
}

/// A loop's splay is waited where signals are already handled: SIGHUP cuts it short and runs,
/// SIGTERM during it ends the loop cleanly.
#[test]
fn a_loops_splay_obeys_sighup_and_sigterm() {
    for (sse, signal) in [
        (false, libc::SIGHUP),
        (false, libc::SIGTERM),
        (true, libc::SIGHUP),
    ] {
        let workspace = Workspace::new();
        let (service_port, first) = (free_port(), free_port());
        let marathon = FakeMarathon::start();
        let (apps, tasks) = web_app(service_port, &[first]);
        marathon.set_state(apps, tasks);
        let mut extra = vec!["--splay", "40s", "--log-level", "debug"];
        if sse {
            extra.push("--sse");
        }
        let running = workspace.spawn(&marathon.url(), &extra);
        let waiting = wait_for(PATIENCE, || {
            running.stderr().contains("(--splay) before the first run")
        });
        assert_waited("the splay began", waiting, &running);
        let said = running.stderr();
        let wait = said
            .split("waiting ")
            .nth(1)
            .and_then(|rest| rest.split(" (--splay)").next())
            .and_then(|text| haproxy_marathon_sync::cli::parse_duration(text).ok())
            .expect("the wait in the log");
        let waits_long = wait > Duration::from_secs(5);
        running.signal(signal);
        if signal == libc::SIGHUP {
            let ran = wait_for(PATIENCE, || workspace.reloads() == 1);
            assert_waited("SIGHUP ended the splay with a run", ran, &running);
            assert!(running.stop().is_some_and(|s| s.success()));
        } else {
            let status = running.stop();
            assert!(status.is_some_and(|s| s.success()), "{status:?}");
            if waits_long {
                assert_eq!(workspace.reloads(), 0, "stopped before the first run");
            }
        }
    }
}
