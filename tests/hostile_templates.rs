//! Hostile template labels and templates, end to end through the binary with a stand-in
//! Marathon and a real HAProxy: a label that opens `global` or `program` sections or a stats
//! socket leaves only its own app out (named with label and keyword) and runs nothing; format
//! specs that would exhaust memory or time leave their app out; a `--templates` path that does
//! not exist fails the run before anything is written.

mod support;

use support::rng::Rng;

use std::fs;
use std::path::Path;
use std::time::Duration;

use support::backend::{http_get, Backend};
use support::haproxy::{assert_valid, free_port, wait_for, Haproxy};
use support::marathon::FakeMarathon;
use support::sync::{Run, Sync};
use support::workspace::Workspace;

/// Longest any one run of the binary may take before the test gives up on it.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Exit code of a template failure (`Exit::Template` in main.rs).
const EXIT_TEMPLATE: i32 = 4;

/// The binary in `workspace` (the shared head keeps HAProxy on 127.0.0.1, away from system
/// paths and within the open-file limit) with `templates` as `--templates`.
fn sync(workspace: &Workspace, marathon: &str, templates: &Path) -> Sync {
    workspace
        .bare(marathon)
        .group("external")
        .arg("--dont-bind-http-https")
        .templates(templates)
        .reload_command("true")
        .args(["--timeout", "5", "--command-timeout", "20"])
}

/// Runs the binary once (bounded by [`RUN_LIMIT`]; the child is killed by PID past it).
fn run(workspace: &Workspace, marathon: &str, templates: &Path, extra: &[&str]) -> Run {
    sync(workspace, marathon, templates)
        .args(extra)
        .run_within(RUN_LIMIT)
}

/// One host-networking app on `127.0.0.1:service_port` with one task on `task_port` and the
/// given extra labels.
fn app(id: &str, service_port: u16, task_port: u16, labels: &[(&str, &str)]) -> (String, String) {
    let mut all = serde_json::Map::new();
    all.insert("HAPROXY_GROUP".into(), "external".into());
    all.insert("HAPROXY_0_MODE".into(), "http".into());
    all.insert("HAPROXY_0_BIND_ADDR".into(), "127.0.0.1".into());
    for (name, value) in labels {
        all.insert((*name).into(), (*value).into());
    }
    let app = serde_json::json!({
        "id": id,
        "instances": 1,
        "labels": all,
        "networks": [{"mode": "host"}],
        "portDefinitions": [{"port": service_port, "protocol": "tcp"}],
        "healthChecks": [],
    });
    let task = serde_json::json!({
        "id": format!("{}.1", id.trim_start_matches('/')),
        "appId": id,
        "host": "127.0.0.1",
        "ports": [task_port],
        "state": "TASK_RUNNING",
    });
    (app.to_string(), task.to_string())
}

