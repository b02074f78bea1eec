//! The service model: Marathon apps + tasks → services with their backends, with marathon-lb's
//! label semantics. Pure: no I/O (name resolution is handed in as a function); never aborts on
//! one bad app or label, it leaves that app out and records a [`Warning`] naming app and label.
//!
//! It follows marathon-lb's `get_apps` (marathon_lb.py), its label setters (config.py) and its
//! networking helpers (utils.py) rule for rule; `labels`, `networking` and `deployment` hold
//! the parts. Where it departs, on purpose:
//! - An app marathon-lb would abort the whole run over is left out with a warning, and the rest
//!   is built as marathon-lb would build it without that app: a `HAPROXY_{n}_PORT`,
//!   `_BACKEND_WEIGHT` or `_BACKEND_HEALTHCHECK_PORT_INDEX` that is not an integer (or a port
//!   outside `0..=u32::MAX`), an `_AUTH` that is not three `:` fields, an empty
//!   `HAPROXY_DEPLOYMENT_GROUP`, a blue/green merge that cannot be done (a start date or
//!   `versionInfo.lastScalingAt` that does not parse, or one with a time zone compared to one
//!   without, `HAPROXY_DEPLOYMENT_TARGET_INSTANCES` missing or not an integer while
//!   `_NEW_INSTANCES` is set, no `instances`), a health check used without a `protocol`.
//! - Timestamps are read as ISO-8601 only (dateutil guesses at more); integers as ASCII digits
//!   within `i64` (Python takes any Unicode digit, any size).
//! - Fields marathon-lb would crash on when missing read as empty: an app's `labels`, a task's
//!   `host` (the task is skipped), a health result's `alive` (not alive). A label value that is
//!   not a string is read as its JSON text. `null` elements of object lists are dropped.
//! - A task port that is `null` or out of range gives no server (marathon-lb writes `None`), with
//!   a warning.
//! - Health-check results are not remembered between runs: each run starts like a freshly
//!   started marathon-lb, which drops a checked app's tasks that have no results yet.

mod deployment;
mod health;
pub mod labels;
mod networking;
mod safety;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use crate::config::ModelConfig;
use crate::fetch::api::{App, HealthCheck, Task};

use deployment::{Candidate, CandidateTask, MergeFault};
use labels::PortLabels;
use networking::{Mode, NoAddress, ServicePortAssigner};

/// One task endpoint serving a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The agent host as Marathon reports it (name or address).
    pub host: String,
    /// Address used to reach the task: the task IP for IP-per-task, else `host` resolved.
    pub ip: String,
    /// Port on `ip`: the task port for IP-per-task, else the host port.
    pub port: u32,
    /// Blue/green: an old task being drained (rendered ` disabled`).
    pub draining: bool,
}

/// HTTP basic auth from `HAPROXY_{n}_AUTH` (`realm:user:crypted-password`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub realm: String,
    pub user: String,
    pub password: String,
}

