//! Loading the marathon-lb compatibility corpus (`tests/compat/cases`, the in-repository copy of
//! the team's `../shared/compat`): each case's state, flags, environment, templates and host
//! table, and the files marathon-lb (or, where it refuses the input, this project) writes for
//! it. The one loader every corpus test uses; it never writes into the corpus, and a corpus
//! that is missing or empty is a failure, never a skip.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use haproxy_marathon_sync::config::{
    ModelConfig, RenderConfig, DEFAULT_HAPROXY_CONFIG, DEFAULT_MAX_SERV_PORT_IP_PER_TASK,
    DEFAULT_MIN_SERV_PORT_IP_PER_TASK, DEFAULT_SSL_CERT,
};

/// The corpus in this repository (`tests/compat`, with its README and INDEX).
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

/// The team's shared corpus the in-repository copy is taken from, when this checkout sits
/// beside it.
pub fn shared_corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/compat")
}

/// The directory of cases; panics when it is missing, so no corpus test can pass without data.
pub fn cases_dir() -> PathBuf {
    let dir = corpus_dir().join("cases");
    assert!(
        dir.is_dir(),
        "the compatibility corpus is missing: {} is not a directory",
        dir.display()
    );
    dir
}

/// Fewer cases than this means the corpus was cut short, not that there is nothing to check.
pub const MIN_CASES: usize = 50;

/// Every case directory, sorted by name, so cases added later are picked up. Panics when the
/// corpus is missing or holds fewer than [`MIN_CASES`] cases.
pub fn load_cases() -> Vec<Case> {
    let dir = cases_dir();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("apps.json").is_file())
        .collect();
    names.sort();
    assert!(
        names.len() >= MIN_CASES,
        "only {} cases in {} (expected at least {MIN_CASES})",
        names.len(),
        dir.display()
    );
    names.iter().map(|path| Case::load(path)).collect()
}

/// One case by name; panics when it is not in the corpus.
pub fn case_dir(name: &str) -> PathBuf {
    let dir = cases_dir().join(name);
    assert!(dir.is_dir(), "corpus case {} is missing", dir.display());
    dir
}

/// marathon-lb's command-line flags that change the output (others are accepted and ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub groups: Vec<String>,
    pub haproxy_map: bool,
    pub haproxy_config: Option<String>,
    pub ssl_certs: Option<String>,
    pub dont_bind_http_https: bool,
    pub group_https_by_vhost: bool,
    pub strict_mode: bool,
    pub health_check: bool,
    pub min_serv_port_ip_per_task: Option<u32>,
    pub max_serv_port_ip_per_task: Option<u32>,
}

impl Flags {
    pub fn parse(args: &[String]) -> Result<Flags, String> {
        let mut flags = Flags::default();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
                _ => (arg.as_str(), None),
            };
            let mut value = |name: &str| -> Result<String, String> {
                inline
                    .clone()
                    .or_else(|| args.next().cloned())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            let number = |text: String, name: &str| -> Result<u32, String> {
                text.parse()
                    .map_err(|_| format!("{name}: not a number: {text:?}"))
            };
            match name {
                "--group" => flags.groups.push(value(name)?),
                "--haproxy-map" => flags.haproxy_map = true,
                "--haproxy-config" => flags.haproxy_config = Some(value(name)?),
                "--ssl-certs" => flags.ssl_certs = Some(value(name)?),
                "--dont-bind-http-https" => flags.dont_bind_http_https = true,
                "--group-https-by-vhost" => flags.group_https_by_vhost = true,
                "--strict-mode" => flags.strict_mode = true,
                "--health-check" | "-H" => flags.health_check = true,
                "--min-serv-port-ip-per-task" => {
                    flags.min_serv_port_ip_per_task = Some(number(value(name)?, name)?)
                }
                "--max-serv-port-ip-per-task" => {
                    flags.max_serv_port_ip_per_task = Some(number(value(name)?, name)?)
                }
                // Flags that take a value but do not change the output.
                "--marathon"
                | "-m"
                | "--command"
                | "-c"
                | "--auth-credentials"
                | "--marathon-auth-credential-file"
                | "--syslog-socket"
                | "--log-format"
                | "--log-level"
                | "--marathon-ca-cert"
                | "--reload-interval"
                | "--max-reload-retries"
                | "--listening"
                | "--sse" => {
                    if inline.is_none() && !matches!(name, "--sse") {
                        args.next();
                    }
                }
                other => return Err(format!("unknown marathon-lb flag {other:?}")),
            }
        }
        Ok(flags)
    }
}

