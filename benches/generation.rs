//! How close a whole dry run comes to the floor of reading its input (issue 14): on the
//! synthetic cluster of `support/cluster.rs` written as a snapshot directory, at 1,000, 10,000
//! and 30,000 apps × 3 tasks, the floor (read both files and check their JSON syntax with serde
//! `IgnoredAny`) against the release binary's `--dry-run --skip-validation`, each as a process
//! of its own (wall time, peak RSS from `wait4`), best of N rounds, with the ratio and the peak
//! memory per byte of input; twice: a first run (no live config, so every
//! listener is new and tried with a bind) and the steady state of a cron line (the first run's
//! output live, one task moved). `cargo bench --bench generation`; the README quotes it.
//! Targets: the dry run within 3× the floor and 1.5× the input size in memory.
//!
//! The floor runs as a fresh process (this binary again, told by `GENERATION_FLOOR=DIR`) because
//! the dry run does: both start with an empty heap, so both fault in every page they touch. The
//! same floor repeated inside this process is also printed ("warm"): from its second round on,
//! glibc keeps the freed buffers of a 10,000-app cluster (each file under its 32 MiB mmap
//! ceiling) and the next round reads into pages already mapped, which no process that starts
//! cold gets; at 30,000 apps each file is over the ceiling, and both floors agree.
//!
//! `GENERATION_OUTPUT=DIR` keeps each size's dry-run output as `DIR/<apps>.cfg` (and its input
//! as the snapshot directory `DIR/cluster-<apps>`), to compare
//! the bytes before and after a change; the SHA-256 of each is printed either way.
//! `GENERATION_BINARY=PATH` runs another build of the binary (say, of main) on the same payload.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use sha2::{Digest, Sha256};

#[path = "support/cluster.rs"]
mod cluster;

const ROUNDS: usize = 5;

/// Set to a snapshot directory, this binary measures nothing and only runs [`floor`] on it.
const FLOOR_VARIABLE: &str = "GENERATION_FLOOR";

/// The floor: both files read and their syntax checked, nothing kept.
fn floor(dir: &Path) -> Duration {
    let started = Instant::now();
    for name in ["apps.json", "tasks.json"] {
        let bytes = fs::read(dir.join(name)).expect("snapshot file reads");
        serde_json::from_slice::<IgnoredAny>(&bytes).expect("snapshot file is JSON");
    }
    started.elapsed()
}

/// One dry run of the binary as a process.
struct Run {
    wall: Duration,
    /// Peak RSS in bytes.
    peak: u64,
    /// Where its stdout is: read only for the run reported, so that this process stays
    /// small while it starts the next.
    output: PathBuf,
    /// Whether it left apps out because this host holds some of their service ports (another
    /// process listens there; exit status 10): then it made a second pass, and its output is
    /// not the cluster's.
    ports_held: bool,
}

/// A finished process: its wall time from spawn to reaping, its peak RSS and how it ended.
struct Finished {
    wall: Duration,
    /// Peak RSS in bytes.
    peak: u64,
    /// The exit code, if it exited.
    code: Option<i32>,
    status: i32,
}

/// Starts `command` and waits for it, timed the same way for the floor and the dry run.
fn finish(command: &mut Command) -> Finished {
    // A child started with posix_spawn (vfork) inherits this process's peak RSS as its own
    // ru_maxrss at exec, and this one generated the cluster: a pre_exec hook makes std fork,
    // which starts the child's peak from this process's current RSS, trimmed just before.
    // SAFETY: the hook does nothing, so nothing unsafe runs between fork and exec.
    unsafe {
        command.pre_exec(|| Ok(()));
    }
    let started = Instant::now();
    let child = command.spawn().expect("the process starts");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data the kernel fills; `pid` is our own child, waited for once
    // here (std's `Child` is dropped without waiting).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(waited, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    Finished {
        wall,
        // ru_maxrss is in kilobytes on Linux.
        peak: usage.ru_maxrss as u64 * 1024,
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        status,
    }
}

