//! The marathon-lb compatibility corpus at library level (no HTTP, no files written): every case
//! in `tests/compat/cases` goes through parse → `model::build` → `Templates::load` → `render`
//! and must match the expected files byte for byte. One assertion at the end lists every
//! failing case, after a readable diff for each. The corpus is never rewritten. Also here: the
//! in-repository copy equals the team's `../shared/compat` when that is present, and the
//! corpus loader's own tests (kept in this one file, not compiled into every test binary).

mod support {
    pub mod corpus;
}

use haproxy_marathon_sync::marathon::{AppList, TaskList};
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
    let maps = rendered
        .maps
        .iter()
        .map(|map| (map.file_name.clone(), map.content.clone()))
        .collect();
    corpus::differences(case, Some(&rendered.config), &maps)
}

#[test]
fn every_corpus_case_renders_byte_identical() {
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        eprintln!("note: UPDATE_EXPECT is ignored here: the corpus is never rewritten");
    }
    let cases = corpus::load_cases();
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

/// The four sections marathon-lb's text is handed in for; our defaults replace them.
const MODERN_SECTIONS: [&str; 4] = [
    "HAPROXY_HEAD",
    "HAPROXY_BACKEND_HSTS_OPTIONS",
    "HAPROXY_HTTP_BACKEND_PROXYPASS_GLUE",
    "HAPROXY_HTTP_BACKEND_REVPROXY_GLUE",
];

/// The HAProxy the checks run; missing, the test fails (scripts/test installs it).
fn haproxy_binary() -> std::path::PathBuf {
    ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|path| path.is_file())
        .expect("haproxy is not installed (scripts/test installs it)")
}

/// A throwaway self-signed certificate and key in one PEM; fails the test without `openssl`.
fn self_signed_pem(dir: &std::path::Path) -> std::path::PathBuf {
    let key = dir.join("key.pem");
    let cert = dir.join("cert.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running openssl (scripts/test installs it)");
    assert!(status.success(), "openssl req -x509 failed: {status}");
    let pem = dir.join("test.pem");
    let joined = std::fs::read_to_string(&cert).unwrap() + &std::fs::read_to_string(&key).unwrap();
    std::fs::write(&pem, joined).unwrap();
    pem
}

