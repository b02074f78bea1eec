//! Server changes through HAProxy's runtime API, proven on a real master-worker HAProxy 2.6
//! under load: scale up, scale down and a task move with zero failed requests and the same
//! worker throughout; a removed server with a request in flight deleted only once it ends;
//! HAProxy refusing a command surfacing as a typed error; sticky and static-rr backends left
//! to reloads, because HAProxy refuses to add servers to them.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use haproxy_marathon_sync::apply::runtime::{execute, Report, RuntimeError, RuntimeOptions};
use haproxy_marathon_sync::apply::runtime_plan::{classify, Change, Edit, Plan};

use support::backend::{http_get, Backend, SlowBackend};
use support::haproxy::{free_port, wait_for, Haproxy, HAPROXY_BIN, HAPROXY_DEADLINE};
use support::load::Load;

/// A config with a small `maxconn` (open files are capped on the test machines) and one
/// frontend sending everything to backend `app`, whose servers are `(name, address, id)`.
fn config(port: u16, app_lines: &str, servers: &[(&str, String, u32)]) -> String {
    let mut text = format!(
        "global\n  maxconn 200\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  retries 3\n  \
         option redispatch\n  option http-server-close\n  timeout connect 2s\n  \
         timeout client 10s\n  timeout server 10s\n\nfrontend marathon_http_in\n  \
         bind 127.0.0.1:{port}\n  default_backend app\n\nbackend app\n{app_lines}"
    );
    for (name, address, id) in servers {
        text.push_str(&format!(
            "  server {name} {address} id {id} check inter 1s fall 2\n"
        ));
    }
    text
}

const ROUND_ROBIN: &str = "  balance roundrobin\n  mode http\n";

/// A master-worker HAProxy started on a config, and the config it runs now.
struct Rig {
    _dir: tempfile::TempDir,
    path: PathBuf,
    port: u16,
    haproxy: Haproxy,
    live: String,
}

impl Rig {
    fn start(servers: &[(&str, String, u32)]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = dir.path().join("haproxy.cfg");
        let live = config(port, ROUND_ROBIN, servers);
        std::fs::write(&path, &live).unwrap();
        let haproxy = Haproxy::start(&path, &dir.path().join("run"), port);
        Rig {
            _dir: dir,
            path,
            port,
            haproxy,
            live,
        }
    }

    /// The runtime plan from the running config to one with `servers`.
    fn plan_to(&self, servers: &[(&str, String, u32)]) -> (Plan, String) {
        let candidate = config(self.port, ROUND_ROBIN, servers);
        match classify(&self.live, &candidate) {
            Change::RuntimeOnly(plan) => (plan, candidate),
            other => panic!("expected a runtime-only change, got {other:?}"),
        }
    }

    /// Applies `plan` through the executor and puts `candidate` on disk, as a runtime apply
    /// will: HAProxy and the file then say the same.
    fn apply(&mut self, plan: &Plan, candidate: String) -> Report {
        let report = execute(
            &self.haproxy.master_socket,
            plan,
            &RuntimeOptions::default(),
        )
        .unwrap_or_else(|e| panic!("runtime update failed: {e}\n{}", self.haproxy.log_text()));
        std::fs::write(&self.path, &candidate).unwrap();
        self.live = candidate;
        report
    }

    fn worker(&self) -> u32 {
        current_worker(&self.haproxy)
    }

    /// The servers of `app` as the worker runs them: (name, admin state).
    fn running(&self) -> Vec<(String, u32)> {
        let answer = self.haproxy.command("@1 show servers state app");
        answer
            .lines()
            .skip(2)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                (fields.len() > 6).then(|| (fields[3].to_string(), fields[6].parse().unwrap()))
            })
            .collect()
    }

    fn running_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.running().into_iter().map(|(n, _)| n).collect();
        names.sort();
        names
    }
}

fn current_worker(haproxy: &Haproxy) -> u32 {
    let table = haproxy_marathon_sync::apply::ProcessTable::parse(&haproxy.show_proc())
        .expect("show proc lists a master");
    assert_eq!(table.workers.len(), 1, "one worker, no old ones: {table:?}");
    table.workers[0].0
}

fn server(name: &str, backend: &Backend, id: u32) -> (String, String, u32) {
    (name.to_string(), backend.address(), id)
}

fn refs(servers: &[(String, String, u32)]) -> Vec<(&str, String, u32)> {
    servers
        .iter()
        .map(|(n, a, i)| (n.as_str(), a.clone(), *i))
        .collect()
}

/// Waits (bounded) until `backend` has answered more than `before` requests.
fn reaches(backend: &Backend, before: usize) -> bool {
    wait_for(HAPROXY_DEADLINE, || backend.served() > before)
}