/// Splits one line the way a POSIX shell splits words: whitespace separates, single quotes are
/// literal, double quotes allow `\"` `\\` `\$` `` \` `` escapes, a backslash outside quotes
/// escapes the next character.
pub fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated ' in {line:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(format!("unterminated \" in {line:?}")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(format!("unterminated \" in {line:?}")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err(format!("trailing backslash in {line:?}")),
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// What a case expects.
#[derive(Debug, Clone)]
pub struct Expected {
    /// `expected/` or, where marathon-lb refuses the input, `expected/ours/`.
    pub dir: PathBuf,
    pub config: String,
    /// Map files present in the expected directory, by file name.
    pub maps: BTreeMap<String, String>,
    /// marathon-lb's `expected/error` line, where it refuses the input.
    pub marathon_lb_error: Option<String>,
}

/// One corpus case, loaded.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub about: String,
    pub args: Vec<String>,
    pub flags: Flags,
    /// `KEY=VALUE` lines of `env`, verbatim, in file order.
    pub env: Vec<(String, String)>,
    pub templates_dir: Option<PathBuf>,
    /// Host name → address, from `hosts`.
    pub hosts: HashMap<String, IpAddr>,
    pub apps_json: String,
    pub tasks_json: String,
    pub expected: Expected,
}

impl Case {
    pub fn load(dir: &Path) -> Case {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        };
        let read_optional = |file: &str| std::fs::read_to_string(dir.join(file)).ok();
        let args_line = read("args");
        let args =
            shell_words(args_line.trim()).unwrap_or_else(|err| panic!("case {name}: args: {err}"));
        let flags = Flags::parse(&args).unwrap_or_else(|err| panic!("case {name}: args: {err}"));
        let env = read_optional("env")
            .map(|text| parse_env(&text))
            .unwrap_or_default();
        let hosts = read_optional("hosts")
            .map(|text| parse_hosts(&text))
            .unwrap_or_default();
        let templates_dir = Some(dir.join("templates")).filter(|path| path.is_dir());

        let error_file = dir.join("expected/error");
        let marathon_lb_error = std::fs::read_to_string(&error_file)
            .ok()
            .map(|text| text.trim().to_string());
        let expected_dir = if marathon_lb_error.is_some() {
            dir.join("expected/ours")
        } else {
            dir.join("expected")
        };
        let config_path = expected_dir.join("haproxy.cfg");
        let config = std::fs::read_to_string(&config_path)
            .unwrap_or_else(|err| panic!("case {name}: {}: {err}", config_path.display()));
        let maps = ["domain2backend.map", "app2backend.map"]
            .iter()
            .filter_map(|file| {
                std::fs::read_to_string(expected_dir.join(file))
                    .ok()
                    .map(|text| (file.to_string(), text))
            })
            .collect();

