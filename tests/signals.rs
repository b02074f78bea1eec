//! Signals in the long-running modes, through the binary: SIGHUP runs now, SIGUSR1 reloads
//! HAProxy with the live file (the reload command, or the master CLI of a real HAProxy), SIGTERM
//! ends the loop. Each signal goes to the child this test started, by PID, and is seen by its
//! effect: the config rewritten, the reload command's log, the master's reload counter.

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::haproxy::{free_port, http_config, wait_for, Haproxy, HAPROXY_BIN};
use support::marathon::FakeMarathon;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");
const PATIENCE: Duration = Duration::from_secs(20);

/// One app on `service_port`, bound to 127.0.0.1, with one task per port.
fn state(service_port: u16, task_ports: &[u16]) -> (String, String) {
    let apps = format!(
        r#"{{"apps":[{{"id":"/web","labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"}},"portDefinitions":[{{"port":{service_port},"protocol":"tcp"}}]}}]}}"#
    );
    let tasks: Vec<String> = task_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!(
                r#"{{"id":"web.{i}","appId":"/web","host":"127.0.0.1","ports":[{port}],"state":"TASK_RUNNING"}}"#
            )
        })
        .collect();
    (apps, format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")))
}

struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("templates")).unwrap();
        fs::write(
            dir.path().join("templates/HAPROXY_HEAD"),
            "global\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  timeout connect 2s\n  \
             timeout client 5s\n  timeout server 5s\n",
        )
        .unwrap();
        fs::create_dir(dir.path().join("snapshot")).unwrap();
        Workspace { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn set_snapshot(&self, (apps, tasks): (String, String)) {
        fs::write(self.path("snapshot/apps.json"), apps).unwrap();
        fs::write(self.path("snapshot/tasks.json"), tasks).unwrap();
    }

    fn config_text(&self) -> String {
        fs::read_to_string(self.path("haproxy.cfg")).unwrap_or_default()
    }

    fn reloads(&self) -> usize {
        fs::read_to_string(self.path("reloads.log")).map_or(0, |log| log.lines().count())
    }

    /// The binary in a loop on `marathon`, validating with the real HAProxy.
    fn spawn(&self, marathon: &str, extra: &[&str]) -> Running {
        let child = Command::new(BIN)
            .args(["--marathon", marathon, "--group", "external"])
            .args(["--dont-bind-http-https", "--haproxy-bin", HAPROXY_BIN])
            .arg("--haproxy-config")
            .arg(self.path("haproxy.cfg"))
            .arg("--templates")
            .arg(self.path("templates"))
            .arg("--reload-command")
            .arg(format!(
                "echo reload >> '{}'",
                self.path("reloads.log").display()
            ))
            .args(["--interval", "1h", "--command-timeout", "10"])
            .args(extra)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(self.path("stderr")).unwrap())
            .spawn()
            .unwrap();
        Running {
            child,
            stderr: self.path("stderr"),
        }
    }
}

/// The loop under test; ended by SIGTERM (SIGKILL if it does not end) when dropped.
struct Running {
    child: Child,
    stderr: PathBuf,
}

impl Running {
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: a plain syscall on the PID of the child this test started and has not reaped.
        let sent = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(sent, 0, "kill({signal})");
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, and the exit status once it ended (bounded).
    fn stop(mut self) -> Option<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        let mut status = None;
        wait_for(PATIENCE, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn assert_waited(what: &str, held: bool, running: &Running) {
    assert!(held, "{what}; the loop said:\n{}", running.stderr());
}

#[test]
fn interval_loop_runs_on_sighup_and_reloads_the_live_file_on_sigusr1() {
    let workspace = Workspace::new();
    let (service_port, first, second, third) = (free_port(), free_port(), free_port(), free_port());
    workspace.set_snapshot(state(service_port, &[first]));
    let snapshot = workspace.path("snapshot");
    let running = workspace.spawn(snapshot.to_str().unwrap(), &[]);
    let started = wait_for(PATIENCE, || workspace.reloads() == 1);
    assert_waited("the first run applied and reloaded", started, &running);

    // SIGHUP: a full run now, long before the hour is up.
    workspace.set_snapshot(state(service_port, &[first, second]));
    running.signal(libc::SIGHUP);
    let ran = wait_for(PATIENCE, || {
        workspace.config_text().contains(&format!(":{second}")) && workspace.reloads() == 2
    });
    assert_waited("SIGHUP ran and applied the new task", ran, &running);

    // SIGUSR1: the live file reloaded, nothing rendered (the third task stays out).
    workspace.set_snapshot(state(service_port, &[first, second, third]));
    let live = workspace.config_text();
    running.signal(libc::SIGUSR1);
    let reloaded = wait_for(PATIENCE, || workspace.reloads() == 3);
    assert_waited("SIGUSR1 ran the reload command", reloaded, &running);
    assert_eq!(workspace.config_text(), live, "SIGUSR1 renders nothing");

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
    workspace.set_snapshot(state(service_port, &[first]));
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
    let (apps, tasks) = state(service_port, &[first]);
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
        &["--sse", "--haproxy-master-socket", &socket, "--force"],
    );
    let applied = wait_for(PATIENCE, || {
        workspace.config_text().contains(&format!(":{first}")) && haproxy.reloads() == Some(1)
    });
    assert_waited(
        "the first run reloaded through the master",
        applied,
        &running,
    );

    let (apps, tasks) = state(service_port, &[first, second]);
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
        let (apps, tasks) = state(service_port, &[first]);
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