fn state(apps: &[(String, String)]) -> (String, String) {
    let (apps, tasks): (Vec<&str>, Vec<&str>) = apps
        .iter()
        .map(|(app, task)| (app.as_str(), task.as_str()))
        .unzip();
    (
        format!(r#"{{"apps":[{}]}}"#, apps.join(",")),
        format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")),
    )
}

/// The `program` payload a hostile label carries: it would create `marker` when run.
fn program_payload(marker: &Path) -> String {
    format!(
        "program pwn\n  command /usr/bin/touch {}\n",
        marker.display()
    )
}

/// Control: the payload is live. HAProxy in master-worker mode runs a `program` section, so
/// the hostile-label test below would see the marker if the label got through.
#[test]
fn the_program_payload_runs_when_haproxy_is_given_it() {
    let workspace = Workspace::new();
    let marker = workspace.path("pwned");
    let port = free_port();
    let config = workspace.path("control.cfg");
    fs::write(
        &config,
        format!(
            "global\n  maxconn 100\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  \
             timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n\nfrontend f\n  \
             bind 127.0.0.1:{port}\n\n{}",
            program_payload(&marker)
        ),
    )
    .unwrap();
    let _haproxy = Haproxy::start(&config, &workspace.path("control-run"), port);
    assert!(
        wait_for(Duration::from_secs(15), || marker.exists()),
        "the program section did not run; the hostile-label test would prove nothing"
    );
}

#[test]
fn a_label_leaving_its_section_leaves_only_its_app_out_and_runs_nothing() {
    let workspace = Workspace::new();
    let marker = workspace.path("pwned");
    let good_backend = Backend::start("good");
    let good_port = free_port();
    let head = "\nbackend {backend}\n  balance {balance}\n  mode {mode}\n";
    let with_global = format!(
        "{head}\nglobal\n  master-worker\n\n{}",
        program_payload(&marker)
    );
    let with_program = format!("{head}\n{}", program_payload(&marker));
    let with_stats = format!(
        "{head}  stats socket ipv4@127.0.0.1:{} level admin\n",
        free_port()
    );
    let apps = [
        app("/good", good_port, good_backend.port, &[]),
        app(
            "/evil-global",
            free_port(),
            free_port(),
            &[("HAPROXY_0_BACKEND_HEAD", &with_global)],
        ),
        app(
            "/evil-program",
            free_port(),
            free_port(),
            &[("HAPROXY_0_BACKEND_HEAD", &with_program)],
        ),
        app(
            "/evil-stats",
            free_port(),
            free_port(),
            &[("HAPROXY_0_BACKEND_HEAD", &with_stats)],
        ),
    ];
    let (apps, tasks) = state(&apps);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);
    // A typo'd template file is named, with the section it was probably meant for.
    fs::write(
        workspace.path("templates/HAPROXY_BACKEND_HAED"),
        "\nbackend {backend}\n",
    )
    .unwrap();

    let output = run(
        &workspace,
        &marathon.url(),
        &workspace.path("templates"),
        &[],
    );
    output.assert_exit(0);
    let stderr = output.stderr.clone();
    for (app, keyword) in [
        ("/evil-global", "`global`"),
        ("/evil-program", "`program`"),
        ("/evil-stats", "`stats`"),
    ] {
        let warned = stderr.lines().any(|line| {
            line.contains(app) && line.contains("HAPROXY_0_BACKEND_HEAD") && line.contains(keyword)
        });
        assert!(
            warned,
            "no warning naming {app}, its label and {keyword}:\n{stderr}"
        );
    }
    assert!(
        stderr.contains("HAPROXY_BACKEND_HAED") && stderr.contains("HAPROXY_BACKEND_HEAD?"),
        "{stderr}"
    );

    let config = fs::read_to_string(workspace.config()).unwrap();
    assert!(config.contains("backend good_"), "{config}");
    for refused in ["evil", "program", "master-worker", "stats socket", "touch"] {
        assert!(
            !config.contains(refused),
            "{refused:?} reached the config:\n{config}"
        );
    }
    assert_valid(&workspace.config());

    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), good_port);
    assert!(
        wait_for(
            Duration::from_secs(15),
            || matches!(http_get(good_port, "/"), Ok((200, body)) if body == "good")
        ),
        "the good app is not served"
    );
    let processes = haproxy.show_proc();
    assert!(!processes.contains("pwn"), "{processes}");
    assert!(!marker.exists(), "a program ran");
}

#[test]
fn huge_format_specs_leave_their_app_out_and_the_rest_renders() {
    let workspace = Workspace::new();
    let good_port = free_port();
    let apps = [
        app("/good", good_port, free_port(), &[]),
        app(
            "/wide",
            free_port(),
            free_port(),
            &[(
                "HAPROXY_0_BACKEND_HEAD",
                "\nbackend {backend:>99999999999}\n",
            )],
        ),
        app(
            "/grouped",
            free_port(),
            free_port(),
            &[(
                "HAPROXY_0_FRONTEND_HEAD",
                "\nfrontend {backend}\n  bind {bindAddr}:{servicePort:0150000,}\n",
            )],
        ),
    ];
    let (apps, tasks) = state(&apps);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);

    let output = run(
        &workspace,
        &marathon.url(),
        &workspace.path("templates"),
        &["--dry-run"],
    );
    output.assert_exit(0);
    let stderr = output.stderr.clone();
    for (app, label) in [("/wide", "BACKEND_HEAD"), ("/grouped", "FRONTEND_HEAD")] {
        let warned = stderr.lines().any(|line| {
            line.contains(app) && line.contains(label) && line.contains("above the limit of 1024")
        });
        assert!(warned, "no warning naming {app} and {label}:\n{stderr}");
    }
    let config = output.stdout.clone();
    assert!(config.contains("backend good_"), "{config}");
    assert!(
        !config.contains("wide_") && !config.contains("grouped_"),
        "{config}"
    );
}

#[test]
fn an_operator_template_with_a_huge_spec_fails_the_run_naming_it() {
    let workspace = Workspace::new();
    fs::write(
        workspace.path("templates/HAPROXY_BACKEND_HEAD"),
        "\nbackend {backend:>99999999999}\n",
    )
    .unwrap();
    let (apps, tasks) = state(&[app("/good", free_port(), free_port(), &[])]);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);
    fs::write(workspace.config(), "# live\n").unwrap();

    let output = run(
        &workspace,
        &marathon.url(),
        &workspace.path("templates"),
        &[],
    );
    output.assert_exit(EXIT_TEMPLATE);
    let stderr = output.stderr.clone();
    assert!(
        stderr.contains("HAPROXY_BACKEND_HEAD") && stderr.contains("above the limit of 1024"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(workspace.config()).unwrap(), "# live\n");
}