        Case {
            about: read_optional("about")
                .unwrap_or_default()
                .trim()
                .to_string(),
            args,
            flags,
            env,
            templates_dir,
            hosts,
            apps_json: read("apps.json"),
            tasks_json: read("tasks.json"),
            expected: Expected {
                dir: expected_dir,
                config,
                maps,
                marathon_lb_error,
            },
            name,
            dir: dir.to_path_buf(),
        }
    }

    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The haproxy.cfg path marathon-lb was given (map paths in the config follow its directory).
    pub fn haproxy_config(&self) -> PathBuf {
        PathBuf::from(
            self.flags
                .haproxy_config
                .as_deref()
                .unwrap_or(DEFAULT_HAPROXY_CONFIG),
        )
    }

    pub fn model_config(&self) -> ModelConfig {
        ModelConfig {
            strict_mode: self.flags.strict_mode,
            health_check: self.flags.health_check,
            min_serv_port_ip_per_task: self
                .flags
                .min_serv_port_ip_per_task
                .unwrap_or(DEFAULT_MIN_SERV_PORT_IP_PER_TASK),
            max_serv_port_ip_per_task: self
                .flags
                .max_serv_port_ip_per_task
                .unwrap_or(DEFAULT_MAX_SERV_PORT_IP_PER_TASK),
            framework_name: self.env_var("FRAMEWORK_NAME").map(str::to_string),
            protect_shared_listeners: false,
        }
    }

    pub fn render_config(&self) -> RenderConfig {
        let template_env = self
            .env
            .iter()
            .filter(|(key, _)| {
                key.starts_with("HAPROXY_") && key != "HAPROXY_GLOBAL_DEFAULT_OPTIONS"
            })
            .cloned()
            .collect();
        RenderConfig {
            groups: self.flags.groups.clone(),
            templates_dir: self.templates_dir.clone(),
            template_env,
            global_default_options: self
                .env_var("HAPROXY_GLOBAL_DEFAULT_OPTIONS")
                .map(str::to_string),
            ssl_certs: self
                .flags
                .ssl_certs
                .as_deref()
                .unwrap_or(DEFAULT_SSL_CERT)
                .split(',')
                .map(str::to_string)
                .collect(),
            bind_http_https: !self.flags.dont_bind_http_https,
            group_https_by_vhost: self.flags.group_https_by_vhost,
            haproxy_map: self.flags.haproxy_map,
            haproxy_config: self.haproxy_config(),
            label_templates: true,
        }
    }

    /// Name resolution as the corpus defines it: a dotted quad is itself, a name resolves only
    /// through the case's `hosts` file.
    pub fn resolve(&self, host: &str) -> Option<IpAddr> {
        if let Ok(v4) = host.parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
        self.hosts.get(host).copied()
    }
}

/// `KEY=VALUE` per line, value verbatim; `#` lines and blank lines ignored.
pub fn parse_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_string(), value.to_string()))
        .collect()
}

/// hosts(5): `IP name [name...]`, `#` comments.
pub fn parse_hosts(text: &str) -> HashMap<String, IpAddr> {
    let mut hosts = HashMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next().and_then(|ip| ip.parse::<IpAddr>().ok()) else {
            continue;
        };
        for name in fields {
            hosts.entry(name.to_string()).or_insert(ip);
        }
    }
    hosts
}

/// What differs between the files produced for `case` (`config`, `None` when there was none,
/// and map files by name) and the case's expected files, as printable text.
pub fn differences(
    case: &Case,
    config: Option<&str>,
    maps: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    match config {
        Some(config) if config == case.expected.config => {}
        Some(config) => problems.push(diff(
            &case.name,
            "haproxy.cfg",
            &case.expected.config,
            config,
        )),
        None => problems.push(format!("{}: no haproxy.cfg produced", case.name)),
    }
    let files: std::collections::BTreeSet<&String> =
        case.expected.maps.keys().chain(maps.keys()).collect();
    for file in files {
        match (case.expected.maps.get(file), maps.get(file)) {
            (Some(expected), Some(actual)) if expected == actual => {}
            (Some(expected), Some(actual)) => {
                problems.push(diff(&case.name, file, expected, actual))
            }
            (Some(_), None) => {
                problems.push(format!("{}: {file} expected but not produced", case.name))
            }
            (None, _) => problems.push(format!("{}: {file} produced but not expected", case.name)),
        }
    }
    problems
}

/// A unified diff of expected → actual, labelled with the case and file.
pub fn diff(case: &str, file: &str, expected: &str, actual: &str) -> String {
    let diff = similar::TextDiff::from_lines(expected, actual);
    format!(
        "{}",
        diff.unified_diff().context_radius(3).header(
            &format!("{case}/expected/{file}"),
            &format!("{case}/ours/{file}")
        )
    )
}
