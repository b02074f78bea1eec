//! Faults in the middle of a runtime update, through the binary, on a real master-worker
//! HAProxy: a master socket that closes at every command line of a runtime session (before the
//! line reaches HAProxy, after HAProxy did it, or in the middle of its answer), with the
//! fallback reload passing or broken too; SIGKILL while a command's answer is held back, while
//! the fallback reload is held, and at random moments; an `add server` HAProxy refuses; a
//! master that stops answering. Each ends, by the run itself or the next one, with HAProxy's
//! worker running exactly the servers of the file on disk, the file a fresh render that passes
//! `haproxy -c`, no marker left, and no failed request for the app whose servers never change.
//!
//! The faults come from a unix-socket proxy between `--haproxy-master-socket` and the real
//! master socket (tests/support/socket_proxy.rs). A name HAProxy already runs at another
//! address is in tests/runtime_apply.rs; the executor's typed errors in tests/runtime.rs.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::backend::{traffic_reaches, Backend};
use support::haproxy::{assert_valid, http_config, wait_for, Haproxy, HAPROXY_DEADLINE};
use support::load::Load;
use support::marathon::FakeMarathon;
use support::ports::Port;
use support::rng::Rng;
use support::socket_proxy::{Break, Event, Fault, Later, Session, SocketProxy};
use support::sync::{Run, Sync};
use support::workspace::{Workspace, TEST_HEAD};

/// Longest one run of the binary may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Longest the test waits for the proxy to report a session or a stall.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// The two Marathon states the tests move between. Each move replaces both servers of `/one`
/// (health-checked) and the one server of `/two`: three adds and three removals, so every
/// runtime session has the same commands in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    A,
    B,
}

impl State {
    fn other(self) -> State {
        match self {
            State::A => State::B,
            State::B => State::A,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One app in group `external`, http mode, on 127.0.0.1:`port`; with a TCP health check when
/// `checked` (its servers get `check`, so an add is followed by `enable health`).
fn app(id: &str, port: u16, checked: bool) -> String {
    let checks = if checked {
        r#"{"protocol":"TCP","portIndex":0,"intervalSeconds":2,"timeoutSeconds":2,"maxConsecutiveFailures":3}"#
    } else {
        ""
    };
    format!(
        r#"{{"id":"{id}","instances":1,"labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"}},"networks":[{{"mode":"host"}}],"portDefinitions":[{{"port":{port},"protocol":"tcp"}}],"healthChecks":[{checks}]}}"#
    )
}

fn task(app_id: &str, n: usize, port: u16) -> String {
    format!(
        r#"{{"id":"{}.{n}","appId":"{app_id}","host":"127.0.0.1","ports":[{port}],"state":"TASK_RUNNING"}}"#,
        app_id.trim_start_matches('/')
    )
}

/// A server as the file names it or HAProxy runs it: (name, id, address, in maintenance).
type Servers = BTreeMap<String, Vec<(String, u32, String, bool)>>;

/// The servers of every backend of a config file, sorted by name.
fn servers_of_file(text: &str) -> Servers {
    let mut servers = Servers::new();
    let mut backend: Option<String> = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.is_empty() {
            backend = line
                .strip_prefix("backend ")
                .map(|name| name.trim().to_string());
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(backend), ["server", name, address, options @ ..]) = (&backend, &words[..])
        else {
            continue;
        };
        let id = options
            .windows(2)
            .find(|pair| pair[0] == "id")
            .map(|pair| pair[1].parse().expect("a numeric server id"))
            .expect("every rendered server has an id");
        let disabled = options.contains(&"disabled");
        servers.entry(backend.clone()).or_default().push((
            name.to_string(),
            id,
            address.to_string(),
            disabled,
        ));
    }
    servers.values_mut().for_each(|list| list.sort());
    servers
}

/// The servers of every backend in an answer of `show servers state` (format 1).
fn servers_of_state(answer: &str) -> Servers {
    let mut lines = answer.lines();
    assert_eq!(lines.next(), Some("1"), "not a servers state:\n{answer}");
    assert!(
        lines.next().is_some_and(|l| l.starts_with("# be_id ")),
        "{answer}"
    );
    let mut servers = Servers::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        assert!(fields.len() >= 19, "a short servers state line: {line}");
        let admin_state: u32 = fields[6].parse().unwrap();
        servers.entry(fields[1].to_string()).or_default().push((
            fields[3].to_string(),
            fields[2].parse().unwrap(),
            format!("{}:{}", fields[4], fields[18]),
            admin_state != 0,
        ));
    }
    servers.values_mut().for_each(|list| list.sort());
    servers
}

/// A command line of a runtime session without its worker and server names: `add server`,
/// `enable health`, `show proc`..., to compare two sessions' shapes.
fn shape(line: &str) -> String {
    let words: Vec<&str> = line
        .split_whitespace()
        .filter(|w| !w.starts_with("@!"))
        .take(2)
        .collect();
    words.join(" ")
}

/// A workspace, a stand-in Marathon, a master-worker HAProxy and the proxy in front of its
/// master socket; `/steady` (one server, never changed) and `/one`, `/two` moving between the
/// two [`State`]s.
struct Rig {
    // Dropped in this order: the proxy before the directory its socket is in.
    proxy: SocketProxy,
    haproxy: Haproxy,
    marathon: FakeMarathon,
    workspace: Workspace,
    /// Service ports of `/steady`, `/one`, `/two`.
    ports: [Port; 3],
    steady: Backend,
    /// `/one` on 0, 1 (A) or 2, 3 (B); `/two` on 4 (A) or 5 (B).
    tasks: Vec<Backend>,
    /// The fresh render of each state, checked by `haproxy -c` once.
    rendered: [Option<String>; 2],
}

/// The tests' head, and what a keep-alive client needs across the fallback reloads: an idle
/// connection on an old worker is answered once more, with `Connection: close`, not cut.
fn head() -> String {
    format!("{TEST_HEAD}  option idle-close-on-response\n  timeout http-keep-alive 1s\n")
}

impl Rig {
    fn start() -> Rig {
        let workspace = Workspace::with_head(&head());
        let marathon = FakeMarathon::start();
        let placeholder = Port::reserve();
        fs::write(
            workspace.config(),
            http_config(placeholder.number(), "placeholder", &[]),
        )
        .unwrap();
        let haproxy = Haproxy::start(
            &workspace.config(),
            &workspace.path("run"),
            placeholder.number(),
        );
        let proxy = SocketProxy::start(&workspace.path("proxy.sock"), &haproxy.master_socket);
        Rig {
            workspace,
            marathon,
            haproxy,
            proxy,
            ports: [Port::reserve(), Port::reserve(), Port::reserve()],
            steady: Backend::start("steady"),
            tasks: (0..6)
                .map(|n| Backend::start(&format!("task{n}")))
                .collect(),
            rendered: [None, None],
        }
    }

