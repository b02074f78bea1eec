//! Property test: whatever an app's semantic labels and Marathon fields hold, the rendered
//! configuration has only the sections and line kinds our templates make, nothing a hostile
//! value carried reaches it, and every app that sent one is named in a warning that stays on
//! one line. Every field that reaches the configuration is drawn: app ids,
//! `HAPROXY_DEPLOYMENT_GROUP`, every semantic label, task hosts, IP-per-task addresses, health
//! check paths and protocols (and commands, which must never reach it). Values come from a
//! seeded generator (the seed is printed, `LABEL_SAFETY_SEED` replays one) mixing plausible
//! values with newlines, CR, NUL, Unicode line separators, environment references, sample
//! fetches, conditional blocks, section keywords and very long values.

mod support;

use support::rng::Rng;

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use haproxy_marathon_sync::config::{Config, MarathonSource};
use haproxy_marathon_sync::marathon::{AppList, TaskList};
use haproxy_marathon_sync::model::labels::{LabelKind, LABELS};
use haproxy_marathon_sync::model::{self, Model, Warning};
use haproxy_marathon_sync::render::{self, Templates, TEMPLATES};

/// Every injected payload carries this marker, so none of it may appear in the output.
const MARKER: &str = "evil";

const PLAUSIBLE: &[&str] = &[
    "web.example.com",
    "a.example.com,b.example.com",
    "a.example.com, b.example.com",
    "/api",
    "-i /x /y",
    "true",
    "false",
    "http",
    "TCP",
    "leastconn",
    "10.0.0.0/8 127.0.0.1",
    "10050",
    "5",
    "99999999999999999999",
    "Realm:user:$6$salt$hash",
    "/etc/ssl/a.pem",
    "::",
    "external",
    "",
];

/// Each is outside every field's grammar (a control character, a line separator, an
/// environment reference or a sample fetch), whatever it is appended to.
const HOSTILE: &[&str] = &[
    "\n  server evil 203.0.113.9:80",
    "\r\nbackend evil\n  server evil 203.0.113.9:80",
    "x\nlisten evil\n  bind :1",
    "\nglobal\n  master-worker\n\nprogram evil\n  command touch /tmp/evil",
    "\n.if defined(EVIL)\n  setenv EVIL 1\n.endif",
    "\nfrontend evil\n  bind :1",
    "web.example.com\n",
    "\r",
    "\u{0}evil",
    "\tevil",
    "a\u{2028}evil",
    "a\u{2029}evil",
    "\u{85}evil-next-line",
    "${EVIL}",
    "\"$EVIL\"",
    "%[env(EVIL)]",
    "/x%[env(EVIL)]",
];

fn random_value(rng: &mut Rng) -> (String, bool) {
    if rng.one_in(25) {
        // Very long: plausible and kept whole, or hostile at its very end.
        let long = "a".repeat(20_000 + rng.below(20_000));
        return match rng.one_in(2) {
            true => (long, false),
            false => (long + rng.pick(HOSTILE), true),
        };
    }
    let hostile = rng.one_in(3);
    let mut value = if hostile {
        rng.pick(HOSTILE).to_string()
    } else {
        rng.pick(PLAUSIBLE).to_string()
    };
    let appended = rng.one_in(4);
    if appended {
        value.push_str(rng.pick(HOSTILE));
    }
    (value, hostile || appended)
}

/// A Marathon field: plausible, or (one time in `odds`) the plausible value with a payload.
fn field(rng: &mut Rng, plausible: &str, odds: usize) -> (String, bool) {
    if rng.one_in(odds) {
        (format!("{plausible}{}", rng.pick(HOSTILE)), true)
    } else {
        (plausible.to_string(), false)
    }
}

/// One generated app and what hostile values it carries.
struct Generated {
    app: String,
    tasks: Vec<String>,
    id: String,
    /// A hostile value in a field that must name the app (anything but the command).
    hostile: bool,
    /// Hostile semantic labels, when the app id and deployment group are fine (so the labels
    /// are read and each must be named).
    hostile_labels: Vec<String>,
}

fn random_app(rng: &mut Rng, index: usize) -> Generated {
    let semantic: Vec<&str> = LABELS
        .iter()
        .filter(|label| label.kind != LabelKind::Template)
        .map(|label| label.name)
        .collect();
    let (id, hostile_id) = field(rng, &format!("/app{index}"), 10);
    let mut labels = BTreeMap::new();
    labels.insert("HAPROXY_GROUP".to_string(), "external".to_string());
    let mut hostile_group = false;
    if rng.one_in(5) {
        let (group, hostile) = field(rng, &format!("group{index}"), 2);
        labels.insert("HAPROXY_DEPLOYMENT_GROUP".to_string(), group);
        hostile_group = hostile;
    }
    let mut hostile_labels = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let name = format!("HAPROXY_{}_{}", rng.below(2), rng.pick(&semantic));
        let (value, hostile) = random_value(rng);
        if labels.contains_key(&name) {
            continue;
        }
        if hostile {
            hostile_labels.push(name.clone());
        }
        labels.insert(name, value);
    }

    let ip_per_task = rng.one_in(4);
    let mut hostile_check = false;
    let health_checks = if rng.one_in(2) {
        let (path, hostile_path) = field(rng, "/health", 4);
        let protocol = rng.pick(&["HTTP", "TCP"]);
        let (protocol, hostile_protocol) = field(rng, protocol, 6);
        hostile_check = hostile_path || hostile_protocol;
        let (command, _) = field(rng, "curl -f http://$HOST:$PORT0/", 2);
        serde_json::json!([{"protocol": protocol, "portIndex": 0, "path": path,
            "command": {"value": command}}])
    } else {
        serde_json::json!([])
    };
    let mut app = serde_json::json!({
        "id": id,
        "labels": labels,
        "portDefinitions": [{"port": 11000 + index * 2}, {"port": 11001 + index * 2}],
        "healthChecks": health_checks,
    });
    if ip_per_task {
        app["ipAddress"] =
            serde_json::json!({"discovery": {"ports": [{"number": 80}, {"number": 81}]}});
    }

    let mut hostile_task = false;
    let tasks = (0..1 + rng.below(2))
        .map(|n| {
            let (host, hostile_host) = field(rng, &format!("10.0.{index}.{n}"), 8);
            let (ip, hostile_ip) = field(rng, &format!("9.0.{index}.{n}"), 6);
            hostile_task |= hostile_host || (ip_per_task && hostile_ip);
            serde_json::json!({
                "id": format!("t{index}.{n}"),
                "appId": id,
                "host": host,
                "ports": [31000 + index, 32000 + index],
                "ipAddresses": [{"ipAddress": ip}],
                "state": "TASK_RUNNING",
            })
            .to_string()
        })
        .collect();
    let fields_fine = !hostile_id && !hostile_group;
    Generated {
        app: app.to_string(),
        tasks,
        id,
        hostile: hostile_id
            || hostile_group
            || !hostile_labels.is_empty()
            || hostile_task
            || hostile_check,
        hostile_labels: if fields_fine {
            hostile_labels
        } else {
            Vec::new()
        },
    }
}

