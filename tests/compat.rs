//! The marathon-lb compatibility corpus through the real binary: each case's state is served by
//! a stand-in Marathon over HTTP on 127.0.0.1 and the binary runs as an operator would run it,
//! `--marathon URL --haproxy-config DIR/haproxy.cfg [--templates CASE/templates]
//! --skip-validation --reload-command true <case args>` with the case's environment. The files
//! it writes must match `expected/` byte for byte (map paths follow the config's directory, so
//! DIR is compared as the directory the case gave marathon-lb). Also: an app with a bad label
//! is left out, named with its label, and every other app still renders as marathon-lb does.

mod support;

use std::path::Path;
use std::process::Command;

use support::corpus::{self, Case};
use support::marathon::FakeMarathon;
use support::sync::{Run, Sync, BIN};

/// The case's marathon-lb flags without `--haproxy-config`, which the test replaces by DIR.
fn flags_without_config(args: &[String]) -> Vec<String> {
    let mut kept = Vec::new();
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--haproxy-config" {
            words.next();
        } else if !word.starts_with("--haproxy-config=") {
            kept.push(word.clone());
        }
    }
    kept
}

/// Host names resolve through the case's `hosts` file only: the binary runs in a private mount
/// namespace with that file over /etc/hosts and DNS switched off. That needs root (CI and
/// `scripts/test` run as root); without it the test fails rather than skip the case.
fn binary_for(case: &Case, work: &Path) -> Sync {
    let Some(hosts) = Some(case.dir.join("hosts")).filter(|path| path.exists()) else {
        return Sync::new();
    };
    let nsswitch = work.join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files\n").unwrap();
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    assert!(
        matches!(probe, Ok(ref out) if out.status.success()),
        "case {} needs a private /etc/hosts: `unshare -m` is not permitted here (run as root): \
         {probe:?}",
        case.name
    );
    let mut command = Command::new("unshare");
    command.args(["-m", "sh", "-c"]).arg(
        "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/nsswitch.conf && shift 2 && exec \"$@\"",
    );
    command.arg("sh").arg(hosts).arg(&nsswitch).arg(BIN);
    Sync::wrapped(command)
}

fn run_case(case: &Case, marathon: &FakeMarathon, work: &Path) -> Run {
    let mut binary = binary_for(case, work)
        .marathon(marathon.url())
        .config(work.join("haproxy.cfg"));
    if let Some(templates) = &case.templates_dir {
        binary = binary.templates(templates);
    }
    binary
        .arg("--skip-validation")
        .reload_command("true")
        .args(flags_without_config(&case.args))
        .envs(
            case.env
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .run()
}

/// The files the binary wrote into `work`, with `work` replaced by the directory the case gave
/// marathon-lb: (haproxy.cfg, map files by name).
fn written(
    case: &Case,
    work: &Path,
) -> (Option<String>, std::collections::BTreeMap<String, String>) {
    let expected_dir = case
        .haproxy_config()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let ours_dir = work.display().to_string();
    let read = |file: &str| -> Option<String> {
        let text = std::fs::read_to_string(work.join(file)).ok()?;
        Some(text.replace(&ours_dir, &expected_dir.display().to_string()))
    };
    let maps = ["domain2backend.map", "app2backend.map"]
        .into_iter()
        .filter_map(|file| Some((file.to_string(), read(file)?)))
        .collect();
    (read("haproxy.cfg"), maps)
}

/// What differs between the files the binary wrote and the case's expected files.
fn compare(case: &Case, work: &Path, run: &Run) -> Vec<String> {
    if !run.status.success() {
        return vec![format!(
            "{}: exit {:?}: {}",
            case.name,
            run.code(),
            run.stderr
        )];
    }
    let (config, maps) = written(case, work);
    let problems = corpus::differences(case, config.as_deref(), &maps);
    if problems.is_empty() || run.stderr.trim().is_empty() {
        return problems;
    }
    [
        problems,
        vec![format!("{}: stderr: {}", case.name, run.stderr)],
    ]
    .concat()
}

#[test]
fn every_corpus_case_through_the_binary_over_http() {
    let cases = corpus::load_cases();
    let marathon = FakeMarathon::start();
    let mut failing = Vec::new();
    for case in &cases {
        marathon.set_state(&case.apps_json, &case.tasks_json);
        let work = tempfile::tempdir().unwrap();
        let run = run_case(case, &marathon, work.path());
        let problems = compare(case, work.path(), &run);
        if !problems.is_empty() {
            eprintln!("=== case {} ({})", case.name, case.about);
            problems.iter().for_each(|problem| eprintln!("{problem}"));
            failing.push(case.name.clone());
        }
    }
    assert!(
        failing.is_empty(),
        "{} of {} cases differ: {failing:?}",
        failing.len(),
        cases.len()
    );
}

/// Labels that do not parse or fall outside their grammar, each on its own extra app.
const BAD_LABELS: [(&str, &str, &str); 4] = [
    ("/bad-port", "HAPROXY_0_PORT", "http"),
    ("/bad-mode", "HAPROXY_0_MODE", "udp"),
    ("/bad-vhost", "HAPROXY_0_VHOST", "a.example.com\\n  bind :1"),
    (
        "/bad-balance",
        "HAPROXY_0_BALANCE",
        "roundrobin\\nserver x 10.0.0.1:1",
    ),
];

/// The Faults table's bad-label row through the binary: a corpus cluster plus one extra app per
/// bad label (each with a running task). Each extra app is left out with a warning naming the
/// app and the label, the run succeeds, and the files are byte for byte what marathon-lb writes
/// for the cluster without them: every other app renders.
#[test]
fn refused_inputs_render_the_rest_and_say_why() {
    let case = Case::load(&corpus::case_dir("mixed-networking-cluster"));
    let mut apps: serde_json::Value = serde_json::from_str(&case.apps_json).unwrap();
    let mut tasks: serde_json::Value = serde_json::from_str(&case.tasks_json).unwrap();
    for (n, (id, label, value)) in BAD_LABELS.iter().enumerate() {
        let app = format!(
            r#"{{"id":"{id}","instances":1,"labels":{{"HAPROXY_GROUP":"external","{label}":"{value}"}},
               "portDefinitions":[{{"port":{port},"protocol":"tcp"}}],"healthChecks":[]}}"#,
            port = 10900 + n
        );
        apps["apps"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::from_str(&app).unwrap());
        let task = format!(
            r#"{{"id":"{name}.1","appId":"{id}","host":"10.0.9.{n}","ports":[31900],"state":"TASK_RUNNING"}}"#,
            name = &id[1..]
        );
        tasks["tasks"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::from_str(&task).unwrap());
    }
    let marathon = FakeMarathon::start();
    marathon.set_state(apps.to_string(), tasks.to_string());
    let work = tempfile::tempdir().unwrap();
    let run = run_case(&case, &marathon, work.path());
    run.assert_success();
    for (id, label, _) in BAD_LABELS {
        let named = run
            .stderr
            .lines()
            .any(|line| line.contains(id) && line.contains(label));
        assert!(named, "no warning names {id} and {label}:\n{}", run.stderr);
    }
    let (config, maps) = written(&case, work.path());
    let problems = corpus::differences(&case, config.as_deref(), &maps);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
