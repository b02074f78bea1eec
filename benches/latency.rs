//! End-to-end latency benchmark: how long from a change in Marathon until a request through a
//! real HAProxy reaches the new task. `cargo bench --bench latency`; the README quotes it.
//!
//! A stand-in Marathon (127.0.0.1) serves one app whose single task alternates between two tiny
//! HTTP backends; HAProxy runs in master-worker mode, reloaded by the binary. For each change
//! the task moves, then (in `--sse` mode) Marathon emits a `status_update_event`, and the clock
//! stops at the first request answered by the new backend. Measured for `--sse` and for
//! `--interval 1s`; a once-a-minute cron line is derived from the measured time of one run plus
//! the uniform wait for the next minute.

#[path = "../tests/support/backend.rs"]
mod backend;
#[path = "../tests/support/haproxy.rs"]
mod haproxy;
#[path = "../tests/support/marathon.rs"]
mod marathon;
#[path = "../tests/support/ports.rs"]
mod ports;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend::{http_get, Backend};
use haproxy::{free_port, wait_for, Haproxy};
use marathon::FakeMarathon;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");
const CHANGES: usize = 40;

fn state(service_port: u16, task_port: u16, generation: usize) -> (String, String) {
    let apps = format!(
        r#"{{"apps":[{{"id":"/web","labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"}},"portDefinitions":[{{"port":{service_port}}}],"healthChecks":[]}}]}}"#
    );
    let tasks = format!(
        r#"{{"tasks":[{{"id":"web.{generation}","appId":"/web","host":"127.0.0.1","ports":[{task_port}],"state":"TASK_RUNNING"}}]}}"#
    );
    (apps, tasks)
}

fn write_templates(dir: &Path) {
    let templates = dir.join("templates");
    fs::create_dir_all(&templates).unwrap();
    fs::write(
        templates.join("HAPROXY_HEAD"),
        "global\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  timeout connect 2s\n  \
         timeout client 5s\n  timeout server 5s\n  option idle-close-on-response\n",
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
}

fn base_command(dir: &Path, marathon: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args([
            "--marathon",
            marathon,
            "--group",
            "external",
            "--dont-bind-http-https",
        ])
        .arg("--haproxy-config")
        .arg(dir.join("haproxy.cfg"))
        .arg("--templates")
        .arg(dir.join("templates"))
        .args(["--haproxy-bin", haproxy::HAPROXY_BIN])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Moves the task `CHANGES` times and measures each change until HAProxy serves the new task.
fn measure(
    marathon: &FakeMarathon,
    service_port: u16,
    backends: &[Backend; 2],
    emit_event: bool,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(CHANGES);
    for generation in 1..=CHANGES {
        // Changes arrive at no fixed phase of the polling period: wait a spread-out fraction of
        // a second first (golden-ratio steps), or every sample would start just after a poll.
        let phase = (generation as f64 * 0.618_033_988_75).fract();
        std::thread::sleep(Duration::from_secs_f64(phase));
        let target = &backends[generation % 2];
        let (apps, tasks) = state(service_port, target.port, generation);
        marathon.set_state(&apps, &tasks);
        let started = Instant::now();
        if emit_event {
            marathon.push_event(
                "status_update_event",
                &format!(
                    r#"{{"eventType":"status_update_event","appId":"/web","taskId":"web.{generation}","taskStatus":"TASK_RUNNING"}}"#
                ),
            );
        }
        let reached = wait_for(
            Duration::from_secs(20),
            || matches!(http_get(service_port, "/"), Ok((200, body)) if body == target.name),
        );
        assert!(reached, "change {generation} never reached HAProxy");
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}

fn stop(mut child: Child) {
    // SAFETY: signalling the child this benchmark started, by its PID.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let ended = wait_for(Duration::from_secs(10), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    write_templates(dir.path());
    let backends = [Backend::start("task-a"), Backend::start("task-b")];
    let service_port = free_port();
    let marathon = FakeMarathon::start();
    let (apps, tasks) = state(service_port, backends[0].port, 0);
    marathon.set_state(&apps, &tasks);

    // One plain run writes the first config; its duration is what a cron run costs.
    let mut one_run = Vec::new();
    for _ in 0..5 {
        fs::remove_file(dir.path().join("haproxy.cfg")).ok();
        let started = Instant::now();
        let status = base_command(dir.path(), &marathon.url())
            .args(["--reload-command", "true"])
            .status()
            .unwrap();
        assert!(status.success());
        one_run.push(started.elapsed());
    }
    one_run.sort();
    let haproxy = Haproxy::start(
        &dir.path().join("haproxy.cfg"),
        &dir.path().join("run"),
        service_port,
    );
    let reload = haproxy.reload_shell_command();

    let sse = base_command(dir.path(), &marathon.url())
        .args(["--reload-command", &reload, "--sse", "--interval", "5m"])
        .spawn()
        .unwrap();
    assert!(marathon.wait_for_streams_opened(1, Duration::from_secs(10)));
    let sse_samples = measure(&marathon, service_port, &backends, true);
    stop(sse);

    let polling = base_command(dir.path(), &marathon.url())
        .args(["--reload-command", &reload, "--interval", "1s"])
        .spawn()
        .unwrap();
    let polling_samples = measure(&marathon, service_port, &backends, false);
    stop(polling);

    let run = percentile(&one_run, 50.0);
    println!(
        "latency from a Marathon change to HAProxy serving the new task, {CHANGES} changes each"
    );
    println!("{:<26} {:>9} {:>9} {:>9}", "mode", "p50", "p99", "max");
    for (mode, samples) in [("--sse", &sse_samples), ("--interval 1s", &polling_samples)] {
        println!(
            "{:<26} {:>9} {:>9} {:>9}",
            mode,
            ms(percentile(samples, 50.0)),
            ms(percentile(samples, 99.0)),
            ms(*samples.last().unwrap())
        );
    }
    println!(
        "{:<26} {:>9} {:>9} {:>9}   (derived: uniform wait for the next minute + one run of {})",
        "cron * * * * *",
        ms(Duration::from_secs(30) + run),
        ms(Duration::from_millis(59_400) + run),
        ms(Duration::from_secs(60) + run),
        ms(run)
    );
}