    /// Marathon now runs `state`.
    fn marathon_runs(&self, state: State) {
        let [steady, one, two] = self.ports.each_ref().map(Port::number);
        let apps = [
            app("/steady", steady, false),
            app("/one", one, true),
            app("/two", two, false),
        ];
        let at = state.index();
        let tasks = [
            task("/steady", 0, self.steady.port),
            task("/one", 0, self.tasks[2 * at].port),
            task("/one", 1, self.tasks[2 * at + 1].port),
            task("/two", 0, self.tasks[4 + at].port),
        ];
        self.marathon.set_apps(&apps, &tasks);
    }

    /// One cron-style run of the binary, its master socket `socket`.
    fn sync(&self, socket: &Path) -> Sync {
        self.workspace
            .sync_without_reload(&self.marathon.url())
            .master_socket(socket)
            .args(["--max-server-loss", "100"])
    }

    fn run_through(&self, socket: &Path) -> Run {
        self.sync(socket).run_within(RUN_LIMIT)
    }

    /// A run through the proxy.
    fn run_proxied(&self) -> Run {
        self.run_through(&self.proxy.path)
    }

    /// A run through HAProxy's own master socket.
    fn run_direct(&self) -> Run {
        self.run_through(&self.haproxy.master_socket)
    }

    fn marker(&self) -> PathBuf {
        self.workspace.path("haproxy.cfg.runtime-pending")
    }

    fn reload_marker(&self) -> PathBuf {
        self.workspace.path("haproxy.cfg.reload-pending")
    }

    fn on_disk(&self) -> String {
        fs::read_to_string(self.workspace.config()).unwrap()
    }

