//! The marathon-lb compatibility corpus through the real binary: each case's state is served by
//! a stand-in Marathon over HTTP on 127.0.0.1 and the binary runs as an operator would run it,
//! `--marathon URL --haproxy-config DIR/haproxy.cfg [--templates CASE/templates]
//! --skip-validation --reload-command true <case args>` with the case's environment. The files
//! it writes must match `expected/` byte for byte (map paths follow the config's directory, so
//! DIR is compared as the directory the case gave marathon-lb).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::corpus::{self, Case};
use support::marathon::FakeMarathon;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

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
/// namespace with that file over /etc/hosts and DNS switched off (needs root, as CI has).
fn command_for(case: &Case, work: &Path) -> Option<Command> {
    let Some(hosts) = Some(case.dir.join("hosts")).filter(|path| path.exists()) else {
        return Some(Command::new(BIN));
    };
    let nsswitch = work.join("nsswitch.conf");
    std::fs::write(&nsswitch, "hosts: files\n").unwrap();
    let probe = Command::new("unshare").args(["-m", "true"]).output();
    if !matches!(probe, Ok(ref out) if out.status.success()) {
        return None;
    }
    let mut command = Command::new("unshare");
    command.args(["-m", "sh", "-c"]).arg(
        "mount --bind \"$1\" /etc/hosts && mount --bind \"$2\" /etc/nsswitch.conf && shift 2 && exec \"$@\"",
    );
    command.arg("sh").arg(hosts).arg(&nsswitch).arg(BIN);
    Some(command)
}

fn run_case(case: &Case, marathon: &FakeMarathon, work: &Path) -> Option<Output> {
    let mut command = command_for(case, work)?;
    command
        .args(["--marathon", &marathon.url()])
        .arg("--haproxy-config")
        .arg(work.join("haproxy.cfg"));
    if let Some(templates) = &case.templates_dir {
        command.arg("--templates").arg(templates);
    }
    command
        .args(["--skip-validation", "--reload-command", "true"])
        .args(flags_without_config(&case.args))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .envs(
            case.env
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        )
        .stdin(Stdio::null());
    Some(command.output().expect("running haproxy-marathon-sync"))
}

/// What differs between the files the binary wrote and the case's expected files.
fn compare(case: &Case, work: &Path, output: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return vec![format!(
            "{}: exit {:?}: {stderr}",
            case.name,
            output.status.code()
        )];
    }
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
    let problems = corpus::differences(case, read("haproxy.cfg").as_deref(), &maps);
    if problems.is_empty() || stderr.trim().is_empty() {
        return problems;
    }
    [problems, vec![format!("{}: stderr: {stderr}", case.name)]].concat()
}

#[test]
fn every_corpus_case_through_the_binary_over_http() {
    let cases = corpus::load_cases();
    if cases.is_empty() {
        eprintln!("note: no compatibility corpus at ../shared/compat/cases; skipping");
        return;
    }
    let marathon = FakeMarathon::start();
    let mut failing = Vec::new();
    let mut skipped = Vec::new();
    for case in &cases {
        marathon.set_state(&case.apps_json, &case.tasks_json);
        let work = tempfile::tempdir().unwrap();
        let Some(output) = run_case(case, &marathon, work.path()) else {
            skipped.push(case.name.clone());
            continue;
        };
        let problems = compare(case, work.path(), &output);
        if !problems.is_empty() {
            eprintln!("=== case {} ({})", case.name, case.about);
            problems.iter().for_each(|problem| eprintln!("{problem}"));
            failing.push(case.name.clone());
        }
    }
    if !skipped.is_empty() {
        eprintln!("note: cases needing a private /etc/hosts skipped (unshare -m not permitted): {skipped:?}");
    }
    assert!(
        failing.is_empty(),
        "{} of {} cases differ: {failing:?}",
        failing.len(),
        cases.len()
    );
}

/// Cases marathon-lb refuses (`expected/error`) still produce a config here, and the warning
/// names what was left out.
#[test]
fn refused_inputs_render_the_rest_and_say_why() {
    let marathon = FakeMarathon::start();
    for case in corpus::load_cases()
        .iter()
        .filter(|case| case.expected.marathon_lb_error.is_some())
    {
        marathon.set_state(&case.apps_json, &case.tasks_json);
        let work = tempfile::tempdir().unwrap();
        let Some(output) = run_case(case, &marathon, work.path()) else {
            continue;
        };
        assert!(
            output.status.success(),
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&output.stderr)
        );
        let written: PathBuf = work.path().join("haproxy.cfg");
        assert!(written.exists(), "{}: nothing written", case.name);
    }
}