/// The floor as a process of its own: this binary, run again to do nothing but [`floor`].
fn floor_process(dir: &Path) -> Duration {
    let binary = std::env::current_exe().expect("this benchmark's own path");
    let finished = finish(
        Command::new(binary)
            .env(FLOOR_VARIABLE, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null()),
    );
    assert_eq!(
        finished.code,
        Some(0),
        "the floor process failed: {}",
        finished.status
    );
    finished.wall
}

/// One dry run of the binary as a process, against `live` as the live config (absent for a
/// first run).
fn dry_run(dir: &Path, live: &Path, work: &Path, round: usize) -> Run {
    let output = work.join(format!("dry-run-{round}.out"));
    let stdout = fs::File::create(&output).expect("output file");
    let binary = std::env::var_os("GENERATION_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_haproxy-marathon-sync").into());
    let finished = finish(
        Command::new(binary)
            .arg("--marathon")
            .arg(dir)
            .arg("--haproxy-config")
            .arg(live)
            .args(["--group", "external", "--dry-run", "--skip-validation"])
            // The defaults stop at 20,000 apps and 100,000 tasks; the largest size is over.
            .args(["--max-apps", "1000000", "--max-tasks", "1000000"])
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(fs::File::create(work.join("dry-run.err")).expect("error file")),
    );
    let errors = fs::read_to_string(work.join("dry-run.err")).unwrap_or_default();
    let ports_held =
        finished.code == Some(10) && errors.contains("the address is in use on this host");
    assert!(
        finished.code == Some(0) || ports_held,
        "the dry run failed (status {}): {errors}",
        finished.status
    );
    Run {
        wall: finished.wall,
        peak: finished.peak,
        output,
        ports_held,
    }
}

/// The steady state: `first_output` is live and one task has moved to another port, so the
/// run renders everything, compares, counts and guards, and finds no new listener. Best of
/// [`ROUNDS`]; the snapshot directory is left as it was.
fn moved_task_run(dir: &Path, first_output: &[u8], work: &Path) -> (Duration, u64) {
    let live_dir = work.join("live");
    fs::create_dir_all(&live_dir).expect("live directory");
    let live = live_dir.join("haproxy.cfg");
    fs::write(&live, first_output).expect("live config");
    let moved = work.join("moved");
    fs::create_dir_all(&moved).expect("moved snapshot directory");
    fs::copy(dir.join("apps.json"), moved.join("apps.json")).expect("apps.json copied");
    let tasks = fs::read_to_string(dir.join("tasks.json")).expect("tasks.json reads");
    // The first task's first host port (31000 in the generator) moves to one no task has.
    let tasks = tasks.replacen("\"ports\":[31000", "\"ports\":[32000", 1);
    fs::write(moved.join("tasks.json"), tasks).expect("moved tasks.json");
    let runs: Vec<(Duration, u64)> = (0..ROUNDS)
        .map(|round| {
            let run = dry_run(&moved, &live, work, round);
            let errors = fs::read_to_string(work.join("dry-run.err")).unwrap_or_default();
            assert!(
                errors.contains("servers +1 -1"),
                "the moved task is not the one change: {errors}"
            );
            (run.wall, run.peak)
        })
        .collect();
    fs::remove_dir_all(&moved).expect("moved snapshot removed");
    fs::remove_dir_all(&live_dir).expect("live directory removed");
    let wall = runs.iter().map(|run| run.0).min().unwrap();
    let peak = runs.iter().map(|run| run.1).min().unwrap();
    (wall, peak)
}