fn haproxy_check(path: &Path) {
    let output = Command::new(HAPROXY_BIN)
        .arg("-c")
        .arg("-f")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "haproxy -c refused {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Rounds of scale up, scale down and task move (each a runtime update, taking milliseconds),
/// so many updates happen while the load runs.
const ROUNDS: u32 = 30;

#[test]
fn scale_up_scale_down_and_a_task_move_under_load_never_reload() {
    let backends: Vec<Backend> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| Backend::start(n))
        .collect();
    let mut rig = Rig::start(&refs(&[server("t0_a", &backends[0], 1)]));
    let worker = rig.worker();
    let load = Load::start(rig.port, 3, 1, Duration::from_secs(120));
    assert!(reaches(&backends[0], 0), "traffic never reached a");
    let mut updates = 0;
    // Each round starts with one server on backend `at` and moves it to `at + 3`.
    let (mut current, mut at) = (server("t0_a", &backends[0], 1), 0);
    for round in 0..ROUNDS {
        let pick = |k: u32| &backends[((at + k) % 4) as usize];
        let name = |k: u32| format!("t{round}_{k}");
        let id = |k: u32| round * 10 + k + 100;
        let first = current.clone();

        // Scale up: two servers added live, and both get traffic.
        let three = vec![
            first.clone(),
            server(&name(1), pick(1), id(1)),
            server(&name(2), pick(2), id(2)),
        ];
        let (plan, candidate) = rig.plan_to(&refs(&three));
        let report = rig.apply(&plan, candidate);
        assert_eq!(report.worker, worker);
        assert_eq!(
            report.added,
            [format!("app/{}", name(1)), format!("app/{}", name(2))]
        );
        let (served_1, served_2) = (pick(1).served(), pick(2).served());
        assert!(
            reaches(pick(1), served_1) && reaches(pick(2), served_2),
            "round {round}: new servers get no traffic"
        );

        // Scale down to one: removed servers go to maintenance, then are deleted.
        let down = vec![server(&name(2), pick(2), id(2))];
        let (plan, candidate) = rig.plan_to(&refs(&down));
        let report = rig.apply(&plan, candidate);
        let mut removed = vec![format!("app/{}", first.0), format!("app/{}", name(1))];
        removed.sort();
        let mut deleted = report.deleted.clone();
        deleted.sort();
        assert_eq!(deleted, removed, "round {round}: {report:?}");
        assert!(report.pending_deletion.is_empty(), "{report:?}");
        assert_eq!(rig.running_names(), [name(2)]);

        // A task move: the only server replaced, added before the old one leaves.
        let moved = vec![server(&name(3), pick(3), id(3))];
        let (plan, candidate) = rig.plan_to(&refs(&moved));
        let report = rig.apply(&plan, candidate);
        assert_eq!(report.added, [format!("app/{}", name(3))]);
        assert_eq!(report.deleted, [format!("app/{}", name(2))]);
        let served_3 = pick(3).served();
        assert!(
            reaches(pick(3), served_3),
            "round {round}: traffic does not follow the moved task"
        );
        assert_eq!(rig.running_names(), [name(3)]);
        updates += 3;
        current = moved[0].clone();
        at = (at + 3) % 4;
    }

    // Weight and disabled alone are `set server` edits.
    let weighted = format!("{} weight 7\n", rig.live.trim_end());
    let plan = match classify(&rig.live, &weighted) {
        Change::RuntimeOnly(plan) => plan,
        other => panic!("{other:?}"),
    };
    let report = rig.apply(&plan, weighted);
    assert_eq!(report.changed.len(), 1);
    let weights = rig.haproxy.command("@1 show servers state app");
    assert!(weights.contains(" 127.0.0.1 2 0 7 "), "{weights}");

    let tally = load.stop();
    eprintln!(
        "{updates} runtime updates under load: {} requests in {:?}, by server {:?}",
        tally.requests, tally.duration, tally.by_body
    );
    assert_eq!(
        (tally.failures, tally.non_200),
        (0, 0),
        "requests failed during {updates} runtime updates: {:#?}",
        tally.described
    );
    assert!(
        tally.requests > 100,
        "too little load to prove anything: {tally:?}"
    );
    for backend in &backends {
        assert!(
            tally.by_body.get(&backend.name).is_some_and(|n| *n > 0),
            "{tally:?}"
        );
    }
    assert_eq!(rig.worker(), worker, "HAProxy was reloaded");
    assert_eq!(rig.haproxy.reloads(), Some(0));
    haproxy_check(&rig.path);
}