    /// Keeps the file on disk as the fresh render of `state` (the first time each state is
    /// applied): it must pass `haproxy -c`, and a dry run must find nothing to change.
    fn record_render(&mut self, state: State) {
        let config = self.workspace.config();
        assert_valid(&config);
        let dry = self
            .sync(&self.haproxy.master_socket)
            .args(["--dry-run", "--diff"]);
        let dry = dry.run_within(RUN_LIMIT);
        dry.assert_success();
        assert_eq!(dry.stdout, "", "the dry run found a difference");
        self.rendered[state.index()] = Some(self.on_disk());
    }

    fn rendered(&self, state: State) -> &str {
        self.rendered[state.index()]
            .as_deref()
            .expect("each state is rendered once first")
    }

    /// The worker born of the latest reload.
    fn worker(&self) -> u32 {
        let table = haproxy_marathon_sync::apply::ProcessTable::parse(&self.haproxy.show_proc())
            .expect("show proc lists a master");
        let current: Vec<u32> = table
            .workers
            .iter()
            .filter(|(_, age)| *age == 0)
            .map(|(pid, _)| *pid)
            .collect();
        assert_eq!(current.len(), 1, "one current worker: {table:?}");
        current[0]
    }

    /// HAProxy runs exactly what is on disk, and what is on disk is `state`'s fresh render:
    /// the current worker's servers (names, ids, addresses and ports, maintenance) are those
    /// of the file's backends, none more, and no marker is left.
    #[track_caller]
    fn assert_haproxy_runs_the_file(&self, state: State, context: &str) {
        let on_disk = self.on_disk();
        assert!(
            on_disk == self.rendered(state),
            "{context}: the file on disk is not the fresh render of {state:?}:\n{on_disk}"
        );
        let answer = self
            .haproxy
            .command(&format!("@!{} show servers state", self.worker()));
        let running = servers_of_state(&answer);
        let wanted = servers_of_file(&on_disk);
        assert_eq!(
            running, wanted,
            "{context}: HAProxy's worker runs other servers than the file's"
        );
        assert!(
            !self.marker().exists() && !self.reload_marker().exists(),
            "{context}: a marker is left"
        );
    }

    /// Files beside the config that no run should leave (temp files of a killed run).
    fn leftovers(&self) -> Vec<String> {
        let kept = [
            "haproxy.cfg",
            "haproxy.cfg.lock",
            "haproxy.cfg.status",
            "haproxy.cfg.last-good",
        ];
        fs::read_dir(self.workspace.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("haproxy.cfg"))
            .filter(|name| !kept.contains(&name.as_str()))
            .filter(|name| {
                let archive = name.strip_prefix("haproxy.cfg.");
                archive.is_none_or(|n| n.parse::<u32>().is_err())
            })
            .collect()
    }

    /// The first run (a reload: the apps are new).
    fn first_run(&mut self) {
        self.marathon_runs(State::A);
        let first = self.run_direct();
        first.assert_success().assert_stderr_contains("(reloaded");
        assert!(
            self.haproxy.wait_for_reloads(1),
            "{}",
            self.haproxy.show_proc()
        );
        self.record_render(State::A);
        self.assert_haproxy_runs_the_file(State::A, "first run");
        assert!(traffic_reaches(self.ports[0].number(), "steady"));
    }

    /// Load on `/steady`, whose server never changes, until stopped.
    fn load_steady(&self) -> Load {
        Load::start(self.ports[0].number(), 2, 1, Duration::from_secs(300))
    }

