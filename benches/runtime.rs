//! Runtime update against reload at 10,000 backends × 3 servers: how long from the start of a
//! cron-style run until a request through a real HAProxy reaches the moved task, what the run's
//! `haproxy -c` took, and how much memory and how many processes HAProxy used meanwhile.
//! `cargo bench --bench runtime`; the README quotes it.
//!
//! A stand-in Marathon (127.0.0.1) serves 10,000 apps × 3 tasks shaped like real answers (env,
//! constraints, fetch URIs, upgrade strategy, version info, task ids, agents, zones): 100 of
//! them run their tasks on tiny real backends on 127.0.0.1 with a TCP health check, the others
//! on 10.x addresses without checks (30,000 checks would flood the machine; nothing is sent
//! there). Every app has its own frontend (`bind` on a 127.77.x.1 address, or a reserved port of
//! 127.0.0.1 for the 100), as marathon-lb renders it. HAProxy runs in master-worker mode
//! (`-W -S`), maxconn 1000, with an admin stats socket for the CLI comparison at the end.
//!
//! A task move puts one task of an app on another backend; the clock starts when the binary
//! is started (once per change, as cron does) and stops at the first request through HAProxy
//! answered by the new backend (for 100 moves: when the last of the 100 apps is). Measured with
//! the runtime API (the default with `--haproxy-master-socket`) and with `--no-runtime-api`
//! (a master-CLI reload), alternately. A sampler thread reads /proc every 5 ms: the summed RSS
//! and the number of HAProxy's own processes (the master and its workers), and the `haproxy -c`
//! the binary runs, with the moment it ends. Reloads are counted from `show proc`.

#[path = "../tests/support/backend.rs"]
mod backend;
#[path = "../tests/support/haproxy.rs"]
mod haproxy;
#[path = "../tests/support/marathon.rs"]
mod marathon;
#[path = "../tests/support/ports.rs"]
mod ports;
#[path = "../tests/support/process.rs"]
mod process;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use backend::{http_get, traffic_reaches, Backend};
use haproxy::{Haproxy, HAPROXY_BIN};
use haproxy_marathon_sync::apply::{runtime_plan, ProcessTable};
use marathon::FakeMarathon;
use ports::Port;
use process::Guarded;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

const APPS: usize = 10_000;
/// Apps whose tasks run on real backends: the ones moved and measured.
const MEASURED: usize = 100;
/// The app moved alone in the one-move rounds (an index into the measured apps).
const SINGLE: usize = 50;
const SINGLE_ROUNDS: usize = 5;
const BATCH_ROUNDS: usize = 3;
const CLI_ROUNDS: usize = 5;

/// Longest a run may take to bring the moved tasks live, and to end.
const RUN_LIMIT: Duration = Duration::from_secs(90);
/// Longest the old worker of a reload may stay (the head's `hard-stop-after` is 5 s).
const OLD_WORKER_LIMIT: Duration = Duration::from_secs(15);
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
const POLL_EVERY: Duration = Duration::from_millis(1);
const SLOW_POLL: Duration = Duration::from_millis(50);

/// The index among all apps of measured app `k`.
fn measured_index(k: usize) -> usize {
    k * (APPS / MEASURED) + 37
}

struct Cluster {
    /// Third octet of the 127.77.x.1 address the unmeasured apps' frontends bind.
    octet: u8,
    /// The measured apps' service ports, held so no one else takes them.
    ports: Vec<Port>,
    /// The two backends every measured app keeps a task on, and the two its third task moves
    /// between.
    stay: [Backend; 2],
    movers: [Backend; 2],
    /// Which of `movers` each measured app's third task is on, and how often it moved.
    position: Vec<usize>,
    moves: Vec<usize>,
    apps_json: String,
}