/// One service port of one app (marathon-lb's `MarathonService`).
///
/// Label values are kept verbatim, as marathon-lb keeps them: an empty label is `Some("")`, not
/// `None`, and marathon-lb's templates test some fields for truth (`if app.sslCert`) and others
/// for presence (`is not None`), so `render` decides which.
#[derive(Debug, Clone)]
pub struct Service {
    /// Marathon app id with its leading `/` (rewritten to the deployment group for blue/green).
    pub app_id: String,
    /// The service port, or `HAPROXY_{n}_PORT` when set.
    pub service_port: u32,
    /// In insertion order (tasks in `/v2/tasks` order, a blue/green group's old tasks sorted by
    /// id first); `render` sorts them by (host, port). The same host and port twice (two task
    /// ids) stays twice, as in marathon-lb.
    pub backends: Vec<Backend>,
    /// `HAPROXY_{n}_VHOST`, lower-cased, possibly a comma-separated list.
    pub hostname: Option<String>,
    /// `HAPROXY_{n}_PATH`.
    pub path: Option<String>,
    /// `HAPROXY_{n}_HTTP_BACKEND_PROXYPASS_PATH`.
    pub proxypath: Option<String>,
    /// `HAPROXY_{n}_HTTP_BACKEND_REVPROXY_PATH`.
    pub revproxypath: Option<String>,
    /// `HAPROXY_{n}_HTTP_BACKEND_REDIR`.
    pub redirpath: Option<String>,
    pub auth: Option<Auth>,
    pub sticky: bool,
    /// `HAPROXY_{n}_ENABLED`; defaults to `!strict_mode`.
    pub enabled: bool,
    pub redirect_http_to_https: bool,
    pub use_hsts: bool,
    pub ssl_cert: Option<String>,
    pub bind_options: Option<String>,
    /// `HAPROXY_{n}_BIND_ADDR`, default `*`.
    pub bind_addr: String,
    /// App-level groups (`HAPROXY_GROUP` split at `,`; empty without the label).
    pub groups: Vec<String>,
    /// Per-port groups (`HAPROXY_{n}_GROUP` split at `,`); when non-empty they replace `groups`.
    pub haproxy_groups: Vec<String>,
    /// `HAPROXY_{n}_MODE` lower-cased; `http` when this port's own health check is `HTTP` and
    /// no label says otherwise, or (overriding the label) when the check comes from
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX` and is `HTTP`, `HTTPS`, `MESOS_HTTP` or
    /// `MESOS_HTTPS`. `None` lets render choose (`http` with a vhost, else `tcp`).
    pub mode: Option<String>,
    /// `HAPROXY_{n}_BALANCE`, default `roundrobin`.
    pub balance: String,
    /// The app's health check for this port: the first with a non-zero `port`, or with
    /// `portIndex` equal to the port's index (or to the health-check port index label).
    pub health_check: Option<HealthCheck>,
    /// Raw template labels of this port, keyed by template name without prefix
    /// (`BACKEND_HEAD` for `HAPROXY_0_BACKEND_HEAD`), CRLF normalised to LF.
    pub template_labels: BTreeMap<String, String>,
    /// `HAPROXY_{n}_BACKEND_WEIGHT`; 0 by default, 1 when a path is set and the weight is 0.
    pub backend_weight: i64,
    /// `HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL`: space-separated networks.
    pub network_allowed: Option<String>,
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`, as given (may be negative or out of range;
    /// marathon-lb's `get_backend_port` copes, and so must render).
    pub healthcheck_port_index: Option<i64>,
}

impl Service {
    /// A service port with marathon-lb's defaults: no backends yet, enabled, bound on `*`,
    /// `roundrobin`, no labels applied.
    pub fn new(app_id: impl Into<String>, service_port: u32) -> Service {
        Service {
            app_id: app_id.into(),
            service_port,
            backends: Vec::new(),
            hostname: None,
            path: None,
            proxypath: None,
            revproxypath: None,
            redirpath: None,
            auth: None,
            sticky: false,
            enabled: true,
            redirect_http_to_https: false,
            use_hsts: false,
            ssl_cert: None,
            bind_options: None,
            bind_addr: "*".to_string(),
            groups: Vec::new(),
            haproxy_groups: Vec::new(),
            mode: None,
            balance: "roundrobin".to_string(),
            health_check: None,
            template_labels: BTreeMap::new(),
            backend_weight: 0,
            network_allowed: None,
            healthcheck_port_index: None,
        }
    }
}

/// Something the model left out or could not honour; the run goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub app_id: String,
    /// The label at fault, when one is.
    pub label: Option<String>,
    pub message: String,
    /// The whole app was left out (rather than one task or host skipped).
    pub app_left_out: bool,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.label {
            Some(label) => write!(f, "app {}: label {}: {}", self.app_id, label, self.message),
            None => write!(f, "app {}: {}", self.app_id, self.message),
        }
    }
}

/// Every service of the cluster, in marathon-lb's generation order (apps in `/v2/apps` order,
/// ports in index order). Group, strict-mode and empty-backend filtering is `render`'s job, as
/// the health-check port of one service can come from a sibling that is not rendered.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub services: Vec<Service>,
}

/// Resolves an agent host name to an address; `None` when it cannot be resolved. For output
/// identical to marathon-lb's, answer with the IPv4 address `gethostbyname` would give.
pub type Resolver<'a> = &'a dyn Fn(&str) -> Option<IpAddr>;

/// Mesos task states marathon-lb does not route to (everything else is, including `TASK_LOST`
/// and `TASK_UNREACHABLE`, and a task without a state).
const EXCLUDED_TASK_STATES: &[&str] = &[
    "TASK_STAGING",
    "TASK_STARTING",
    "TASK_KILLING",
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
    "TASK_UNKNOWN",
];