    /// A runtime update from A to B through the proxy, passed through: the session every
    /// fault is placed in, command by command, and when it happened.
    fn calibrate(&mut self) -> Calibration {
        self.proxy.arm(None);
        self.marathon_runs(State::B);
        let started = Instant::now();
        let run = self.run_proxied();
        let whole_run = started.elapsed();
        run.assert_success()
            .assert_stderr_contains("(runtime, no reload)");
        let session = self
            .proxy
            .next_session(EVENT_WAIT)
            .expect("the run opened a runtime session");
        assert_eq!(session.broken_at, None);
        self.record_render(State::B);
        self.assert_haproxy_runs_the_file(State::B, "calibration");
        let shapes: Vec<String> = session.lines.iter().map(|l| shape(l)).collect();
        eprintln!(
            "a runtime session of 3 adds and 3 removals: {} lines: {shapes:?}",
            shapes.len()
        );
        assert_eq!(shapes.first().map(String::as_str), Some("prompt"));
        assert_eq!(shapes.last().map(String::as_str), Some("quit"));
        for verb in ["add server", "enable health", "enable server", "del server"] {
            assert!(shapes.iter().any(|s| s == verb), "no {verb}: {shapes:?}");
        }
        Calibration {
            shapes,
            whole_run,
            session: (
                session.opened.duration_since(started),
                session.closed.duration_since(started),
            ),
        }
    }
}

/// What one passed-through runtime update looked like.
struct Calibration {
    /// Its command lines' [`shape`]s.
    shapes: Vec<String>,
    /// From starting the binary to its end.
    whole_run: Duration,
    /// When its runtime session opened and closed, from starting the binary.
    session: (Duration, Duration),
}

/// The lines of the next runtime session the proxy reports, once checked that it broke at
/// line `k` of a session of the calibrated shape.
#[track_caller]
fn assert_broken_at(proxy: &SocketProxy, k: usize, shapes: &[String]) -> Vec<String> {
    let session = proxy
        .next_session(EVENT_WAIT)
        .expect("the run opened a runtime session");
    assert_broken(&session, k, shapes);
    session.lines
}

#[track_caller]
fn assert_broken(session: &Session, k: usize, shapes: &[String]) {
    assert_eq!(session.broken_at, Some(k), "{:?}", session.lines);
    let seen: Vec<String> = session.lines.iter().map(|l| shape(l)).collect();
    assert_eq!(seen, shapes[..k], "the session took another shape");
}

#[test]
fn a_master_socket_closing_at_any_command_of_a_runtime_update_ends_with_haproxy_running_the_file() {
    let started = Instant::now();
    let mut rig = Rig::start();
    rig.first_run();
    let load = rig.load_steady();
    let shapes = rig.calibrate().shapes;
    let n = shapes.len();
    let hows = [Break::Unsent, Break::Unanswered, Break::MidAnswer];
    let laters = [Later::Pass, Later::Refuse];
    let mut state = State::B;
    let (mut fell_back, mut next_run_reloaded, mut stayed_runtime) = (0, 0, 0);
    // Every command position, each break kind and both fates of the reload in turn (k % 3 and
    // k % 2 go through all six pairs every six positions).
    for k in 1..=n {
        let fault = Fault {
            line: k,
            how: hows[k % 3],
            later: laters[k % 2],
        };
        let context = format!("line {k} ({}), {fault:?}", shapes[k - 1]);
        let before = state;
        state = state.other();
        rig.marathon_runs(state);
        rig.proxy.arm(Some(fault));
        let run = rig.run_proxied();
        let lines = assert_broken_at(&rig.proxy, k, &shapes);
        let command = &lines[k - 1];

        let next_must_reload = if k == n {
            // `quit`: the session was over and the executor had its answers.
            run.assert_success()
                .assert_stderr_contains("(runtime, no reload)");
            stayed_runtime += 1;
            false
        } else if fault.later == Later::Pass {
            // The run reloads the validated file itself; its summary names the command.
            run.assert_success()
                .assert_stderr_contains("(reloaded: the runtime update failed: ")
                .assert_stderr_contains(&format!("closed the session after `{command}`"));
            fell_back += 1;
            false
        } else {
            // The reload fails too, and so does the rollback's: the old file is back on disk,
            // the marker stays, and the next run reloads.
            run.assert_exit(8)
                .assert_stderr_contains("and so did the rollback");
            assert!(
                rig.on_disk() == rig.rendered(before),
                "{context}: the previous file is not back"
            );
            assert!(rig.marker().exists(), "{context}: the marker is gone");
            true
        };

        let next = rig.run_direct();
        next.assert_success();
        if next_must_reload {
            next.assert_stderr_contains(
                "(reloaded: a previous run was stopped during a runtime update)",
            );
            next_run_reloaded += 1;
        } else {
            next.assert_silent();
        }
        rig.assert_haproxy_runs_the_file(state, &context);
        assert_eq!(rig.proxy.drain(), Vec::<Event>::new(), "{context}");
    }
    assert_eq!(rig.leftovers(), Vec::<String>::new());
    let tally = load.stop();
    assert_eq!(
        (tally.failures, tally.non_200),
        (0, 0),
        "requests to /steady failed: {:#?}",
        tally.described
    );
    assert!(tally.requests > 50, "too little load: {tally:?}");
    eprintln!(
        "{n} break points: {fell_back} runs reloaded the file themselves, {next_run_reloaded} \
         left the marker and the next run reloaded, {stayed_runtime} (at `quit`) stayed \
         runtime; {} requests to /steady, none failed; {:.1?} in all",
        tally.requests,
        started.elapsed()
    );
}

/// Kills while an answer is held back: seeded positions.
const STALLED_KILLS: usize = 8;
/// Kills while the fallback reload after a broken session is held.
const FALLBACK_KILLS: usize = 4;
/// Kills at seeded moments of a whole run, with nothing held back.
const TIMED_KILLS: usize = 15;
/// `FAULTS_SEED=<n>` replays another run.
const DEFAULT_SEED: u64 = 0x5eed_2026_1202;

#[test]
fn sigkill_during_a_runtime_update_is_finished_by_the_next_run() {
    let started = Instant::now();
    let mut rng = Rng::seeded("FAULTS_SEED", DEFAULT_SEED);
    let seed = rng.seed;
    let mut rig = Rig::start();
    rig.first_run();
    let load = rig.load_steady();
    // The calibration run, timed, bounds the random delays.
    let calibration = rig.calibrate();
    let (shapes, whole_run) = (&calibration.shapes, calibration.whole_run);
    let n = shapes.len();
    let mut state = State::B;

    for kill in 0..STALLED_KILLS {
        // Any line but `quit`, whose answer the executor does not wait for.
        let k = 1 + rng.below(n - 1);
        let how = if rng.one_in(2) {
            Break::StallAnswered
        } else {
            Break::StallUnsent
        };
        let context = format!(
            "stalled kill {kill} at line {k} ({}), {how:?}, seed {seed}",
            shapes[k - 1]
        );
        let before = state;
        state = state.other();
        rig.marathon_runs(state);
        rig.proxy.arm(Some(Fault {
            line: k,
            how,
            later: Later::Pass,
        }));
        let mut child = rig.sync(&rig.proxy.path).spawn();
        let stalled = rig.proxy.next_event_unless(
            EVENT_WAIT,
            || child.try_status().is_some(),
            |event| matches!(event, Event::Stalled { .. }),
        );
        let Some(Event::Stalled { command }) = stalled else {
            let (status, _, stderr) = child.stop_and_read_stderr();
            panic!("{context}: no stall ({stalled:?}); the run ended {status:?}:\n{stderr}");
        };
        child.signal(libc::SIGKILL);
        let status = child.wait_timeout(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| !s.success()),
            "{context}: the run was not killed: {status:?}"
        );
        let lines = assert_broken_at(&rig.proxy, k, shapes);
        assert_eq!(lines[k - 1], command);
        // Killed inside the session: the old file, and the marker made before any command.
        assert!(
            rig.on_disk() == rig.rendered(before),
            "{context}: the file changed before the session ended"
        );
        assert!(rig.marker().exists(), "{context}: no marker");

        let next = rig.run_direct();
        next.assert_success().assert_stderr_contains(
            "(reloaded: a previous run was stopped during a runtime update)",
        );
        rig.assert_haproxy_runs_the_file(state, &context);
        assert_eq!(rig.leftovers(), Vec::<String>::new(), "{context}");
    }