#[test]
fn a_removed_server_with_a_request_in_flight_is_deleted_after_it_ends() {
    let slow = SlowBackend::start();
    let fast = Backend::start("fast");
    let slow_server = (
        "task_slow".to_string(),
        format!("127.0.0.1:{}", slow.port),
        1,
    );
    let mut rig = Rig::start(&refs(std::slice::from_ref(&slow_server)));
    let worker = rig.worker();
    let port = rig.port;
    let request = thread::spawn(move || http_get(port, "/"));
    slow.accepted
        .recv_timeout(HAPROXY_DEADLINE)
        .expect("the request never reached the slow server");

    // The move: the slow server leaves while its request is still being answered.
    let (plan, candidate) = rig.plan_to(&refs(&[server("task_fast", &fast, 2)]));
    let options = RuntimeOptions {
        delete_wait: Duration::from_millis(200),
        ..RuntimeOptions::default()
    };
    let report = execute(&rig.haproxy.master_socket, &plan, &options).unwrap();
    std::fs::write(&rig.path, &candidate).unwrap();
    rig.live = candidate;
    assert_eq!(report.added, ["app/task_fast"]);
    assert_eq!(report.pending_deletion, ["app/task_slow"]);
    assert!(report.deleted.is_empty());
    let running = rig.running();
    assert!(
        running.contains(&("task_slow".to_string(), 1)),
        "the slow server is kept, in maintenance: {running:?}"
    );
    assert_eq!(http_get(rig.port, "/").unwrap(), (200, "fast".to_string()));

    slow.release.send(()).unwrap();
    let answer = request
        .join()
        .unwrap()
        .expect("the request in flight failed");
    assert_eq!(answer, (200, "slow".to_string()));

    // The next run plans against what runs: the server left in maintenance is deleted now.
    // (The plan of the move again: what runs is reconciled to the file, whatever the plan's
    // edits say.)
    let with_leftover = format!(
        "{}  server task_slow {} id 1 check inter 1s fall 2\n",
        rig.live, slow_server.1
    );
    let plan = match classify(&with_leftover, &rig.live) {
        Change::RuntimeOnly(plan) => plan,
        other => panic!("{other:?}"),
    };
    let mut deleted = false;
    for _ in 0..50 {
        let report = execute(&rig.haproxy.master_socket, &plan, &options).unwrap();
        if report.deleted == ["app/task_slow"] {
            deleted = true;
            break;
        }
        assert_eq!(report.pending_deletion, ["app/task_slow"]);
    }
    assert!(deleted, "the slow server was never deleted");
    assert_eq!(rig.running_names(), ["task_fast"]);
    assert_eq!(rig.worker(), worker);
}

#[test]
fn a_server_hidden_in_maintenance_is_reused_when_it_comes_back() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let mut rig = Rig::start(&refs(&[server("task_a", &a, 1)]));
    // A deletion that did not finish: the server is running, in maintenance, absent from the
    // file.
    let answer = rig.haproxy.command(&format!(
        "@1 add server app/task_b {} id 2 check inter 1s fall 2",
        b.address()
    ));
    assert_eq!(answer, "New server registered.\n\n");
    let both = [server("task_a", &a, 1), server("task_b", &b, 2)];
    let (plan, candidate) = rig.plan_to(&refs(&both));
    let report = rig.apply(&plan, candidate);
    assert_eq!(report.reused, ["app/task_b"]);
    assert!(report.added.is_empty());
    // Round robin over two servers: some of a few requests reach b.
    let served = b.served();
    for _ in 0..10 {
        assert_eq!(http_get(rig.port, "/").unwrap().0, 200);
    }
    assert!(b.served() > served, "the reused server gets no traffic");
    let states = rig.running();
    assert!(states.contains(&("task_b".to_string(), 0)), "{states:?}");
}

#[test]
fn commands_haproxy_refuses_are_typed_errors() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let rig = Rig::start(&refs(&[server("task_a", &a, 1)]));

    // HAProxy already runs a `task_b`, elsewhere than the file's.
    let answer = rig
        .haproxy
        .command("@1 add server app/task_b 127.0.0.1:1 id 7");
    assert_eq!(answer, "New server registered.\n\n");
    let (plan, _) = rig.plan_to(&refs(&[server("task_a", &a, 1), server("task_b", &b, 2)]));
    let err = execute(
        &rig.haproxy.master_socket,
        &plan,
        &RuntimeOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RuntimeError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("app/task_b"), "{err}");

    // An id HAProxy already has: `add server` refuses, the reply is kept word for word.
    let (plan, _) = rig.plan_to(&refs(&[server("task_a", &a, 1), server("task_c", &b, 1)]));
    let err = execute(
        &rig.haproxy.master_socket,
        &plan,
        &RuntimeOptions::default(),
    )
    .unwrap_err();
    match &err {
        RuntimeError::Unexpected { command, reply } => {
            assert!(command.starts_with("add server app/task_c "), "{command}");
            // A server from the file is named by file and line; one added at runtime by
            // `(null):0`.
            let expected = format!(
                "'id' : custom id 1 already used at {}:21 ('server task_a').\n\n",
                rig.path.display()
            );
            assert_eq!(reply, &expected);
        }
        other => panic!("{other}"),
    }
    // HAProxy serves on, unchanged; the caller reloads the file.
    assert_eq!(http_get(rig.port, "/").unwrap().0, 200);
}