/// Builds the model from Marathon's apps and tasks (tasks joined to apps by `appId`, in
/// `/v2/tasks` order), as marathon-lb's `get_apps` does.
///
/// Where marathon-lb would abort the whole run over one app (a label that does not parse, a
/// blue/green merge it cannot do), that app is left out with a [`Warning`] and the rest is built
/// as marathon-lb would build it without that app: service-port auto-assignment and deployment
/// merges are redone from scratch once the bad apps are known.
pub fn build(
    apps: &[App],
    tasks: &[Task],
    config: &ModelConfig,
    resolve: Resolver<'_>,
) -> (Model, Vec<Warning>) {
    build_without(apps, tasks, config, resolve, &HashSet::new())
}

/// [`build`] as if Marathon did not have the apps named in `left_out`: by their own id, or by
/// the id of the deployment group they merge into (the id their services carry).
pub fn build_without(
    apps: &[App],
    tasks: &[Task],
    config: &ModelConfig,
    resolve: Resolver<'_>,
    left_out: &HashSet<String>,
) -> (Model, Vec<Warning>) {
    let tasks_by_app = join_tasks(apps, tasks);
    // Each host is looked up once per build, however many passes and tasks name it.
    let resolved: RefCell<HashMap<String, Option<IpAddr>>> = RefCell::new(HashMap::new());
    let cached_resolve = |host: &str| -> Option<IpAddr> {
        if let Some(answer) = resolved.borrow().get(host) {
            return *answer;
        }
        let answer = resolve(host);
        resolved.borrow_mut().insert(host.to_string(), answer);
        answer
    };
    let mut excluded: Vec<bool> = apps
        .iter()
        .map(|app| {
            left_out.contains(&app.id)
                || matches!(deployment::group_of(app), Some(Ok(group)) if left_out.contains(&group))
        })
        .collect();
    let mut exclusion_warnings = Vec::new();
    // Every pass with faults excludes at least one more app, so this ends.
    loop {
        let pass = Pass::run(apps, &tasks_by_app, &excluded, config, &cached_resolve);
        if pass.faults.is_empty() {
            exclusion_warnings.extend(pass.warnings);
            return (
                Model {
                    services: pass.services,
                },
                exclusion_warnings,
            );
        }
        for fault in pass.faults {
            excluded[fault.source] = true;
            exclusion_warnings.push(Warning {
                app_id: apps[fault.source].id.clone(),
                label: fault.label,
                message: format!("{}; app left out", fault.message),
                app_left_out: true,
            });
        }
    }
}

/// Each app's tasks, in `/v2/tasks` order. Tasks of unknown apps are dropped.
fn join_tasks<'a>(apps: &[App], tasks: &'a [Task]) -> Vec<Vec<&'a Task>> {
    let mut index_by_id: HashMap<&str, Vec<usize>> = HashMap::new();
    for (index, app) in apps.iter().enumerate() {
        index_by_id.entry(app.id.as_str()).or_default().push(index);
    }
    let mut tasks_by_app = vec![Vec::new(); apps.len()];
    for task in tasks {
        for &index in index_by_id.get(task.app_id.as_str()).into_iter().flatten() {
            tasks_by_app[index].push(task);
        }
    }
    tasks_by_app
}

/// Something marathon-lb would have died on, blamed on one app (by index in `/v2/apps`).
#[derive(Debug)]
struct Fault {
    source: usize,
    label: Option<String>,
    message: String,
}

impl From<MergeFault> for Fault {
    fn from(fault: MergeFault) -> Fault {
        Fault {
            source: fault.source,
            label: fault.label,
            message: fault.message,
        }
    }
}

/// One run of marathon-lb's `get_apps` over the apps not excluded.
struct Pass<'c> {
    config: &'c ModelConfig,
    resolve: &'c dyn Fn(&str) -> Option<IpAddr>,
    assigner: ServicePortAssigner,
    services: Vec<Service>,
    warnings: Vec<Warning>,
    faults: Vec<Fault>,
    /// (app id, host) pairs already warned about, so a dead agent is named once per app.
    unresolvable: HashSet<(String, String)>,
    health_results: health::ResultCache,
}