/// Renders the case with our defaults for the four modern sections (the case's other template
/// files and environment still apply), every certificate pointed at `pem`, into `dir`.
fn render_with_our_defaults(
    case: &Case,
    dir: &std::path::Path,
    pem: &std::path::Path,
) -> Result<std::path::PathBuf, String> {
    let apps: AppList =
        serde_json::from_str(&case.apps_json).map_err(|err| format!("apps.json: {err}"))?;
    let tasks: TaskList =
        serde_json::from_str(&case.tasks_json).map_err(|err| format!("tasks.json: {err}"))?;
    let resolve = |host: &str| case.resolve(host);
    let (mut model, _warnings) =
        model::build(&apps.apps, &tasks.tasks, &case.model_config(), &resolve);
    // Certificate and CA files named by labels do not exist here: point them at the test PEM.
    for service in &mut model.services {
        let extras = service.extras_mut();
        if extras.ssl_cert.is_some() {
            extras.ssl_cert = Some(pem.display().to_string());
        }
        if let Some(options) = &mut extras.bind_options {
            *options = options
                .split(' ')
                .map(|word| {
                    if word.ends_with(".pem") {
                        pem.to_str().unwrap()
                    } else {
                        word
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
        }
    }
    let templates_dir = dir.join("templates");
    std::fs::create_dir_all(&templates_dir).map_err(|err| err.to_string())?;
    if let Some(case_templates) = &case.templates_dir {
        for entry in std::fs::read_dir(case_templates).map_err(|err| err.to_string())? {
            let entry = entry.map_err(|err| err.to_string())?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !MODERN_SECTIONS.contains(&name.as_str()) {
                std::fs::copy(entry.path(), templates_dir.join(&name))
                    .map_err(|err| err.to_string())?;
            }
        }
    }
    let mut render_config = case.render_config();
    render_config.templates_dir = Some(templates_dir);
    render_config
        .template_env
        .retain(|key, _| !MODERN_SECTIONS.contains(&key.as_str()));
    render_config.ssl_certs = vec![pem.display().to_string()];
    let config_path = dir.join("haproxy.cfg");
    render_config.haproxy_config = config_path.clone();
    let templates = Templates::load(&render_config).map_err(|err| format!("{err:#}"))?;
    let rendered =
        render::render(&model, &templates, &render_config).map_err(|err| format!("{err:#}"))?;
    std::fs::write(&config_path, &rendered.config).map_err(|err| err.to_string())?;
    for map in &rendered.maps {
        std::fs::write(dir.join(&map.file_name), &map.content).map_err(|err| err.to_string())?;
    }
    Ok(config_path)
}

/// Corpus states HAProxy rejects whatever the four sections say, because of the input itself;
/// marathon-lb's own output for them is rejected for the same reason. Each must still fail, so
/// this list cannot go stale.
const INVALID_FOR_HAPROXY: [(&str, &str); 2] = [
    (
        "balance-and-mode",
        "HAPROXY_0_MODE=TCP on a vhost app: marathon-lb routes the http frontends to a tcp backend",
    ),
    (
        "templates-dir-backend",
        "the case's HAPROXY_BACKEND_SERVER_OPTIONS names a `resolvers dns` section no head defines",
    ),
];

#[test]
fn our_defaults_render_every_corpus_state_into_a_config_haproxy_accepts() {
    let cases = corpus::load_cases();
    let haproxy = haproxy_binary();
    let scratch = tempfile::tempdir().unwrap();
    let pem = self_signed_pem(scratch.path());
    let mut failing = Vec::new();
    for case in &cases {
        let dir = scratch.path().join(&case.name);
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = match render_with_our_defaults(case, &dir, &pem) {
            Ok(path) => path,
            Err(err) => {
                eprintln!("=== case {}: render failed: {err}", case.name);
                failing.push(case.name.clone());
                continue;
            }
        };
        let output = std::process::Command::new(&haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&config_path)
            .output()
            .expect("running haproxy -c");
        let known_invalid = INVALID_FOR_HAPROXY
            .iter()
            .find(|(name, _)| *name == case.name);
        if let Some((_, why)) = known_invalid {
            if output.status.success() {
                eprintln!(
                    "=== case {}: listed as invalid ({why}) but haproxy -c accepts it",
                    case.name
                );
                failing.push(case.name.clone());
            }
            continue;
        }
        if !output.status.success() {
            eprintln!(
                "=== case {}: haproxy -c rejected our config ({}):\n{}{}",
                case.name,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            failing.push(case.name.clone());
        }
    }
    assert!(
        failing.is_empty(),
        "haproxy -c rejected our rendering of {} of {} corpus states: {}",
        failing.len(),
        cases.len(),
        failing.join(", ")
    );
}

/// Every file under `root`, relative to it, with its bytes.
fn tree(root: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                files.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    files
}

/// The copy in `tests/compat` is what `scripts/test` checks on a fresh clone; where the team's
/// `../shared/compat` is beside the checkout, the two must not drift apart silently.
#[test]
fn the_in_repository_corpus_equals_the_shared_one() {
    let ours = tree(&corpus::corpus_dir());
    assert!(
        ours.len() > 100,
        "tests/compat holds only {} files",
        ours.len()
    );
    let shared_dir = corpus::shared_corpus_dir();
    if !shared_dir.is_dir() {
        eprintln!(
            "note: {} is absent: nothing to compare the in-repository corpus with",
            shared_dir.display()
        );
        return;
    }
    let shared = tree(&shared_dir);
    let mut problems = Vec::new();
    for (path, bytes) in &shared {
        match ours.get(path) {
            None => problems.push(format!("missing from tests/compat: {}", path.display())),
            Some(ours) if ours != bytes => {
                problems.push(format!("differs from ../shared/compat: {}", path.display()))
            }
            Some(_) => {}
        }
    }
    for path in ours.keys().filter(|path| !shared.contains_key(*path)) {
        problems.push(format!("not in ../shared/compat: {}", path.display()));
    }
    assert!(
        problems.is_empty(),
        "tests/compat and ../shared/compat differ (copy the shared corpus in again):\n{}",
        problems.join("\n")
    );
}

#[test]
fn shell_words_follow_posix_quoting() {
    let words =
        corpus::shell_words(r#"--group '*' --ssl-certs "/a b.pem,/c" plain\ word"#).unwrap();
    assert_eq!(
        words,
        ["--group", "*", "--ssl-certs", "/a b.pem,/c", "plain word"]
    );
    assert!(corpus::shell_words("'open").is_err());
}

#[test]
fn flags_parse_marathon_lb_command_lines() {
    let args = corpus::shell_words(
        "--group external --group '*' -H --haproxy-map --ssl-certs=/x.pem -m http://m:8080",
    )
    .unwrap();
    let flags = corpus::Flags::parse(&args).unwrap();
    assert_eq!(flags.groups, ["external", "*"]);
    assert!(flags.health_check && flags.haproxy_map);
    assert_eq!(flags.ssl_certs.as_deref(), Some("/x.pem"));
    assert!(corpus::Flags::parse(&["--bogus".to_string()]).is_err());
}