fn main() {
    if let Some(dir) = std::env::var_os(FLOOR_VARIABLE) {
        floor(Path::new(&dir));
        return;
    }
    let keep = std::env::var_os("GENERATION_OUTPUT").map(std::path::PathBuf::from);
    let work = tempfile::tempdir().expect("temporary directory");
    println!(
        "generation benchmark: the dry run as a process (--dry-run --skip-validation, release \
         binary) against the floor (read both files + serde IgnoredAny), each a fresh process, best \
         of {ROUNDS}; warm: the floor repeated inside one process, for comparison"
    );
    // Other work on the machine skews the figures: say how busy it was.
    let load = || {
        fs::read_to_string("/proc/loadavg")
            .map(|load| {
                load.split_whitespace()
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    println!("load average at start: {}", load());
    println!(
        "first: no live config yet (every listener is new and tried); moved: the first run's \
         output live, one task moved (what a cron line pays every minute)"
    );
    println!(
        "{:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>7} {:>9} {:>7} {:>9} {:>7}  sha256 of the output",
        "apps",
        "input",
        "output",
        "warm",
        "floor",
        "first",
        "ratio",
        "peak RSS",
        "/input",
        "moved",
        "ratio",
        "its peak",
        "/input"
    );
    for apps in [1_000usize, 10_000, 30_000] {
        let dir = work.path().join(format!("cluster-{apps}"));
        fs::create_dir(&dir).expect("snapshot directory");
        let (apps_json, tasks_json) = cluster::synthetic_cluster(apps);
        let input = apps_json.len() + tasks_json.len();
        fs::write(dir.join("apps.json"), apps_json).expect("apps.json");
        fs::write(dir.join("tasks.json"), tasks_json).expect("tasks.json");

        let warm_floor = (0..ROUNDS).map(|_| floor(&dir)).min().unwrap();
        // SAFETY: returns freed heap to the system; no allocation is in flight.
        unsafe {
            libc::malloc_trim(0);
        }
        let best_floor = (0..ROUNDS).map(|_| floor_process(&dir)).min().unwrap();
        // Runs that found some service ports held by other processes on this host made a
        // second pass: counted only when no run was clean, and then marked.
        let first_live = work.path().join("haproxy.cfg");
        let runs: Vec<Run> = (0..ROUNDS)
            .map(|round| dry_run(&dir, &first_live, work.path(), round))
            .collect();
        let all_held = runs.iter().all(|run| run.ports_held);
        let counted = || runs.iter().filter(|run| all_held || !run.ports_held);
        let best_run = counted().map(|run| run.wall).min().unwrap();
        let least_peak = counted().map(|run| run.peak).min().unwrap();
        let output = fs::read(&counted().next().unwrap().output).expect("output reads");
        if let Some(keep) = &keep {
            fs::create_dir_all(keep).expect("GENERATION_OUTPUT directory");
            fs::write(keep.join(format!("{apps}.cfg")), &output).expect("kept output");
        }
        let digest: String = Sha256::digest(&output)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let (moved, moved_peak) = moved_task_run(&dir, &output, work.path());
        let ms = |d: Duration| format!("{:.0}ms", d.as_secs_f64() * 1000.0);
        println!(
            "{:>7} {:>7.1}MB {:>7.1}MB {:>9} {:>9} {:>9} {:>6.1}× {:>7.1}MB {:>6.2}× {:>9} {:>6.1}× {:>7.1}MB {:>6.2}×  {}{}",
            apps,
            input as f64 / 1e6,
            output.len() as f64 / 1e6,
            ms(warm_floor),
            ms(best_floor),
            ms(best_run),
            best_run.as_secs_f64() / best_floor.as_secs_f64(),
            least_peak as f64 / 1e6,
            least_peak as f64 / input as f64,
            ms(moved),
            moved.as_secs_f64() / best_floor.as_secs_f64(),
            moved_peak as f64 / 1e6,
            moved_peak as f64 / input as f64,
            &digest[..16],
            if all_held {
                "  (every run found service ports held on this host: apps left out, 2 passes)"
            } else {
                ""
            },
        );
        match &keep {
            // The input too, as a snapshot directory: to profile one dry run by hand.
            Some(keep) => {
                let input = keep.join(format!("cluster-{apps}"));
                let _ = fs::remove_dir_all(&input);
                fs::rename(&dir, &input).expect("kept snapshot");
            }
            None => fs::remove_dir_all(&dir).expect("snapshot removed"),
        }
    }
    println!("load average at the end: {}", load());
}