#[test]
fn a_templates_path_that_does_not_exist_fails_before_anything_is_written() {
    let workspace = Workspace::new();
    let (apps, tasks) = state(&[app("/good", free_port(), free_port(), &[])]);
    let marathon = FakeMarathon::start();
    marathon.set_state(apps, tasks);
    let live = "global\n  maxconn 10\n# the operator's own head\n";
    fs::write(workspace.config(), live).unwrap();

    let missing = Path::new("/does/not/exist");
    let output = run(&workspace, &marathon.url(), missing, &[]);
    output.assert_exit(EXIT_TEMPLATE);
    let stderr = output.stderr.clone();
    assert!(
        stderr.contains("/does/not/exist") && stderr.contains("does not exist"),
        "{stderr}"
    );
    assert_eq!(fs::read_to_string(workspace.config()).unwrap(), live);

    let not_a_dir = workspace.path("templates/HAPROXY_HEAD");
    let output = run(&workspace, &marathon.url(), &not_a_dir, &[]);
    output.assert_exit(EXIT_TEMPLATE);
    assert!(output.stderr.contains("is not a directory"));
    assert_eq!(fs::read_to_string(workspace.config()).unwrap(), live);
    let beside: Vec<String> = fs::read_dir(workspace.dir.path())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("haproxy.cfg") && name != "haproxy.cfg")
        .collect();
    // Only the run record (and the lock it is updated under) note the failed run.
    assert!(
        beside
            .iter()
            .all(|name| name.ends_with(".status") || name.ends_with(".lock")),
        "files written beside the config: {beside:?}"
    );
}

/// Lines a label may carry: directives of its own section.
const SAFE_LINES: &[&str] = &[
    "  timeout server 30s",
    "  http-request set-header X-Test yes",
    "  acl is_api path_beg /api",
    "  option forwardfor",
    "  # a comment",
    "",
    "  http-request deny if {{ src 10.0.0.1 }}",
    "  http-request set-header X-Port %[dst_port]",
];

/// Lines that try to leave the section, each carrying the word `pwn` so that any of it
/// reaching the output is seen.
const HOSTILE_LINES: &[&str] = &[
    "global\n  master-worker # pwn",
    "program pwn\n  command /usr/bin/touch /tmp/pwn",
    "  stats socket ipv4@0.0.0.0:9999 level admin # pwn",
    ".if defined(pwn)",
    "  .diag pwn",
    "  \\x67lobal pwn",
    "  \"program\" pwn",
    "  http-request return status 200 file /etc/pwn",
    "  http-request set-header X %[env(pwn)]",
    "  http-request set-header X \"${pwn}\"",
    "  http-request set-header X \"$pwn\"",
    "  server pwn unix@/var/run/docker.sock",
    "  bind /tmp/pwn.sock",
    "  timeout client 1s \\\nprogram pwn",
    "  lua-load /tmp/pwn.lua",
    "  setenv pwn 1",
    "listen pwn\n  bind 127.0.0.1:1",
    "peers pwn",
    "  user pwn",
    "\rresolvers pwn",
    "  http-request set-map(/etc/pwn) a b",
    "  option external-check # pwn",
    "backend pwn",
    "frontend pwn",
];

/// Template labels with their own section's opening, when they have one.
const LABELS: &[(&str, &str)] = &[
    (
        "BACKEND_HEAD",
        "\nbackend {backend}\n  balance {balance}\n  mode {mode}\n",
    ),
    (
        "FRONTEND_HEAD",
        "\nfrontend {backend}\n  bind {bindAddr}:{servicePort}\n  mode {mode}\n",
    ),
    ("BACKEND_HTTP_OPTIONS", ""),
    (
        "BACKEND_SERVER_OPTIONS",
        "  server {serverName} {host_ipv4}:{port}\n",
    ),
    ("FRONTEND_BACKEND_GLUE", "  default_backend {backend}\n"),
    ("HTTP_FRONTEND_APPID_ACL", ""),
    ("BACKEND_HSTS_OPTIONS", ""),
];

fn random_label(rng: &mut Rng) -> (String, String, bool) {
    let (name, opening) = LABELS[rng.below(LABELS.len())];
    let mut text = opening.to_string();
    let mut hostile = false;
    for _ in 0..1 + rng.below(4) {
        let line = if rng.below(3) == 0 {
            hostile = true;
            rng.pick(HOSTILE_LINES)
        } else {
            rng.pick(SAFE_LINES)
        };
        text += line;
        text.push('\n');
    }
    (format!("HAPROXY_0_{name}"), text, hostile)
}