impl Cluster {
    fn new() -> Cluster {
        let ports: Vec<Port> = (0..MEASURED).map(|_| Port::reserve()).collect();
        let mut cluster = Cluster {
            octet: 20 + (std::process::id() % 200) as u8,
            ports,
            stay: [Backend::start("stay-a"), Backend::start("stay-b")],
            movers: [Backend::start("mover-x"), Backend::start("mover-y")],
            position: vec![0; MEASURED],
            moves: vec![0; MEASURED],
            apps_json: String::new(),
        };
        let apps: Vec<String> = (0..APPS).map(|i| cluster.app(i)).collect();
        cluster.apps_json = format!(r#"{{"apps":[{}]}}"#, apps.join(","));
        cluster
    }

    fn measured(&self, i: usize) -> Option<usize> {
        (i % (APPS / MEASURED) == 37).then_some(i / (APPS / MEASURED))
    }

    fn service_port(&self, i: usize) -> u16 {
        match self.measured(i) {
            Some(k) => self.ports[k].number(),
            None => 10_000 + i as u16,
        }
    }

    /// The backend HAProxy names for app `i` (marathon-lb's `<app id with _>_<service port>`).
    fn backend_name(&self, i: usize) -> String {
        format!("team{}_svc{i}_{}", i % 50, self.service_port(i))
    }

    /// The name of the backend measured app `k`'s third task is on now.
    fn mover_name(&self, k: usize) -> &str {
        &self.movers[self.position[k]].name
    }

    fn app(&self, i: usize) -> String {
        let team = i % 50;
        let port = self.service_port(i);
        let measured = self.measured(i).is_some();
        let bind = if measured {
            "127.0.0.1".to_string()
        } else {
            format!("127.77.{}.1", self.octet)
        };
        let mode = if !measured && i % 3 == 1 {
            "tcp"
        } else {
            "http"
        };
        let checks = if measured {
            r#"[{"protocol":"TCP","portIndex":0,"gracePeriodSeconds":30,"intervalSeconds":10,"timeoutSeconds":5,"maxConsecutiveFailures":3,"delaySeconds":15}]"#
        } else {
            "[]"
        };
        format!(
            r#"{{"id":"/team{team}/svc{i}","cmd":"exec /opt/svc{i}/bin/server --port $PORT0 --config /etc/svc{i}/config.yaml","args":null,"user":null,"instances":3,"cpus":0.5,"mem":512,"disk":0,"gpus":0,"executor":"","constraints":[["hostname","UNIQUE"],["rack","GROUP_BY","3"]],"uris":[],"fetch":[{{"uri":"https://artifacts.example.com/team{team}/svc{i}/config-{i}.tar.gz","extract":true,"executable":false,"cache":false}}],"storeUrls":[],"backoffSeconds":1,"backoffFactor":1.15,"maxLaunchDelaySeconds":3600,"env":{{"JAVA_OPTS":"-Xmx384m -XX:+UseG1GC","LOG_LEVEL":"info","SERVICE_NAME":"svc{i}","TEAM":"team{team}","CONFIG_URL":"https://config.example.com/team{team}/svc{i}","DATABASE_URL":"postgres://db-team{team}.example.com:5432/svc{i}","FEATURE_FLAGS":"checkout,search,recommendations"}},"labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"{mode}","HAPROXY_0_BIND_ADDR":"{bind}","owner":"team{team}","cost-center":"cc-{:04}","tier":"backend","DCOS_SERVICE_SCHEME":"http"}},"networks":[{{"mode":"host"}}],"portDefinitions":[{{"port":{port},"protocol":"tcp","name":"http","labels":{{"metrics":"/metrics"}}}}],"requirePorts":false,"healthChecks":{checks},"container":null,"readinessChecks":[],"dependencies":[],"upgradeStrategy":{{"minimumHealthCapacity":1,"maximumOverCapacity":1}},"acceptedResourceRoles":["*"],"ipAddress":null,"version":"2026-11-20T10:00:00.000Z","residency":null,"secrets":{{}},"taskKillGracePeriodSeconds":null,"unreachableStrategy":{{"inactiveAfterSeconds":300,"expungeAfterSeconds":600}},"killSelection":"YOUNGEST_FIRST","versionInfo":{{"lastScalingAt":"2026-11-20T10:00:00.000Z","lastConfigChangeAt":"2026-11-19T16:30:00.000Z"}},"tasksStaged":0,"tasksRunning":3,"tasksHealthy":3,"tasksUnhealthy":0,"deployments":[]}}"#,
            team * 17
        )
    }

    /// `/v2/tasks` as the cluster stands: 3 tasks per app.
    fn tasks_json(&self) -> String {
        let mut tasks = Vec::with_capacity(APPS * 3);
        for i in 0..APPS {
            let app = format!("team{}_svc{i}", i % 50);
            let port = self.service_port(i);
            for t in 0..3 {
                let (host, task_port, task_id, checked) = match self.measured(i) {
                    Some(k) => {
                        let (backend, id) = match t {
                            2 => (
                                &self.movers[self.position[k]],
                                format!("{app}.mover-{}", self.moves[k]),
                            ),
                            _ => (&self.stay[t], format!("{app}.stay-{t}")),
                        };
                        ("127.0.0.1".to_string(), backend.port, id, true)
                    }
                    None => (
                        format!("10.{}.{}.{}", i / 250 % 250, i % 250, 1 + t * 80),
                        31_000 + ((i * 7 + t * 3) % 1000) as u16,
                        format!("{app}.{:08x}-cc1d-11ee-9a41-0242ac11000{t}", i * 3 + t),
                        false,
                    ),
                };
                let results = if checked {
                    format!(
                        r#"[{{"alive":true,"consecutiveFailures":0,"firstSuccess":"2026-11-20T10:00:40.000Z","lastFailure":null,"lastSuccess":"2026-11-25T10:15:50.000Z","lastFailureCause":null,"instanceId":"{task_id}","taskId":"{task_id}"}}]"#
                    )
                } else {
                    "[]".to_string()
                };
                tasks.push(format!(
                    r#"{{"id":"{task_id}","appId":"/team{}/svc{i}","slaveId":"9d1a8c34-1b3e-4f6a-8e2f-{:012x}-S{t}","host":"{host}","state":"TASK_RUNNING","ports":[{task_port}],"servicePorts":[{port}],"ipAddresses":[{{"ipAddress":"{host}","protocol":"IPv4"}}],"localVolumes":[],"region":"eu-west-1","zone":"eu-west-1{}","role":"slave_public","stagedAt":"2026-11-20T10:00:05.000Z","startedAt":"2026-11-20T10:00:12.000Z","version":"2026-11-20T10:00:00.000Z","healthCheckResults":{results}}}"#,
                    i % 50,
                    i % 4096,
                    ["a", "b", "c"][t]
                ));
            }
        }
        format!(r#"{{"tasks":[{}]}}"#, tasks.join(","))
    }

    /// Moves the third task of each of the measured apps `moved` to the other mover.
    fn move_tasks(&mut self, moved: &[usize]) {
        for &k in moved {
            self.position[k] = 1 - self.position[k];
            self.moves[k] += 1;
        }
    }
}

/// Which of our processes a PID is, as the sampler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relation {
    /// HAProxy's master or one of its workers.
    Serving,
    /// The benchmark itself.
    Bench,
    /// Started by the benchmark, not HAProxy's: the binary and its `haproxy -c`.
    Tool,
    Unrelated,
}

#[derive(Debug, Clone, Default)]
struct Peak {
    /// Largest sum of RSS over HAProxy's master and workers in one sample.
    serving_rss: u64,
    /// Most of HAProxy's own processes (master included) seen at once.
    serving_processes: usize,
    /// Largest RSS of the binary's `haproxy -c`.
    validator_rss: u64,
    validator_seen: bool,
    /// Whether the latest sample saw it.
    validator_now: bool,
    /// The last sample that saw the binary's `haproxy -c`.
    validator_last_seen: Option<Instant>,
    /// Largest RSS of the binary itself.
    tool_rss: u64,
}

/// A thread reading /proc every [`SAMPLE_EVERY`], keeping the peaks since the last `take`.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<Mutex<Peak>>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    fn start(master: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(Mutex::new(Peak::default()));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            thread::spawn(move || {
                let bench = std::process::id();
                let mut known: HashMap<u32, Relation> = HashMap::new();
                while !stop.load(Ordering::Relaxed) {
                    let sample = sample(master, bench, &mut known);
                    let mut peak = peak.lock().unwrap();
                    peak.serving_rss = peak.serving_rss.max(sample.serving_rss);
                    peak.serving_processes = peak.serving_processes.max(sample.serving_processes);
                    peak.validator_rss = peak.validator_rss.max(sample.validator_rss);
                    peak.tool_rss = peak.tool_rss.max(sample.tool_rss);
                    peak.validator_now = sample.validator_seen;
                    if sample.validator_seen {
                        peak.validator_seen = true;
                        peak.validator_last_seen = Some(Instant::now());
                    }
                    drop(peak);
                    thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Sampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Whether the run's `haproxy -c` was seen and has ended since the last `take`.
    fn validator_done(&self) -> bool {
        let peak = self.peak.lock().unwrap();
        peak.validator_seen && !peak.validator_now
    }

    /// The peaks since the last call, and a fresh start.
    fn take(&self) -> Peak {
        std::mem::take(&mut *self.peak.lock().unwrap())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `(comm, ppid, rss bytes)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(String, u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses itself.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let fields: Vec<&str> = text[close + 2..].split(' ').collect();
    // After the name: state(0) ppid(1) ... rss(21), in pages.
    let ppid = fields.get(1)?.parse().ok()?;
    let rss_pages: u64 = fields.get(21)?.parse().ok()?;
    Some((comm, ppid, rss_pages * 4096))
}

/// How `pid` (whose parent is `ppid`) relates to us; remembered in `known`, which forgets PIDs
/// that are gone (a reused PID is looked at afresh).
fn relation(
    pid: u32,
    ppid: u32,
    (master, bench): (u32, u32),
    known: &mut HashMap<u32, Relation>,
    depth: usize,
) -> Relation {
    if pid == master {
        return Relation::Serving;
    }
    if pid == bench {
        return Relation::Bench;
    }
    let parent = match known.get(&ppid) {
        Some(relation) => *relation,
        None if ppid <= 1 => Relation::Unrelated,
        // Ours are a few levels below the benchmark; a longer chain is none of ours.
        None => match stat(ppid) {
            Some((_, grandparent, _)) if depth < 32 => {
                relation(ppid, grandparent, (master, bench), known, depth + 1)
            }
            _ => Relation::Unrelated,
        },
    };
    let relation = match parent {
        Relation::Serving => Relation::Serving,
        Relation::Bench | Relation::Tool => Relation::Tool,
        Relation::Unrelated => Relation::Unrelated,
    };
    known.insert(pid, relation);
    relation
}

#[derive(Default)]
struct Sample {
    serving_rss: u64,
    serving_processes: usize,
    validator_rss: u64,
    validator_seen: bool,
    tool_rss: u64,
}

fn sample(master: u32, bench: u32, known: &mut HashMap<u32, Relation>) -> Sample {
    let mut sample = Sample::default();
    let Ok(entries) = fs::read_dir("/proc") else {
        return sample;
    };
    let mut present = HashSet::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        present.insert(pid);
        if known.get(&pid) == Some(&Relation::Unrelated) {
            continue;
        }
        let Some((comm, ppid, rss)) = stat(pid) else {
            continue;
        };
        match relation(pid, ppid, (master, bench), known, 0) {
            Relation::Serving => {
                sample.serving_rss += rss;
                sample.serving_processes += 1;
            }
            Relation::Tool if comm == "haproxy" => {
                sample.validator_rss += rss;
                sample.validator_seen = true;
            }
            // The kernel keeps 15 characters of the name.
            Relation::Tool if comm.starts_with("haproxy-marath") => sample.tool_rss += rss,
            _ => {}
        }
    }
    known.retain(|pid, _| present.contains(pid));
    sample
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Runtime,
    Reload,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Runtime => "runtime API",
            Mode::Reload => "reload",
        }
    }
}

struct Round {
    /// `runtime_plan::classify` of the live and the applied config, in this process.
    classify: Duration,
    /// Start of the run to the last moved task serving.
    live: Duration,
    /// Start of the run to its exit.
    run: Duration,
    /// Start of the run to the last sample that saw its `haproxy -c`.
    validated_by: Option<Duration>,
    phases: BTreeMap<String, f64>,
    reloads: u64,
    worker_changed: bool,
    peak: Peak,
    how: String,
}

struct Bench {
    dir: tempfile::TempDir,
    marathon: FakeMarathon,
    haproxy: Haproxy,
    sampler: Sampler,
    cluster: Cluster,
    /// Measured app indices in the order their backends appear in the config, so the poller
    /// follows the order in which a runtime update reaches them.
    poll_order: Vec<usize>,
    runs: usize,
}

fn write_templates(dir: &Path, appid_port: u16) {
    let templates = dir.join("templates");
    fs::create_dir_all(&templates).unwrap();
    fs::write(
        templates.join("HAPROXY_HEAD"),
        format!(
            "global\n  maxconn 1000\n  hard-stop-after 5s\n  stats socket {} level admin\n\n\
             defaults\n  mode http\n  timeout connect 2s\n  timeout client 5s\n  \
             timeout server 5s\n",
            dir.join("admin.sock").display()
        ),
    )
    .unwrap();
    fs::write(
        templates.join("HAPROXY_HTTP_FRONTEND_APPID_HEAD"),
        format!("\nfrontend marathon_http_appid_in\n  bind 127.0.0.1:{appid_port}\n  mode http\n"),
    )
    .unwrap();
}

/// The binary against `marathon`, as a cron line runs it, with a clean environment.
fn tool(dir: &Path, marathon: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .args(["--marathon", marathon, "--group", "external"])
        .arg("--dont-bind-http-https")
        .arg("--haproxy-config")
        .arg(dir.join("haproxy.cfg"))
        .arg("--templates")
        .arg(dir.join("templates"))
        .args(["--haproxy-bin", HAPROXY_BIN])
        .args(["--timeout", "30", "--command-timeout", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    command
}

fn table(haproxy: &Haproxy) -> ProcessTable {
    ProcessTable::parse(&haproxy.show_proc()).expect("show proc has a master line")
}

fn current_worker(table: &ProcessTable) -> u32 {
    table
        .workers
        .iter()
        .find(|(_, outlived)| *outlived == 0)
        .map(|(pid, _)| *pid)
        .expect("a current worker")
}

fn phases(metrics: &Path) -> BTreeMap<String, f64> {
    let text = fs::read_to_string(metrics).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let rest =
                line.strip_prefix("haproxy_marathon_sync_phase_duration_seconds{phase=\"")?;
            let (phase, value) = rest.split_once("\"} ")?;
            Some((phase.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

impl Bench {
    fn start() -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let appid_port = Port::reserve().leak();
        write_templates(dir.path(), appid_port);
        let cluster = Cluster::new();
        let marathon = FakeMarathon::start();
        marathon.set_state(cluster.apps_json.clone(), cluster.tasks_json());

        // The first run writes the config HAProxy starts on.
        let first = tool(dir.path(), &marathon.url())
            .args(["--reload-command", "true"])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            first.status.success(),
            "the first run failed: {}",
            String::from_utf8_lossy(&first.stderr)
        );
        let config = fs::read_to_string(dir.path().join("haproxy.cfg")).unwrap();
        let mut poll_order: Vec<(usize, usize)> = (0..MEASURED)
            .map(|k| {
                let name = cluster.backend_name(measured_index(k));
                let at = config
                    .find(&format!("\nbackend {name}\n"))
                    .unwrap_or_else(|| panic!("no backend {name} in the rendered config"));
                (at, k)
            })
            .collect();
        poll_order.sort();
        let haproxy = Haproxy::start(
            &dir.path().join("haproxy.cfg"),
            &dir.path().join("run"),
            appid_port,
        );
        for k in 0..MEASURED {
            assert!(
                traffic_reaches(cluster.ports[k].number(), cluster.mover_name(k)),
                "measured app {k} does not serve through HAProxy"
            );
        }
        let sampler = Sampler::start(haproxy.master_pid());
        Bench {
            dir,
            marathon,
            haproxy,
            sampler,
            cluster,
            poll_order: poll_order.into_iter().map(|(_, k)| k).collect(),
            runs: 0,
        }
    }

    fn config_bytes(&self) -> usize {
        fs::metadata(self.dir.path().join("haproxy.cfg"))
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    }

    /// Moves the measured apps `moved`, runs the binary once in `mode`, and measures.
    fn round(&mut self, mode: Mode, moved: &[usize]) -> Round {
        self.runs += 1;
        let before = table(&self.haproxy);
        let config_before = fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap();
        self.cluster.move_tasks(moved);
        self.marathon
            .set_state(self.cluster.apps_json.clone(), self.cluster.tasks_json());
        let order: Vec<usize> = self
            .poll_order
            .iter()
            .copied()
            .filter(|k| moved.contains(k))
            .collect();
        let stderr_path = self.dir.path().join(format!("run-{}.stderr", self.runs));
        let metrics = self.dir.path().join("metrics.prom");
        let _ = fs::remove_file(&metrics);
        let socket = self.haproxy.master_socket.clone();
        let mut command = tool(self.dir.path(), &self.marathon.url());
        command
            .arg("--haproxy-master-socket")
            .arg(&socket)
            .arg("--metrics-file")
            .arg(&metrics)
            .stderr(File::create(&stderr_path).unwrap());
        if mode == Mode::Reload {
            command.arg("--no-runtime-api");
        }
        self.sampler.take();
        let started = Instant::now();
        let mut child = Guarded::new(command.spawn().unwrap());
        let mut exited = None;
        let stderr = |path: &PathBuf| fs::read_to_string(path).unwrap_or_default();
        // A runtime update adds the servers backend by backend in file order, and a reload
        // brings every backend at once: the last moved app in file order is live last either
        // way. So that one is timed, polled one round-robin cycle at a time (its 3 servers and
        // the one being replaced) until it answers from its new task; the others are then only
        // checked. Nothing can go live before the run's `haproxy -c` ends, so until then the
        // poll runs every 50 ms only, leaving the CPU to the run.
        let (&timed, others) = order.split_last().expect("at least one app moved");
        let target = self.cluster.mover_name(timed).to_string();
        let port = self.cluster.ports[timed].number();
        let reaches = |port: u16, target: &str| {
            (0..4).any(|_| matches!(http_get(port, "/"), Ok((200, body)) if body == target))
        };
        while !reaches(port, &target) {
            if exited.is_none() {
                if let Some(status) = child.try_status() {
                    exited = Some((status, started.elapsed()));
                }
            }
            if let Some((status, _)) = exited {
                assert!(
                    status.success(),
                    "run {} failed:\n{}",
                    self.runs,
                    stderr(&stderr_path)
                );
            }
            assert!(
                started.elapsed() < RUN_LIMIT,
                "run {}: app {timed} never reached {target}:\n{}",
                self.runs,
                stderr(&stderr_path)
            );
            let checked = self.sampler.validator_done();
            thread::sleep(if checked { POLL_EVERY } else { SLOW_POLL });
        }
        let live = started.elapsed();
        for &k in others {
            let target = self.cluster.mover_name(k).to_string();
            let port = self.cluster.ports[k].number();
            let reached = haproxy::wait_for(RUN_LIMIT, || reaches(port, &target));
            assert!(reached, "run {}: app {k} never reached {target}", self.runs);
        }
        let (status, run) = match exited {
            Some(exited) => exited,
            None => loop {
                if let Some(status) = child.try_status() {
                    break (status, started.elapsed());
                }
                assert!(
                    started.elapsed() < RUN_LIMIT,
                    "run {} did not end",
                    self.runs
                );
                thread::sleep(POLL_EVERY);
            },
        };
        assert!(
            status.success(),
            "run {} failed:\n{}",
            self.runs,
            stderr(&stderr_path)
        );
        // A reload's old worker counts while it lives on.
        let gone = haproxy::wait_for(OLD_WORKER_LIMIT, || table(&self.haproxy).old_workers() == 0);
        assert!(gone, "an old worker outlived {OLD_WORKER_LIMIT:?}");
        let peak = self.sampler.take();
        let after = table(&self.haproxy);
        let text = stderr(&stderr_path);
        let how = text
            .lines()
            .find(|line| line.contains("applied "))
            .and_then(|line| {
                let (_, how) = line
                    .split_once(" (runtime")
                    .or(line.split_once(" (reloaded"))?;
                Some(if how.starts_with(", no reload)") {
                    "runtime, no reload".to_string()
                } else {
                    format!("reloaded{}", how.split(')').next().unwrap_or(""))
                })
            })
            .unwrap_or_else(|| panic!("run {}: no summary line:\n{text}", self.runs));
        // The classification the run made before its `haproxy -c`, timed here in-process.
        let config_after = fs::read_to_string(self.dir.path().join("haproxy.cfg")).unwrap();
        let classify = (0..3)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(runtime_plan::classify(&config_before, &config_after));
                started.elapsed()
            })
            .min()
            .unwrap();
        Round {
            classify,
            live,
            run,
            validated_by: peak.validator_last_seen.map(|at| at - started),
            phases: phases(&metrics),
            reloads: after.reloads - before.reloads,
            worker_changed: current_worker(&after) != current_worker(&before),
            peak,
            how,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

fn range(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    format!("{:.0}–{:.0}", min, max)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn report(change: &str, mode: Mode, rounds: &[Round]) {
    let column = |f: &dyn Fn(&Round) -> f64| -> Vec<f64> { rounds.iter().map(f).collect() };
    let live = column(&|r| ms(r.live));
    let validate = column(&|r| r.phases.get("validate").copied().unwrap_or(0.0) * 1000.0);
    let beyond =
        column(&|r| ms(r.live) - r.phases.get("validate").copied().unwrap_or(0.0) * 1000.0);
    let after_check = column(&|r| r.validated_by.map_or(f64::NAN, |at| ms(r.live) - ms(at)));
    let run = column(&|r| ms(r.run));
    let reloads: u64 = rounds.iter().map(|r| r.reloads).sum();
    let new_workers = rounds.iter().filter(|r| r.worker_changed).count();
    let processes = rounds
        .iter()
        .map(|r| r.peak.serving_processes)
        .max()
        .unwrap_or(0);
    let rss = rounds.iter().map(|r| r.peak.serving_rss).max().unwrap_or(0);
    let check_rss = rounds
        .iter()
        .map(|r| r.peak.validator_rss)
        .max()
        .unwrap_or(0);
    let tool_rss = rounds.iter().map(|r| r.peak.tool_rss).max().unwrap_or(0);
    println!(
        "{change:<12} {:<11} {:>6.0} ({:>9}) {:>6.0} {:>6.0} {:>8.0} {:>10.0} {:>4}/{:<2} {:>3}/{:<2} {:>5} {:>8.0} {:>7.0} {:>6.0}",
        mode.label(),
        median(live.clone()),
        range(&live),
        median(run),
        median(validate),
        median(beyond),
        median(after_check),
        reloads,
        rounds.len(),
        new_workers,
        rounds.len(),
        processes,
        mib(rss),
        mib(check_rss),
        mib(tool_rss),
    );
    let mut hows: BTreeMap<&str, usize> = BTreeMap::new();
    for round in rounds {
        *hows.entry(round.how.as_str()).or_default() += 1;
    }
    let hows: Vec<String> = hows
        .iter()
        .map(|(how, n)| format!("{n}× ({how})"))
        .collect();
    let mut phases: Vec<String> = Vec::new();
    for phase in ["fetch", "render", "validate", "runtime", "write", "reload"] {
        let values = column(&|r| r.phases.get(phase).copied().unwrap_or(0.0) * 1000.0);
        phases.push(format!("{phase} {:.0}", median(values)));
    }
    let other = column(&|r| ms(r.run) - r.phases.values().sum::<f64>() * 1000.0);
    phases.push(format!("rest of the run {:.0}", median(other)));
    let classify = column(&|r| ms(r.classify));
    phases.push(format!("(classify {:.0})", median(classify)));
    println!(
        "             phases (median ms): {}; applied as: {}",
        phases.join(", "),
        hows.join(", ")
    );
}

/// A CLI session in prompt mode: the master's (`master> `) or a worker's stats socket (`> `).
struct Cli {
    stream: UnixStream,
    prompt: &'static [u8],
}

impl Cli {
    fn open(path: &Path, prompt: &'static [u8]) -> Cli {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut cli = Cli { stream, prompt };
        cli.ask("prompt");
        cli
    }

    /// Sends one command and reads its answer up to the prompt (each read bounded).
    fn ask(&mut self, command: &str) -> String {
        self.stream
            .write_all(format!("{command}\n").as_bytes())
            .unwrap();
        let mut answer = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        while !answer.ends_with(self.prompt) {
            let read = self
                .stream
                .read(&mut chunk)
                .unwrap_or_else(|e| panic!("reading the answer to {command:?}: {e}"));
            assert!(read > 0, "the CLI closed the session after {command:?}");
            answer.extend_from_slice(&chunk[..read]);
            assert!(answer.len() < 16 << 20, "answer to {command:?} too long");
        }
        answer.truncate(answer.len() - self.prompt.len());
        String::from_utf8_lossy(&answer).into_owned()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = self.stream.write_all(b"quit\n");
    }
}

/// What the runtime update sends for 100 task moves, as a batch of 500 commands: for each of
/// the 100 measured backends `show servers state`, `add server`, `enable server`, `set server
/// ... state maint`, `del server`. Returns its duration; `prefix` is `@!<pid> ` on the master
/// CLI and empty on the stats socket.
fn cli_batch(cli: &mut Cli, prefix: &str, backends: &[String], address: &str) -> Duration {
    let started = Instant::now();
    for backend in backends {
        let server = format!("{backend}/rtbench_probe");
        let state = cli.ask(&format!("{prefix}show servers state {backend}"));
        assert!(state.starts_with("1\n"), "show servers state: {state:?}");
        for (command, expected) in [
            (
                format!("add server {server} {address}"),
                "New server registered.\n\n",
            ),
            (format!("enable server {server}"), "\n"),
            (format!("set server {server} state maint"), "\n"),
            (format!("del server {server}"), "Server deleted.\n"),
        ] {
            let answer = cli.ask(&format!("{prefix}{command}"));
            assert_eq!(answer, expected, "{command}");
        }
    }
    started.elapsed()
}

fn main() {
    println!(
        "runtime API vs reload at {APPS} backends × 3 servers: start of a run to the moved task serving"
    );
    println!("load average at start: {}", load_average());
    let setup = Instant::now();
    let mut bench = Bench::start();
    println!(
        "Marathon answer {:.1} MB, config {:.1} MB, HAProxy {} (master-worker, maxconn 1000); set up in {:.1} s",
        (bench.cluster.apps_json.len() + bench.cluster.tasks_json().len()) as f64 / 1e6,
        bench.config_bytes() as f64 / 1e6,
        haproxy_version(),
        setup.elapsed().as_secs_f64()
    );

    let mut single: BTreeMap<&str, Vec<Round>> = BTreeMap::new();
    let mut batch: BTreeMap<&str, Vec<Round>> = BTreeMap::new();
    let all: Vec<usize> = (0..MEASURED).collect();
    for _ in 0..SINGLE_ROUNDS {
        for mode in [Mode::Runtime, Mode::Reload] {
            let round = bench.round(mode, &[SINGLE]);
            single.entry(mode.label()).or_default().push(round);
        }
    }
    for _ in 0..BATCH_ROUNDS {
        for mode in [Mode::Runtime, Mode::Reload] {
            let round = bench.round(mode, &all);
            batch.entry(mode.label()).or_default().push(round);
        }
    }

    println!();
    println!(
        "{:<12} {:<11} {:>18} {:>6} {:>6} {:>8} {:>10} {:>7} {:>6} {:>5} {:>8} {:>7} {:>6}",
        "change",
        "applied by",
        "live ms p50 (range)",
        "run",
        "check",
        "live-chk",
        "after-chk",
        "reloads",
        "worker",
        "procs",
        "RSS MiB",
        "-c MiB",
        "tool"
    );
    for mode in [Mode::Runtime, Mode::Reload] {
        report("1 task move", mode, &single[mode.label()]);
    }
    for mode in [Mode::Runtime, Mode::Reload] {
        report("100 moves", mode, &batch[mode.label()]);
    }
    println!(
        "live: start of the run to the moved task(s) serving; run: to its exit; check: its \
         `haproxy -c` (validate phase);\nlive-chk: live minus check; after-chk: live minus the \
         moment its `haproxy -c` ended (sampled every {} ms);\nreloads and new worker: rounds \
         that reloaded / changed the worker (show proc); procs: most HAProxy processes at once \
         (master + workers);\nRSS: peak summed RSS of HAProxy's master and workers; -c: peak RSS \
         of the run's `haproxy -c`; tool: peak RSS of the binary",
        SAMPLE_EVERY.as_millis()
    );

    // The same 500 commands through the master CLI (as the runtime update sends them) and
    // through the worker's own stats socket.
    let backends: Vec<String> = (0..MEASURED)
        .map(|k| bench.cluster.backend_name(measured_index(k)))
        .collect();
    let address = format!("127.0.0.1:{}", bench.cluster.stay[0].port);
    let worker = current_worker(&table(&bench.haproxy));
    let prefix = format!("@!{worker} ");
    let mut master_cli = Vec::new();
    let mut stats_socket = Vec::new();
    for _ in 0..CLI_ROUNDS {
        let mut cli = Cli::open(&bench.haproxy.master_socket, b"master> ");
        master_cli.push(ms(cli_batch(&mut cli, &prefix, &backends, &address)));
        drop(cli);
        let mut cli = Cli::open(&bench.dir.path().join("admin.sock"), b"> ");
        stats_socket.push(ms(cli_batch(&mut cli, "", &backends, &address)));
    }
    println!();
    println!(
        "500 commands (show servers state, add, enable, maint, del server for 100 backends), {CLI_ROUNDS} rounds each:"
    );
    for (path, values) in [
        ("master CLI, @!<pid> per command", master_cli),
        ("worker stats socket, level admin", stats_socket),
    ] {
        let p50 = median(values.clone());
        println!(
            "  {path:<34} p50 {p50:>6.1} ms ({} ms), {:.3} ms per command",
            range(&values),
            p50 / 500.0
        );
    }
    println!("load average at end: {}", load_average());
}

fn haproxy_version() -> String {
    Command::new(HAPROXY_BIN)
        .arg("-v")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .nth(2)
                .map(str::to_string)
        })
        .unwrap_or_default()
}
