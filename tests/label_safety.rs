//! Property test: whatever values an app's semantic labels hold, the rendered configuration has
//! only the sections and line kinds our templates allow — no label can add a line. Values are
//! drawn from a seeded generator (the seed is printed, `LABEL_SAFETY_SEED` replays one) mixing
//! plausible values with newlines, control characters and injected directives.

use std::collections::BTreeSet;

use haproxy_marathon_sync::config::{Config, MarathonSource};
use haproxy_marathon_sync::fetch::api::{AppList, TaskList};
use haproxy_marathon_sync::model::labels::{LabelKind, LABELS};
use haproxy_marathon_sync::model::{self, Model};
use haproxy_marathon_sync::render::{self, Templates, TEMPLATES};

/// xorshift64*: small, seedable, good enough to pick test values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PLAUSIBLE: &[&str] = &[
    "web.example.com",
    "a.example.com,b.example.com",
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
    "Realm:user:$6$salt$hash",
    "/etc/ssl/a.pem",
    "::",
    "external",
    "",
];

const HOSTILE: &[&str] = &[
    "\n  server evil 203.0.113.9:80",
    "\r\nbackend evil\n  server evil 203.0.113.9:80",
    "x\nlisten evil\n  bind :1",
    "web.example.com\n",
    "\u{0}",
    "\t",
    "a b",
    "http\nmode tcp",
    "Realm:user:pw\nuserlist evil",
    "{backend}",
    "\u{85}next-line",
    "évil.example.com",
];

fn random_value(rng: &mut Rng) -> String {
    let pool = if rng.below(3) == 0 {
        HOSTILE
    } else {
        PLAUSIBLE
    };
    let mut value = rng.pick(pool).to_string();
    if rng.below(4) == 0 {
        value.push_str(rng.pick(HOSTILE));
    }
    value
}

/// One host-networking app with random semantic labels on port 0 (and sometimes port 1).
fn random_app(rng: &mut Rng, index: usize) -> (String, String) {
    let semantic: Vec<&str> = LABELS
        .iter()
        .filter(|label| label.kind != LabelKind::Template)
        .map(|label| label.name)
        .collect();
    let mut labels = vec![format!(r#""HAPROXY_GROUP":"external""#)];
    for _ in 0..1 + rng.below(6) {
        let name = rng.pick(&semantic);
        let port = rng.below(2);
        labels.push(format!(
            "{}:{}",
            serde_json::to_string(&format!("HAPROXY_{port}_{name}")).unwrap(),
            serde_json::to_string(&random_value(rng)).unwrap()
        ));
    }
    let id = format!("/app{index}");
    let app = format!(
        r#"{{"id":"{id}","labels":{{{}}},"portDefinitions":[{{"port":{}}},{{"port":{}}}],"healthChecks":[]}}"#,
        labels.join(","),
        11000 + index * 2,
        11001 + index * 2
    );
    let task = format!(
        r#"{{"id":"t{index}","appId":"{id}","host":"10.0.0.{}","ports":[{},{}],"state":"TASK_RUNNING"}}"#,
        1 + index,
        31000 + index,
        32000 + index
    );
    (app, task)
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

fn render(model: &Model, config: &Config) -> String {
    let templates = Templates::load(&config.render).unwrap();
    render::render(model, &templates, &config.render)
        .unwrap()
        .config
}

#[test]
fn no_semantic_label_value_adds_a_line_or_a_section() {
    let seed: u64 = std::env::var("LABEL_SAFETY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_1AB5);
    eprintln!("label safety seed: {seed} (replay with LABEL_SAFETY_SEED={seed})");
    let mut rng = Rng(seed);
    let mut config = Config::new(
        vec![MarathonSource::Snapshot("unused".into())],
        "/etc/haproxy/haproxy.cfg".into(),
    );
    let allowed = allowed_line_kinds(&config);

    for round in 0..300 {
        config.render.haproxy_map = rng.below(2) == 0;
        config.render.group_https_by_vhost = rng.below(3) == 0;
        let (apps, tasks): (Vec<String>, Vec<String>) = (0..1 + rng.below(4))
            .map(|i| random_app(&mut rng, i))
            .unzip();
        let apps: AppList =
            serde_json::from_str(&format!(r#"{{"apps":[{}]}}"#, apps.join(","))).unwrap();
        let tasks: TaskList =
            serde_json::from_str(&format!(r#"{{"tasks":[{}]}}"#, tasks.join(","))).unwrap();
        let (model, warnings) =
            model::build(&apps.apps, &tasks.tasks, &config.model, &|_: &str| None);
        let text = render(&model, &config);

        for line in text.lines() {
            let Some(kind) = line.split_whitespace().next() else {
                continue;
            };
            assert!(
                allowed.contains(kind),
                "round {round} (seed {seed}): line kind {kind:?} is not one our templates make: {line:?}\n{text}"
            );
            assert!(
                !line.contains("evil"),
                "round {round} (seed {seed}): injected text rendered: {line:?}"
            );
        }
        for warning in &warnings {
            assert!(
                warning.app_id.starts_with("/app"),
                "warning names the app: {warning}"
            );
        }
        let refused_labels = warnings.iter().filter(|w| w.label.is_some()).count();
        let hostile_sent = apps
            .apps
            .iter()
            .flat_map(|app| app.labels.values())
            .any(|v| v.chars().any(char::is_control));
        assert!(
            !hostile_sent || refused_labels > 0,
            "round {round}: a control character went unremarked"
        );
    }
}