/// Every first word a line of our default templates can start with, including the Jinja head
/// as it renders for an empty cluster.
fn allowed_line_kinds(config: &Config) -> BTreeSet<String> {
    let empty_cluster = render(&Model::default(), config);
    TEMPLATES
        .iter()
        .flat_map(|template| template.default_text.lines())
        .chain(empty_cluster.lines())
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| !word.starts_with('{'))
        .map(str::to_string)
        .collect()
}

/// The section keywords our templates open (unindented first words).
fn section_kinds(config: &Config) -> BTreeSet<String> {
    let empty_cluster = render(&Model::default(), config);
    TEMPLATES
        .iter()
        .flat_map(|template| template.default_text.lines())
        .chain(empty_cluster.lines())
        .filter(|line| !line.starts_with(char::is_whitespace))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| !word.starts_with('{'))
        .map(str::to_string)
        .collect()
}

fn render(model: &Model, config: &Config) -> String {
    let templates = Templates::load(&config.render).unwrap();
    render::render(model, &templates, &config.render)
        .unwrap()
        .config
}

fn breaks_a_line(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

#[test]
fn no_marathon_value_adds_a_line_a_section_or_an_expansion() {
    let mut rng = Rng::seeded("LABEL_SAFETY_SEED", 0x5EED_1AB5);
    let seed = rng.seed;
    let mut config = Config::new(
        vec![MarathonSource::Snapshot("unused".into())],
        "/etc/haproxy/haproxy.cfg".into(),
    );
    let allowed = allowed_line_kinds(&config);
    let sections = section_kinds(&config);
    let mut apps_named = 0;
    let mut labels_named = 0;

    for round in 0..300 {
        config.render.haproxy_map = rng.one_in(2);
        config.render.group_https_by_vhost = rng.one_in(3);
        let generated: Vec<Generated> = (0..1 + rng.below(4))
            .map(|i| random_app(&mut rng, i))
            .collect();
        let apps = generated.iter().map(|g| g.app.clone()).collect::<Vec<_>>();
        let tasks = generated
            .iter()
            .flat_map(|g| g.tasks.clone())
            .collect::<Vec<_>>();
        let apps: AppList =
            serde_json::from_str(&format!(r#"{{"apps":[{}]}}"#, apps.join(","))).unwrap();
        let tasks: TaskList =
            serde_json::from_str(&format!(r#"{{"tasks":[{}]}}"#, tasks.join(","))).unwrap();
        let (model, warnings) =
            model::build(&apps.apps, &tasks.tasks, &config.model, &|_: &str| None);
        let text = render(&model, &config);
        let context = format!("round {round} (seed {seed})");

        for line in text.lines() {
            assert!(
                !line.chars().any(breaks_a_line),
                "{context}: a line holds a line-breaking character: {line:?}"
            );
            assert!(
                !line.to_lowercase().contains(MARKER),
                "{context}: injected text rendered: {line:?}"
            );
            let Some(kind) = line.split_whitespace().next() else {
                continue;
            };
            assert!(
                allowed.contains(kind),
                "{context}: line kind {kind:?} is not one our templates make: {line:?}\n{text}"
            );
            if !line.starts_with(char::is_whitespace) {
                assert!(
                    sections.contains(kind),
                    "{context}: unindented line opens no section of ours: {line:?}"
                );
            }
        }
        for warning in &warnings {
            let shown = warning.to_string();
            assert!(
                !shown.chars().any(breaks_a_line) && shown.len() < 2_000,
                "{context}: a warning must be one bounded line: {shown:?}"
            );
        }
        for app in &generated {
            let named = |w: &&Warning| w.app_id == app.id;
            if app.hostile {
                assert!(
                    warnings.iter().any(|w| named(&w)),
                    "{context}: app {:?} sent a hostile value and is not named: {warnings:#?}",
                    app.id
                );
                apps_named += 1;
            }
            for label in &app.hostile_labels {
                assert!(
                    warnings
                        .iter()
                        .any(|w| named(&w) && w.label.as_deref() == Some(label)),
                    "{context}: label {label} of {:?} held a hostile value and is not named: \
                     {warnings:#?}",
                    app.id
                );
                labels_named += 1;
            }
        }
    }
    // The generator does reach every kind of check (the assertions above are not vacuous).
    assert!(
        apps_named > 100 && labels_named > 100,
        "{apps_named} {labels_named}"
    );
}
