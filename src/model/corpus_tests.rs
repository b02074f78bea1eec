//! Checks the model against the compatibility corpus (`tests/compat/cases`; a missing corpus
//! fails): every case builds without panicking, and the servers of each rendered backend in
//! marathon-lb's `expected/haproxy.cfg` are exactly the backends the model gives that service.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::Path;

use super::*;
use crate::config::ModelConfig;
use crate::marathon::{AppList, TaskList};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/compat/cases");

struct Case {
    name: String,
    apps: Vec<App>,
    tasks: Vec<Task>,
    config: ModelConfig,
    groups: Vec<String>,
    hosts: HashMap<String, IpAddr>,
    expected: Option<String>,
}

fn read_case(dir: &Path) -> Case {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let apps: AppList = serde_json::from_str(&read("apps.json").unwrap()).unwrap();
    let tasks: TaskList = serde_json::from_str(&read("tasks.json").unwrap()).unwrap();
    let args: Vec<String> = read("args")
        .unwrap_or_default()
        .split_whitespace()
        .map(|arg| arg.trim_matches('\'').to_string())
        .collect();
    let mut config = ModelConfig {
        strict_mode: false,
        health_check: false,
        min_serv_port_ip_per_task: crate::config::DEFAULT_MIN_SERV_PORT_IP_PER_TASK,
        max_serv_port_ip_per_task: crate::config::DEFAULT_MAX_SERV_PORT_IP_PER_TASK,
        framework_name: None,
        protect_shared_listeners: false,
    };
    let mut groups = Vec::new();
    for (index, arg) in args.iter().enumerate() {
        let value = args.get(index + 1).cloned().unwrap_or_default();
        match arg.as_str() {
            "--group" => groups.push(value),
            "--strict-mode" => config.strict_mode = true,
            "--health-check" | "-H" => config.health_check = true,
            "--min-serv-port-ip-per-task" => {
                config.min_serv_port_ip_per_task = value.parse().unwrap()
            }
            "--max-serv-port-ip-per-task" => {
                config.max_serv_port_ip_per_task = value.parse().unwrap()
            }
            _ => {}
        }
    }
    for line in read("env").unwrap_or_default().lines() {
        if let Some(name) = line.strip_prefix("FRAMEWORK_NAME=") {
            config.framework_name = Some(name.to_string());
        }
    }
    let mut hosts = HashMap::new();
    for line in read("hosts").unwrap_or_default().lines() {
        let mut fields = line.split_whitespace();
        let Some(ip) = fields.next().and_then(|ip| ip.parse().ok()) else {
            continue;
        };
        for name in fields {
            hosts.insert(name.to_string(), ip);
        }
    }
    let expected = read("expected/haproxy.cfg").or_else(|| read("expected/ours/haproxy.cfg"));
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    Case {
        name,
        apps: apps.apps,
        tasks: tasks.tasks,
        config,
        groups,
        hosts,
        expected,
    }
}

fn cases() -> Vec<Case> {
    let entries = std::fs::read_dir(CASES).unwrap_or_else(|e| panic!("{CASES}: {e}"));
    let mut dirs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 50, "only {} cases in {CASES}", dirs.len());
    dirs.iter().map(|dir| read_case(dir)).collect()
}

/// Render's filter, as marathon-lb's `config()` applies it.
fn rendered(service: &Service, groups: &[String]) -> bool {
    let service_groups = if service.haproxy_groups.is_empty() {
        &service.groups
    } else {
        &service.haproxy_groups
    };
    let in_group = groups
        .iter()
        .any(|g| g == "*" || service_groups.contains(g));
    in_group && service.enabled && !service.backends.is_empty()
}

/// `backend NAME` → `mode` and sorted `ip:port[ disabled]` of its `server` lines. The
/// per-vhost SNI backends of `--group-https-by-vhost` (servers `abns@...`) are render's own.
fn expected_backends(cfg: &str) -> BTreeMap<String, Vec<String>> {
    let mut backends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in cfg.lines() {
        if let Some(name) = line.strip_prefix("backend ") {
            current = Some(name.trim().to_string());
            backends.entry(name.trim().to_string()).or_default();
        } else if !line.starts_with(' ') && !line.is_empty() {
            current = None;
        } else if let (Some(name), Some(mode)) = (&current, line.trim().strip_prefix("mode ")) {
            backends.get_mut(name).unwrap().push(format!("mode {mode}"));
        } else if let (Some(name), Some(server)) = (&current, line.trim().strip_prefix("server ")) {
            let address = server.split_whitespace().nth(1).unwrap_or("").to_string();
            if address.starts_with("abns@") {
                backends.remove(name);
                current = None;
                continue;
            }
            let draining = server.split_whitespace().any(|word| word == "disabled");
            let entry = if draining {
                format!("{address} disabled")
            } else {
                address
            };
            backends.get_mut(name).unwrap().push(entry);
        }
    }
    for servers in backends.values_mut() {
        servers.sort();
    }
    backends
}

fn model_backends(services: &[Service], groups: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut backends: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for service in services.iter().filter(|s| rendered(s, groups)) {
        let name: String = service
            .app_id
            .chars()
            .skip(1)
            .collect::<String>()
            .replace('/', "_");
        let servers = backends
            .entry(format!("{name}_{}", service.service_port))
            .or_default();
        let vhost = service.hostname.as_deref().is_some_and(|h| !h.is_empty());
        let default_mode = if vhost { "http" } else { "tcp" };
        servers.push(format!(
            "mode {}",
            service.mode.as_deref().unwrap_or(default_mode)
        ));
        for backend in &service.backends {
            let address = format!("{}:{}", backend.ip, backend.port);
            servers.push(if backend.draining {
                format!("{address} disabled")
            } else {
                address
            });
        }
        servers.sort();
    }
    backends
}

#[test]
fn every_case_builds_and_matches_marathon_lbs_servers() {
    let mut failures = Vec::new();
    for case in cases() {
        let resolve = |host: &str| case.hosts.get(host).copied();
        let (model, warnings) = build(&case.apps, &case.tasks, &case.config, &resolve);
        for warning in &warnings {
            eprintln!("{}: {warning}", case.name);
        }
        let Some(cfg) = &case.expected else { continue };
        let expected = expected_backends(cfg);
        let actual = model_backends(&model.services, &case.groups);
        if expected != actual {
            failures.push(format!(
                "{}:\n  expected {expected:?}\n  actual   {actual:?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