impl<'c> Pass<'c> {
    fn run(
        apps: &[App],
        tasks_by_app: &[Vec<&Task>],
        excluded: &[bool],
        config: &'c ModelConfig,
        resolve: &'c dyn Fn(&str) -> Option<IpAddr>,
    ) -> Pass<'c> {
        let mut pass = Pass {
            config,
            resolve,
            assigner: ServicePortAssigner::new(
                config.min_serv_port_ip_per_task,
                config.max_serv_port_ip_per_task,
            ),
            services: Vec::new(),
            warnings: Vec::new(),
            faults: Vec::new(),
            unresolvable: HashSet::new(),
            health_results: health::ResultCache::default(),
        };
        let candidates = pass.merge_deployment_groups(apps, tasks_by_app, excluded);
        for candidate in &candidates {
            pass.add_app(candidate);
        }
        pass
    }

    /// marathon-lb's first pass: apps without a deployment group in order, then one merged
    /// candidate per group, in order of the group's first app.
    fn merge_deployment_groups<'a>(
        &mut self,
        apps: &'a [App],
        tasks_by_app: &[Vec<&'a Task>],
        excluded: &[bool],
    ) -> Vec<Candidate<'a>> {
        let mut plain = Vec::new();
        let mut groups: Vec<Candidate<'a>> = Vec::new();
        let mut group_index: HashMap<String, usize> = HashMap::new();
        for (source, app) in apps.iter().enumerate() {
            if excluded[source] {
                continue;
            }
            let tasks = tasks_by_app[source]
                .iter()
                .map(|&task| CandidateTask {
                    task,
                    draining: false,
                })
                .collect();
            let group = match deployment::group_of(app) {
                None => {
                    plain.push(Candidate {
                        source,
                        app,
                        id: app.id.clone(),
                        tasks,
                    });
                    continue;
                }
                Some(Err(message)) => {
                    self.faults.push(Fault {
                        source,
                        label: Some(deployment::GROUP_LABEL.to_string()),
                        message,
                    });
                    continue;
                }
                Some(Ok(group)) => group,
            };
            let candidate = Candidate {
                source,
                app,
                id: group.clone(),
                tasks,
            };
            let Some(&index) = group_index.get(&group) else {
                group_index.insert(group, groups.len());
                groups.push(candidate);
                continue;
            };
            let prev = groups[index].clone();
            let cur_has_health_checks = !app.health_checks.is_empty();
            match deployment::merge(prev, candidate.clone(), cur_has_health_checks) {
                Ok(merged) => groups[index] = merged,
                Err(fault) => {
                    // Keep whichever side is not at fault, so later merges still get checked.
                    if fault.source != source {
                        groups[index] = candidate;
                    }
                    self.faults.push(fault.into());
                }
            }
        }
        plain.extend(groups);
        plain
    }

    /// marathon-lb's second pass for one app: its services, then its tasks as backends.
    fn add_app(&mut self, candidate: &Candidate<'_>) {
        let app = candidate.app;
        let framework = self.config.framework_name.as_deref();
        if framework.is_some_and(|name| candidate.id.chars().skip(1).eq(name.chars())) {
            return;
        }
        let groups = app
            .labels
            .get("HAPROXY_GROUP")
            .map(|v| labels::split_commas(v));
        let mode = networking::app_mode(app);
        let first_task = candidate.tasks.first().map(|t| t.task);
        let (service_ports, exhausted) =
            self.assigner
                .service_ports(&candidate.id, app, first_task, &mode);
        if exhausted.is_some() {
            self.warn(
                candidate,
                None,
                "no service port left in the IP-per-task range".into(),
            );
        }

        let port_labels = PortLabels::new(&app.labels);
        // Keyed by the original service port; a later port with the same key replaces the
        // earlier one in place, as assigning to a Python dict does.
        let mut services: Vec<(i64, Service)> = Vec::new();
        let faults_before = self.faults.len();
        for (index, service_port) in service_ports.iter().enumerate() {
            let Some(service_port) = *service_port else {
                continue;
            };
            let Some(mut service) = self.new_service(candidate, index, service_port) else {
                continue;
            };
            service.groups = groups.clone().unwrap_or_default();
            for (spec, value) in port_labels.of_port(index) {
                if let Err(error) = labels::apply(&mut service, spec, index, value) {
                    self.faults.push(Fault {
                        source: candidate.source,
                        label: Some(error.label),
                        message: error.message,
                    });
                }
            }
            self.health_check_from_port_index(candidate, &mut service);
            match services.iter_mut().find(|(key, _)| *key == service_port) {
                Some(slot) => slot.1 = service,
                None => services.push((service_port, service)),
            }
        }
        if self.faults.len() > faults_before {
            return;
        }
        for candidate_task in &candidate.tasks {
            self.add_task(
                candidate,
                &mode,
                candidate_task,
                &service_ports,
                &mut services,
            );
        }
        self.services
            .extend(services.into_iter().map(|(_, service)| service));
    }

    fn new_service(
        &mut self,
        candidate: &Candidate<'_>,
        index: usize,
        service_port: i64,
    ) -> Option<Service> {
        let Ok(port) = u32::try_from(service_port) else {
            self.faults.push(Fault {
                source: candidate.source,
                label: None,
                message: format!("service port {service_port} is out of range"),
            });
            return None;
        };
        let health_check = health::check_for_port(candidate.app, index as i64);
        let mut mode = None;
        if let Some(check) = health_check {
            if check.protocol.is_empty() {
                self.fault_no_protocol(candidate);
                return None;
            }
            if check.protocol == "HTTP" {
                mode = Some("http".to_string());
            }
        }
        Some(Service {
            enabled: !self.config.strict_mode,
            mode,
            health_check: health_check.cloned(),
            ..Service::new(candidate.id.clone(), port)
        })
    }

    /// marathon-lb issue 198: a port without its own health check may borrow another port's
    /// (`HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`); an HTTP-ish one then forces http mode.
    fn health_check_from_port_index(&mut self, candidate: &Candidate<'_>, service: &mut Service) {
        let (None, Some(port_index)) = (&service.health_check, service.healthcheck_port_index)
        else {
            return;
        };
        let Some(check) = health::check_for_port(candidate.app, port_index) else {
            return;
        };
        if check.protocol.is_empty() {
            self.fault_no_protocol(candidate);
            return;
        }
        if matches!(
            check.protocol.as_str(),
            "HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS"
        ) {
            service.mode = Some("http".to_string());
        }
        service.health_check = Some(check.clone());
    }

    fn fault_no_protocol(&mut self, candidate: &Candidate<'_>) {
        self.faults.push(Fault {
            source: candidate.source,
            label: None,
            message: "a health check has no protocol".to_string(),
        });
    }

    fn add_task(
        &mut self,
        candidate: &Candidate<'_>,
        mode: &Mode,
        candidate_task: &CandidateTask<'_>,
        service_ports: &[Option<i64>],
        services: &mut [(i64, Service)],
    ) {
        let task = candidate_task.task;
        if task.host.is_empty() {
            return;
        }
        if task
            .state
            .as_deref()
            .is_some_and(|state| EXCLUDED_TASK_STATES.contains(&state))
        {
            return;
        }
        let checked = self.config.health_check && !candidate.app.health_checks.is_empty();
        if checked && !self.health_results.admits(task) {
            return;
        }
        let ip = match networking::task_ip(task, mode, self.resolve) {
            Ok(ip) => ip,
            Err(NoAddress::NotAllocated) => return,
            Err(NoAddress::Unresolvable(host)) => {
                if self
                    .unresolvable
                    .insert((candidate.id.clone(), host.clone()))
                {
                    let message = crate::fetch::resolve::unresolvable_message(&host);
                    self.warn(candidate, None, message);
                }
                return;
            }
        };
        let task_ports = networking::task_ports(candidate.app, task, mode);
        // Different app versions may have different port counts: match what lines up.
        for (task_port, service_port) in task_ports.iter().zip(service_ports) {
            let Some(service_port) = service_port else {
                continue;
            };
            let Some((_, service)) = services.iter_mut().find(|(key, _)| key == service_port)
            else {
                continue;
            };
            let Some(port) = task_port.and_then(|port| u32::try_from(port).ok()) else {
                let what = match task_port {
                    Some(port) => format!("port {port} is out of range"),
                    None => "port is null".to_string(),
                };
                let message = format!(
                    "task {}: {what}; not a server of port {service_port}",
                    task.id
                );
                self.warn(candidate, None, message);
                continue;
            };
            service.backends.push(Backend {
                host: task.host.clone(),
                ip: ip.clone(),
                port,
                draining: candidate_task.draining,
            });
        }
    }

    fn warn(&mut self, candidate: &Candidate<'_>, label: Option<String>, message: String) {
        self.warnings.push(Warning {
            app_id: candidate.app.id.clone(),
            label,
            message,
            app_left_out: false,
        });
    }
}

#[cfg(test)]
mod corpus_tests;

#[cfg(test)]
mod tests;
