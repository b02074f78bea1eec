//! The marathon-lb compatibility corpus at library level (no HTTP, no files written): every case
//! in `../shared/compat/cases` goes through parse → `model::build` → `Templates::load` →
//! `render` and must match the expected files byte for byte. One assertion at the end lists
//! every failing case, after a readable diff for each. The shared corpus is never rewritten.

mod support {
    pub mod corpus;
}

use haproxy_marathon_sync::fetch::api::{AppList, TaskList};
use haproxy_marathon_sync::model;
use haproxy_marathon_sync::render::{self, Rendered, Templates};
use support::corpus::{self, Case};

/// Renders a case with its own flags, environment and templates.
fn render_case(case: &Case) -> Result<Rendered, String> {
    let apps: AppList =
        serde_json::from_str(&case.apps_json).map_err(|err| format!("apps.json: {err}"))?;
    let tasks: TaskList =
        serde_json::from_str(&case.tasks_json).map_err(|err| format!("tasks.json: {err}"))?;
    let resolve = |host: &str| case.resolve(host);
    let (model, _warnings) = model::build(&apps.apps, &tasks.tasks, &case.model_config(), &resolve);
    let render_config = case.render_config();
    let templates = Templates::load(&render_config).map_err(|err| format!("{err:#}"))?;
    render::render(&model, &templates, &render_config).map_err(|err| format!("{err:#}"))
}

/// The differences between what we render and what the case expects, as printable text.
fn compare(case: &Case, rendered: &Rendered) -> Vec<String> {
    let mut problems = Vec::new();
    if rendered.config != case.expected.config {
        problems.push(corpus::diff(
            &case.name,
            "haproxy.cfg",
            &case.expected.config,
            &rendered.config,
        ));
    }
    let ours: std::collections::BTreeMap<&str, &str> = rendered
        .maps
        .iter()
        .map(|map| (map.file_name.as_str(), map.content.as_str()))
        .collect();
    for (file, expected) in &case.expected.maps {
        match ours.get(file.as_str()) {
            Some(actual) if actual == expected => {}
            Some(actual) => problems.push(corpus::diff(&case.name, file, expected, actual)),
            None => problems.push(format!("{}: {file} expected but not rendered", case.name)),
        }
    }
    for file in ours.keys() {
        if !case.expected.maps.contains_key(*file) {
            problems.push(format!("{}: {file} rendered but not expected", case.name));
        }
    }
    problems
}

#[test]
fn every_corpus_case_renders_byte_identical() {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        eprintln!("note: UPDATE_EXPECT is ignored here: the shared corpus is never rewritten");
    }
    let cases = corpus::load_cases();
    if cases.is_empty() {
        eprintln!("note: no compatibility corpus at ../shared/compat/cases; skipping");
        return;
    }
    let mut failing = Vec::new();
    for case in &cases {
        let problems = match render_case(case) {
            Ok(rendered) => compare(case, &rendered),
            Err(err) => vec![format!("{}: render failed: {err}", case.name)],
        };
        if !problems.is_empty() {
            eprintln!("=== case {} ({})", case.name, case.about);
            for problem in &problems {
                eprintln!("{problem}");
            }
            failing.push(case.name.clone());
        }
    }
    assert!(
        failing.is_empty(),
        "{} of {} corpus cases differ: {}",
        failing.len(),
        cases.len(),
        failing.join(", ")
    );
}