#[test]
fn sticky_and_static_rr_backends_reload_because_haproxy_refuses_adding_to_them() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let port = free_port();
    let cases = [
        (
            "  balance roundrobin\n  cookie mesosphere_server_id insert indirect nocache\n",
            "cookie abc",
            "backend app uses cookie (sticky sessions): `add server` refuses `cookie`",
            "'cookie' option is not accepted for dynamic server\n\n",
        ),
        (
            "  balance static-rr\n",
            "",
            "backend app uses `balance static-rr`, whose servers HAProxy cannot change at runtime",
            "Backend must use a dynamic load balancing to support dynamic servers.\n",
        ),
    ];
    for (lines, option, reason, refusal) in cases {
        let line = |name: &str, backend: &Backend, id: u32| {
            format!("  server {name} {} id {id} {option}\n", backend.address())
        };
        let head = config(port, lines, &[]);
        let live = format!("{head}{}", line("task_a", &a, 1));
        let candidate = format!("{live}{}", line("task_b", &b, 2));
        match classify(&live, &candidate) {
            Change::ReloadRequired(why) => assert_eq!(why.0, reason),
            other => panic!("{other:?}"),
        }
        // What the rule stands on: HAProxy itself refuses the server.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, &live).unwrap();
        let haproxy = Haproxy::start(&path, &dir.path().join("run"), port);
        let answer = haproxy.command(&format!(
            "@1 add server app/task_b {} id 2 {option}",
            b.address()
        ));
        assert_eq!(answer, refusal);
    }
}

#[test]
fn marathon_lb_configs_of_the_corpus_classify_server_removals_and_adds() {
    let dir = support::corpus::cases_dir();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("expected/haproxy.cfg")))
        .filter(|p| p.is_file())
        .collect();
    cases.sort();
    let (mut live_changes, mut reloads) = (0, Vec::new());
    for path in &cases {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // Each backend's last server line, taken out: a scale down by one, and back up.
        let mut backend = "";
        let mut last_server: BTreeMap<&str, usize> = BTreeMap::new();
        for (at, line) in lines.iter().enumerate() {
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["backend", name, ..] => backend = name,
                ["server", ..] if !backend.is_empty() => {
                    last_server.insert(backend, at);
                }
                [keyword, ..] if !line.starts_with(' ') && *keyword != "backend" => backend = "",
                _ => {}
            }
        }
        for (backend, at) in last_server {
            let mut fewer: Vec<&str> = lines.clone();
            let removed = fewer.remove(at);
            let fewer = format!("{}\n", fewer.join("\n"));
            let name = removed.split_whitespace().nth(1).unwrap();
            for (from, to, adding) in [(&text, &fewer, false), (&fewer, &text, true)] {
                match classify(from, to) {
                    Change::RuntimeOnly(plan) => {
                        assert_eq!(plan.backends.len(), 1, "{}", path.display());
                        assert_eq!(plan.backends[0].backend, backend);
                        let edits = &plan.backends[0].edits;
                        assert_eq!(edits.len(), 1, "{}: {edits:?}", path.display());
                        match &edits[0] {
                            Edit::Add(server) => assert!(adding && server.name == name),
                            Edit::Remove(server) => assert!(!adding && server == name),
                            other => panic!("{}: {other:?}", path.display()),
                        }
                        live_changes += 1;
                    }
                    Change::ReloadRequired(reason) => {
                        // Only the rules of docs/RUNTIME.md may stand in the way.
                        let known = [
                            "uses cookie",
                            "whose servers HAProxy cannot change at runtime",
                            "uses default-server",
                            "on-marked-down shutdown-sessions",
                            "which `add server` refuses",
                            "which this tool does not add at runtime",
                            "a server line has address",
                            // marathon-lb names two servers alike when two tasks share a
                            // host and port (duplicate-service-ports): by name, ambiguous.
                            "has two servers named",
                        ];
                        assert!(
                            known.iter().any(|k| reason.0.contains(k)),
                            "{}: {reason}",
                            path.display()
                        );
                        reloads.push(reason.0);
                    }
                    Change::NoOp => panic!("{}: a removed line is a change", path.display()),
                }
            }
        }
    }
    eprintln!(
        "corpus: {live_changes} server changes live, {} reloads: {reloads:#?}",
        reloads.len()
    );
    assert!(
        live_changes > reloads.len(),
        "most marathon-lb server changes should go live"
    );
}