    // Kills during the fallback reload: the session broken, then one of the reload's own
    // sessions held (its `show proc`, or its `reload`, passed to HAProxy or not). The file is in
    // place, its reload not settled: the next run reloads.
    for kill in 0..FALLBACK_KILLS {
        let k = 1 + rng.below(n - 1);
        let how = [Break::Unsent, Break::Unanswered, Break::MidAnswer][rng.below(3)];
        let (session, forwarded) = (1 + rng.below(2), rng.one_in(2));
        let later = Later::Stall { session, forwarded };
        let context = format!(
            "fallback kill {kill}: broken at line {k} ({}), {how:?}, {later:?}, seed {seed}",
            shapes[k - 1]
        );
        state = state.other();
        rig.marathon_runs(state);
        rig.proxy.arm(Some(Fault {
            line: k,
            how,
            later,
        }));
        let mut child = rig.sync(&rig.proxy.path).spawn();
        let mut events = Vec::new();
        rig.proxy.next_event_unless(
            EVENT_WAIT,
            || child.try_status().is_some(),
            |event| {
                events.push(event.clone());
                matches!(event, Event::Stalled { .. })
            },
        );
        let Some(Event::Stalled { command }) = events.last().cloned() else {
            let (status, _, stderr) = child.stop_and_read_stderr();
            panic!("{context}: no stall ({events:?}); the run ended {status:?}:\n{stderr}");
        };
        child.signal(libc::SIGKILL);
        let status = child.wait_timeout(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| !s.success()),
            "{context}: the run was not killed: {status:?}"
        );
        let held = ["show proc; quit", "reload; quit"][session - 1];
        assert_eq!(command, held, "{context}");
        let broken = events.iter().find_map(|event| match event {
            Event::Session(session) => Some(session),
            _ => None,
        });
        assert_broken(broken.expect("the broken session"), k, shapes);
        assert!(
            rig.on_disk() == rig.rendered(state),
            "{context}: the validated file is not in place"
        );
        assert!(
            rig.marker().exists() && rig.reload_marker().exists(),
            "{context}: a marker is missing"
        );