/// Property: whatever lines template labels carry, the rendered configuration has no section
/// but its own frontends, backends and the head's, no directive that changes the process, and
/// no text of a refused line; an app whose labels are all safe is rendered. Seeded
/// (`HOSTILE_TEMPLATES_SEED` replays a seed).
#[test]
fn no_template_label_leaves_its_section() {
    use haproxy_marathon_sync::config::{Config, MarathonSource};
    use haproxy_marathon_sync::marathon::{AppList, TaskList};
    use haproxy_marathon_sync::model;
    use haproxy_marathon_sync::render::{self, BadTemplateLabels, Templates};
    use std::collections::HashSet;

    let mut rng = Rng::seeded("HOSTILE_TEMPLATES_SEED", 0x7E3A_91C5);
    let seed = rng.seed;
    let mut config = Config::new(
        vec![MarathonSource::Snapshot("unused".into())],
        "/etc/haproxy/haproxy.cfg".into(),
    );
    config.render.bind_http_https = false;
    let templates = Templates::load(&config.render).unwrap();
    let head = render::render(&model::Model::default(), &templates, &config.render)
        .unwrap()
        .config;
    let own_sections = ["frontend", "backend", "userlist"];
    let refused_first_words = [
        "global",
        "defaults",
        "listen",
        "program",
        "peers",
        "resolvers",
        "mailers",
        "ring",
        "cache",
        "http-errors",
        "log-forward",
        "master-worker",
        "setenv",
        "lua-load",
        "stats",
        "user",
        "chroot",
        "daemon",
        "command",
    ];

    for round in 0..300 {
        let mut entries = Vec::new();
        let mut clean_apps = Vec::new();
        for index in 0..1 + rng.below(4) {
            let id = format!("/app{index}");
            let mut labels: Vec<(String, String)> = Vec::new();
            let mut hostile = false;
            for _ in 0..1 + rng.below(2) {
                let (name, text, bad) = random_label(&mut rng);
                hostile |= bad;
                labels.retain(|(existing, _)| *existing != name);
                labels.push((name, text));
            }
            if !hostile {
                clean_apps.push(id.clone());
            }
            let labels: Vec<(&str, &str)> = labels
                .iter()
                .map(|(name, text)| (name.as_str(), text.as_str()))
                .collect();
            entries.push(app(
                &id,
                11000 + index as u16,
                31000 + index as u16,
                &labels,
            ));
        }
        let (apps, tasks) = state(&entries);
        let apps: AppList = serde_json::from_str(&apps).unwrap();
        let tasks: TaskList = serde_json::from_str(&tasks).unwrap();

        // As the run does: leave out the apps the render names, and render again.
        let mut left_out = HashSet::new();
        let text = loop {
            let (model, _) = model::build_without(
                &apps.apps,
                &tasks.tasks,
                &config.model,
                &|_: &str| None,
                &left_out,
            );
            match render::render(&model, &templates, &config.render) {
                Ok(rendered) => break rendered.config,
                Err(err) => {
                    let bad = err
                        .downcast_ref::<BadTemplateLabels>()
                        .unwrap_or_else(|| panic!("round {round}: {err:#}"));
                    let before = left_out.len();
                    left_out.extend(bad.0.iter().map(|bad| bad.app_id.clone()));
                    assert!(left_out.len() > before, "round {round}: no progress");
                }
            }
        };

        let context = format!("round {round} (seed {seed})");
        let body = text.strip_prefix(head.as_str()).unwrap_or_else(|| {
            panic!("{context}: the output does not start with the head:\n{text}")
        });
        assert!(
            !text.contains("pwn"),
            "{context}: refused text rendered:\n{text}"
        );
        for line in body.split(['\n', '\r']) {
            let Some(first) = line.split_whitespace().next() else {
                continue;
            };
            let first = first.trim_matches(['"', '\'']).to_ascii_lowercase();
            assert!(!first.starts_with('.'), "{context}: {line:?}\n{text}");
            assert!(
                !refused_first_words.contains(&first.as_str()),
                "{context}: {line:?}\n{text}"
            );
            if own_sections.contains(&first.as_str()) {
                assert!(line.contains("app"), "{context}: foreign section {line:?}");
            }
        }
        for clean in &clean_apps {
            let backend = format!("backend {}_", clean.trim_start_matches('/'));
            assert!(
                text.contains(&backend) && !left_out.contains(clean),
                "{context}: clean app {clean} missing:\n{text}"
            );
        }
    }
}