        // A `reload` the killed run passed on makes the master re-execute, and its socket
        // refuses connections meanwhile: a run starting then fails at its first `show proc`
        // (exit 8, both markers kept; the run after finishes it). The next cron run comes
        // later than that.
        assert!(
            wait_for(HAPROXY_DEADLINE, || rig
                .haproxy
                .try_command("show proc")
                .is_some()),
            "{context}: the master does not answer"
        );
        let next = rig.run_direct();
        next.assert_success()
            .assert_stderr_contains("a previous run was stopped before its reload was confirmed");
        rig.assert_haproxy_runs_the_file(state, &context);
        assert_eq!(rig.leftovers(), Vec::<String>::new(), "{context}");
        assert!(
            rig.proxy.wait_idle(EVENT_WAIT),
            "{context}: a session hangs"
        );
        rig.proxy.drain();
    }

    // Kills at random moments: half anywhere in a whole run (start-up, fetch, validation...),
    // half from the opening of the runtime session on (the commands, the rename, the marker
    // cleared, the run record): a run's start-up varies too much for a delay from its start
    // to land there.
    let (opened, closed) = calibration.session;
    let tail = (closed - opened) * 2 + Duration::from_millis(10);
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for kill in 0..TIMED_KILLS {
        let from_session = kill % 2 == 1;
        let delay = match from_session {
            false => whole_run + whole_run / 5,
            true => tail,
        };
        let delay = Duration::from_micros(rng.next() % (delay.as_micros() as u64 + 1));
        let from = if from_session {
            "its session opened"
        } else {
            "it started"
        };
        let context = format!("timed kill {kill}, {delay:?} after {from}, seed {seed}");
        let before = state;
        state = state.other();
        rig.marathon_runs(state);
        rig.proxy.arm(None);
        let mut child = rig.sync(&rig.proxy.path).spawn();
        if from_session {
            let opened = rig.proxy.next_event_unless(
                EVENT_WAIT,
                || child.try_status().is_some(),
                |event| *event == Event::Opened,
            );
            assert_eq!(opened, Some(Event::Opened), "{context}: no runtime session");
        }
        // The random moment itself, ended early if the run finishes first.
        let ended = wait_for(delay, || child.try_status().is_some());
        if !ended {
            child.signal(libc::SIGKILL);
        }
        let status = child.wait_timeout(Duration::from_secs(10));
        assert!(status.is_some(), "{context}: the run did not end");
        assert!(
            rig.proxy.wait_idle(EVENT_WAIT),
            "{context}: a session hangs"
        );
        let sessions: Vec<Session> = rig
            .proxy
            .drain()
            .into_iter()
            .filter_map(|event| match event {
                Event::Session(session) => Some(session),
                _ => None,
            })
            .collect();
        let session = match sessions.as_slice() {
            [] => "before its session",
            [s] if s.lines.last().is_some_and(|l| l == "quit") => "after its session",
            [s] => {
                // Cut short by the kill: HAProxy may run a mix, and the marker says so.
                assert!(rig.marker().exists(), "{context}: no marker: {s:?}");
                "during its session"
            }
            other => panic!("{context}: {other:?}"),
        };

        let on_disk = rig.on_disk();
        let (new, marked) = (on_disk == rig.rendered(state), rig.marker().exists());
        assert!(
            new || on_disk == rig.rendered(before),
            "{context}: the file on disk is neither the old nor the new render"
        );
        assert!(
            !rig.reload_marker().exists(),
            "{context}: a runtime run reloaded"
        );
        let next = rig.run_direct();
        next.assert_success();
        let (disk, then) = match (new, marked) {
            (false, false) => {
                next.assert_stderr_contains("(runtime, no reload)");
                ("old file, no marker", "went live")
            }
            (false, true) => {
                next.assert_stderr_contains(
                    "(reloaded: a previous run was stopped during a runtime update)",
                );
                ("old file and the marker", "reloaded")
            }
            (true, true) => {
                next.assert_stderr_contains("a previous run was stopped during a runtime update");
                ("new file and the marker", "reloaded")
            }
            (true, false) => {
                next.assert_silent();
                ("new file, no marker", "had nothing to do")
            }
        };
        let how = match ended {
            true => format!("ended by itself ({disk}): the next run {then}"),
            false => format!("killed {session} ({disk}): the next run {then}"),
        };
        *found.entry(how).or_default() += 1;
        rig.assert_haproxy_runs_the_file(state, &context);
        assert_eq!(rig.leftovers(), Vec::<String>::new(), "{context}");
    }
    let tally = load.stop();
    assert_eq!(
        (tally.failures, tally.non_200),
        (0, 0),
        "requests to /steady failed: {:#?}",
        tally.described
    );
    eprintln!(
        "{STALLED_KILLS} kills with an answer held back, {FALLBACK_KILLS} in the fallback reload \
         and {TIMED_KILLS} at random moments \
         (seed {seed}, a whole run {whole_run:.1?}): {found:#?}; {} requests to /steady, none \
         failed; {:.1?} in all",
        tally.requests,
        started.elapsed()
    );
}

/// A runtime command HAProxy refuses, through the binary: the id the file gives a new server is
/// already taken in the worker (by a server someone added by hand). `add server` is answered
/// with HAProxy's refusal, the run reloads the validated file, and the stray server is gone.
/// (A name HAProxy already runs at another address is in tests/runtime_apply.rs.)
#[test]
fn an_add_server_haproxy_refuses_falls_back_to_a_reload_of_the_file() {
    let mut rig = Rig::start();
    rig.first_run();
    rig.marathon_runs(State::B);
    let preview = rig
        .sync(&rig.haproxy.master_socket)
        .arg("--dry-run")
        .run_within(RUN_LIMIT);
    preview.assert_success();
    let two = format!("two_{}", rig.ports[2].number());
    let (name, id, _, _) = servers_of_file(&preview.stdout)[&two][0].clone();
    let squatter = format!("@1 add server {two}/squatter 127.0.0.1:9 id {id}");
    assert_eq!(rig.haproxy.command(&squatter), "New server registered.\n\n");

    let run = rig.run_direct();
    run.assert_success()
        .assert_stderr_contains("(reloaded: the runtime update failed: HAProxy answered `")
        .assert_stderr_contains(&format!("add server {two}/{name} "))
        .assert_stderr_contains(&format!("custom id {id} already used"));
    rig.record_render(State::B);
    rig.assert_haproxy_runs_the_file(State::B, "after the refused add");
    rig.run_direct().assert_success().assert_silent();
}

/// A master that stops answering in the middle of a session (after it did the command): the
/// executor's read timeout ends the session and the run reloads the validated file.
#[test]
fn a_master_that_stops_answering_mid_session_times_out_and_the_run_reloads() {
    let mut rig = Rig::start();
    rig.first_run();
    let shapes = rig.calibrate().shapes;
    let k = 1 + shapes.iter().position(|s| s == "add server").unwrap();
    rig.marathon_runs(State::A);
    rig.proxy.arm(Some(Fault {
        line: k,
        how: Break::StallAnswered,
        later: Later::Pass,
    }));
    let started = Instant::now();
    let run = rig.run_proxied();
    let took = started.elapsed();
    let lines = assert_broken_at(&rig.proxy, k, &shapes);
    run.assert_success()
        .assert_stderr_contains("(reloaded: the runtime update failed: ")
        .assert_stderr_contains(&format!("did not answer `{}` in time", lines[k - 1]));
    rig.assert_haproxy_runs_the_file(State::A, "after the timeout");
    rig.run_direct().assert_success().assert_silent();
    eprintln!("a stalled master: the run fell back to a reload in {took:.1?}");
}
