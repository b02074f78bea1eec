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
//! - Every Marathon string that reaches the configuration is checked against its grammar
//!   (`safety` for labels, `fields` for app ids, deployment groups, task hosts and addresses,
//!   health-check paths and protocols), where marathon-lb pastes it as given: a refused value
//!   leaves out the app, the task or the health check, with a warning naming app, field and
//!   value.
//! - Timestamps are read as ISO-8601 only (dateutil guesses at more); integers as ASCII digits
//!   of any size (Python also takes other Unicode digits).
//! - Fields marathon-lb would crash on when missing read as empty: an app's `labels`, a task's
//!   `host` (the task is skipped), a health result's `alive` (not alive). A label value that is
//!   not a string is read as its JSON text. `null` elements of object lists are dropped.
//! - A task port that is `null` or out of range gives no server (marathon-lb writes `None`), with
//!   a warning.
//! - Health-check results are not remembered between runs: each run starts like a freshly
//!   started marathon-lb, which drops a checked app's tasks that have no results yet.

pub mod confine;
pub mod conflicts;
mod deployment;
pub mod fields;
mod health;

pub use health::ServiceCheck;
pub mod labels;
mod networking;
mod safety;

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::ModelConfig;
use crate::marathon::{App, HealthCheck, Task};

use deployment::{Candidate, CandidateTask, MergeFault};
use labels::PortLabels;
use networking::{Mode, NoAddress, ServicePortAssigner};

/// One task endpoint serving a service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The agent host as Marathon reports it (name or address), shared with the task.
    pub host: Arc<str>,
    /// Address used to reach the task: the task IP for IP-per-task, else `host` resolved
    /// (the task's own text when it is one, shared by the task's servers).
    pub ip: Arc<str>,
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
    pub sticky: bool,
    /// `HAPROXY_{n}_ENABLED`; defaults to `!strict_mode`.
    pub enabled: bool,
    pub redirect_http_to_https: bool,
    pub use_hsts: bool,
    /// `HAPROXY_{n}_BIND_ADDR`, default `*` (not allocated per service).
    pub bind_addr: Cow<'static, str>,
    /// App-level groups (`HAPROXY_GROUP` split at `,`; empty without the label).
    pub groups: Vec<String>,
    /// Per-port groups (`HAPROXY_{n}_GROUP` split at `,`); when non-empty they replace `groups`.
    pub haproxy_groups: Vec<String>,
    /// `HAPROXY_{n}_MODE` lower-cased; `http` when this port's own health check is `HTTP` and
    /// no label says otherwise, or (overriding the label) when the check comes from
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX` and is `HTTP`, `HTTPS`, `MESOS_HTTP` or
    /// `MESOS_HTTPS`. `None` lets render choose (`http` with a vhost, else `tcp`).
    pub mode: Option<Cow<'static, str>>,
    /// `HAPROXY_{n}_BALANCE`, default `roundrobin` (not allocated per service).
    pub balance: Cow<'static, str>,
    /// The app's health check for this port: the first with a non-zero `port`, or with
    /// `portIndex` equal to the port's index (or to the health-check port index label).
    pub health_check: Option<ServiceCheck>,
    /// `HAPROXY_{n}_BACKEND_WEIGHT`; 0 by default, 1 when a path is set and the weight is 0.
    /// Only its order counts: when some weight in the cluster is beyond `i64` (Python's have no
    /// bound), each is replaced by its place in the cluster's order, `-1` kept in its place.
    pub backend_weight: i64,
    /// The labels few services set, apart (`None` while none is set): read through
    /// [`Service::extras`], set through [`Service::extras_mut`]. Public only so that a
    /// service can be written as `Service { .., ..Service::new(..) }`.
    pub extras: Option<Box<Extras>>,
}

/// What few services set, one label each, kept out of [`Service`] so that the many services
/// without any stay small (issue 14: 352 bytes a service instead of 600, the model's largest
/// block at 10,000 apps).
#[derive(Debug, Clone, Default)]
pub struct Extras {
    /// `HAPROXY_{n}_HTTP_BACKEND_PROXYPASS_PATH`.
    pub proxypath: Option<String>,
    /// `HAPROXY_{n}_HTTP_BACKEND_REVPROXY_PATH`.
    pub revproxypath: Option<String>,
    /// `HAPROXY_{n}_HTTP_BACKEND_REDIR`.
    pub redirpath: Option<String>,
    pub auth: Option<Auth>,
    pub ssl_cert: Option<String>,
    pub bind_options: Option<String>,
    /// Raw template labels of this port, keyed by template name without prefix
    /// (`BACKEND_HEAD` for `HAPROXY_0_BACKEND_HEAD`), CRLF normalised to LF.
    pub template_labels: BTreeMap<String, String>,
    /// `HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL`: space-separated networks.
    pub network_allowed: Option<String>,
    /// `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`, as given (may be negative or out of range;
    /// marathon-lb's `get_backend_port` copes, and so must render).
    pub healthcheck_port_index: Option<i64>,
}

/// A service's extras before any is set.
static NO_EXTRAS: Extras = Extras {
    proxypath: None,
    revproxypath: None,
    redirpath: None,
    auth: None,
    ssl_cert: None,
    bind_options: None,
    template_labels: BTreeMap::new(),
    network_allowed: None,
    healthcheck_port_index: None,
};

impl Service {
    /// The labels few services set (each `None`, and no template label, until one is).
    pub fn extras(&self) -> &Extras {
        self.extras.as_deref().unwrap_or(&NO_EXTRAS)
    }

    /// [`Service::extras`], to set one.
    pub fn extras_mut(&mut self) -> &mut Extras {
        self.extras.get_or_insert_with(Box::default)
    }

    /// Whether render writes this service for `groups`: in one of them (per-port groups replace
    /// the app's; `*` takes every service), enabled, and with at least one server, as
    /// marathon-lb selects. One rule for render, the conflict warnings and the listener check.
    pub fn is_rendered(&self, groups: &[String]) -> bool {
        self.is_selected(groups) && !self.backends.is_empty()
    }

    /// Whether this service is one `groups` asks for and enabled: rendered once it has a
    /// server. (A selected service without one is an app HAProxy should serve and cannot.)
    pub fn is_selected(&self, groups: &[String]) -> bool {
        let own = if self.haproxy_groups.is_empty() {
            &self.groups
        } else {
            &self.haproxy_groups
        };
        let in_group = groups.iter().any(|group| group == "*")
            || own.iter().any(|group| groups.contains(group));
        in_group && self.enabled
    }

    /// A service port with marathon-lb's defaults: no backends yet, enabled, bound on `*`,
    /// `roundrobin`, no labels applied.
    pub fn new(app_id: impl Into<String>, service_port: u32) -> Service {
        Service {
            app_id: app_id.into(),
            service_port,
            backends: Vec::new(),
            hostname: None,
            path: None,
            sticky: false,
            enabled: true,
            redirect_http_to_https: false,
            use_hsts: false,
            bind_addr: Cow::Borrowed("*"),
            groups: Vec::new(),
            haproxy_groups: Vec::new(),
            mode: None,
            balance: Cow::Borrowed("roundrobin"),
            health_check: None,
            backend_weight: 0,
            extras: None,
        }
    }
}

/// How the message of a [`Warning`] that left its app out ends.
pub const LEFT_OUT: &str = "; app left out";

/// Something the model left out or could not honour; the run goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub app_id: String,
    /// The label at fault, when one is.
    pub label: Option<String>,
    pub message: String,
    /// The whole app was left out (rather than one task, health check or host skipped).
    pub app_left_out: bool,
    /// Why, as data: callers branch on this, never on the message.
    pub reason: Reason,
}

/// Why a [`Warning`] was given. The faults of an app's own definition ([`Reason::Label`],
/// [`Reason::Field`], [`Reason::Definition`], [`Reason::TemplateLabel`]) are the ones a
/// last-known-good policy may hold an app back for; the others are about this run's tasks or
/// about two apps together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A label value that does not parse or is outside its grammar (named in `label`).
    Label,
    /// A Marathon field (not a label) outside its grammar, with the value refused.
    Field { field: fields::Field, value: String },
    /// Something else marathon-lb would die on: a blue/green merge that cannot be done, a
    /// health check without a protocol, a service port out of range.
    Definition,
    /// The app's own template label does not format (found by `render`).
    TemplateLabel,
    /// A task or port that cannot be served this run: an agent that does not resolve, a task
    /// port that is null or out of range, no service port left to assign.
    Unservable,
    /// Two apps claim the same listener or virtual host (nothing is left out).
    Conflict,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let app = fields::escaped(&self.app_id);
        match (&self.label, &self.reason) {
            (Some(label), _) => write!(f, "app {app}: label {label}: {}", self.message),
            (None, Reason::Field { field, .. }) => {
                write!(f, "app {app}: {field}: {}", self.message)
            }
            (None, _) => write!(f, "app {app}: {}", self.message),
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
pub type Resolver<'a> = &'a (dyn Fn(&str) -> Option<IpAddr> + Sync);

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
    build_in_parts(apps, tasks, config, resolve, left_out, PASS_THREAD_FROM)
}

/// [`build_without`], each pass split in two from `parts_from` candidates (tests compare the
/// split build with the whole one).
fn build_in_parts(
    apps: &[App],
    tasks: &[Task],
    config: &ModelConfig,
    resolve: Resolver<'_>,
    left_out: &HashSet<String>,
    parts_from: usize,
) -> (Model, Vec<Warning>) {
    let tasks_by_app = join_tasks(apps, tasks);
    // Each host is looked up once per build, however many passes and tasks name it, and by one
    // part of a split pass at a time (the lock is held across the lookup).
    let resolved: Mutex<HashMap<String, Option<IpAddr>>> = Mutex::new(HashMap::new());
    let cached_resolve = |host: &str| -> Option<IpAddr> {
        let mut resolved = resolved.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = resolved.get(host) {
            return *answer;
        }
        let answer = resolve(host);
        resolved.insert(host.to_string(), answer);
        answer
    };
    // Without apps to leave out (most runs), no app's deployment group need be read here.
    let mut excluded: Vec<bool> = apps
        .iter()
        .map(|app| {
            !left_out.is_empty()
                && (left_out.contains(&app.id)
                    || matches!(deployment::group_of(app), Some(Ok(group)) if left_out.contains(&group)))
        })
        .collect();
    let mut exclusion_warnings = Vec::new();
    // Every pass with faults excludes at least one more app, so this ends.
    loop {
        let pass = Pass::run(
            (apps, &tasks_by_app, &excluded),
            config,
            &cached_resolve,
            parts_from,
        );
        if pass.faults.is_empty() {
            exclusion_warnings.extend(pass.warnings);
            let mut services = pass.services;
            order_big_weights(&mut services, &pass.big_weights);
            return (Model { services }, exclusion_warnings);
        }
        for fault in pass.faults {
            excluded[fault.source] = true;
            exclusion_warnings.push(Warning {
                app_id: apps[fault.source].id.clone(),
                label: fault.label,
                message: format!("{}{LEFT_OUT}", fault.message),
                app_left_out: true,
                reason: fault.reason,
            });
        }
    }
}

/// The port's `HAPROXY_{n}_BACKEND_WEIGHT` when it parses but does not fit `i64`.
fn big_weight(port_labels: &PortLabels<'_>, index: usize) -> Option<labels::PyInt> {
    let (_, value) = port_labels
        .of_port(index)
        .find(|(spec, _)| spec.kind == labels::LabelKind::BackendWeight)?;
    labels::python_integer(value).filter(|weight| weight.to_i64().is_none())
}

/// marathon-lb's weights are Python integers of any size, and only their order matters (render
/// sorts the shared frontends' rules by them, and sets `-1` on some). When a weight is beyond
/// `i64`, every service's weight is replaced by its place in the cluster's order, counted from
/// `-1` (which keeps its place): the order, ties included, is exactly Python's.
fn order_big_weights(services: &mut [Service], big_weights: &[Option<labels::PyInt>]) {
    if big_weights.iter().all(Option::is_none) {
        return;
    }
    let exact: Vec<labels::PyInt> = services
        .iter()
        .zip(big_weights)
        .map(|(service, big)| {
            big.clone()
                .unwrap_or_else(|| labels::PyInt::from(service.backend_weight))
        })
        .collect();
    let minus_one = labels::PyInt::from(-1);
    let mut distinct: Vec<&labels::PyInt> = exact.iter().chain([&minus_one]).collect();
    distinct.sort();
    distinct.dedup();
    let origin = distinct.binary_search(&&minus_one).unwrap_or(0) as i64;
    for (service, weight) in services.iter_mut().zip(&exact) {
        let rank = distinct.binary_search(&weight).unwrap_or(0) as i64;
        service.backend_weight = rank - origin - 1;
    }
}

/// Each app's tasks, in `/v2/tasks` order, as candidate tasks (not draining): one list for
/// all apps, so that an app's candidate borrows its part instead of copying it.
struct TasksByApp<'t> {
    tasks: Vec<CandidateTask<'t>>,
    /// Where each app's tasks start in `tasks`, and (last) where the last app's end.
    starts: Vec<usize>,
}

impl<'t> TasksByApp<'t> {
    fn of(&self, app: usize) -> &[CandidateTask<'t>] {
        &self.tasks[self.starts[app]..self.starts[app + 1]]
    }
}

/// Joins tasks to apps by `appId`. Tasks of unknown apps are dropped; apps that share an id
/// (Marathon's are unique) each get every task of it, as marathon-lb's join gives them.
fn join_tasks<'t>(apps: &[App], tasks: &'t [Task]) -> TasksByApp<'t> {
    const NONE: usize = usize::MAX;
    let mut first_by_id: HashMap<&str, usize> = HashMap::with_capacity(apps.len());
    // The next app with the same id, for each app; left empty while no id repeats.
    let mut next_same_id: Vec<usize> = Vec::new();
    for (index, app) in apps.iter().enumerate() {
        match first_by_id.entry(app.id.as_str()) {
            Entry::Vacant(entry) => {
                entry.insert(index);
            }
            Entry::Occupied(entry) => {
                if next_same_id.is_empty() {
                    next_same_id = vec![NONE; apps.len()];
                }
                let mut last = *entry.get();
                while next_same_id[last] != NONE {
                    last = next_same_id[last];
                }
                next_same_id[last] = index;
            }
        }
    }
    // `/v2/tasks` lists an app's tasks together: each run of tasks with one `appId` is looked
    // up once (its tasks share the id's text, so the run's end is found by pointer).
    let mut runs: Vec<(usize, std::ops::Range<usize>)> = Vec::with_capacity(apps.len());
    let mut start = 0;
    while let Some(first) = tasks.get(start) {
        let app_id = &first.app_id;
        let length = tasks[start..]
            .iter()
            .position(|task| !Arc::ptr_eq(&task.app_id, app_id) && task.app_id != *app_id)
            .unwrap_or(tasks.len() - start);
        let run = start..start + length;
        let mut app = first_by_id.get(&**app_id).copied().unwrap_or(NONE);
        while app != NONE {
            runs.push((app, run.clone()));
            app = next_same_id.get(app).copied().unwrap_or(NONE);
        }
        start = run.end;
    }
    // Stable: an app's runs stay in `/v2/tasks` order.
    if !runs.is_sorted_by_key(|(app, _)| *app) {
        runs.sort_by_key(|(app, _)| *app);
    }
    let mut joined = TasksByApp {
        tasks: Vec::with_capacity(runs.iter().map(|(_, run)| run.len()).sum()),
        starts: Vec::with_capacity(apps.len() + 1),
    };
    let mut runs = runs.into_iter().peekable();
    for app in 0..apps.len() {
        joined.starts.push(joined.tasks.len());
        while let Some((_, run)) = runs.next_if(|(of, _)| *of == app) {
            joined
                .tasks
                .extend(tasks[run].iter().map(|task| CandidateTask {
                    task,
                    draining: false,
                }));
        }
    }
    joined.starts.push(joined.tasks.len());
    joined
}

/// Something marathon-lb would have died on, or a value outside its grammar, blamed on one
/// app (by index in `/v2/apps`); the app is left out.
#[derive(Debug)]
struct Fault {
    source: usize,
    label: Option<String>,
    message: String,
    reason: Reason,
}

impl Fault {
    fn label(source: usize, label: String, message: String) -> Fault {
        Fault {
            source,
            label: Some(label),
            message,
            reason: Reason::Label,
        }
    }

    fn definition(source: usize, message: String) -> Fault {
        Fault {
            source,
            label: None,
            message,
            reason: Reason::Definition,
        }
    }
}

impl From<MergeFault> for Fault {
    fn from(fault: MergeFault) -> Fault {
        match fault.label {
            Some(label) => Fault::label(fault.source, label, fault.message),
            None => Fault::definition(fault.source, fault.message),
        }
    }
}

/// From this many candidates, a pass builds the later half of its apps on a thread of its own
/// beside the earlier half: fewer take less time than starting one.
const PASS_THREAD_FROM: usize = 512;

/// One run of marathon-lb's `get_apps` over the apps not excluded: the services it built and
/// what it warned about and blamed on apps.
struct Pass {
    services: Vec<Service>,
    /// Beside each of `services`: its `HAPROXY_{n}_BACKEND_WEIGHT` when beyond `i64`.
    big_weights: Vec<Option<labels::PyInt>>,
    warnings: Vec<Warning>,
    faults: Vec<Fault>,
}

/// What building one candidate's services takes from the candidates before it, worked out in
/// their order before any is built, so that the building can be split: the service ports (the
/// IP-per-task range hands them out in order) and, for `--health-check`, which of its tasks the
/// health-result cache admits.
struct Plan {
    mode: Mode,
    service_ports: Vec<Option<i64>>,
    exhausted: bool,
    /// Where the candidate's tasks' verdicts start in the pass's list of them (none without
    /// `--health-check`: every task is admitted).
    admitted_from: usize,
}

impl Pass {
    fn run<'t>(
        (apps, tasks_by_app, excluded): (&'t [App], &'t TasksByApp<'t>, &[bool]),
        config: &ModelConfig,
        resolve: Resolver<'_>,
        parts_from: usize,
    ) -> Pass {
        let mut faults = Vec::new();
        let mut candidates = merge_deployment_groups(apps, tasks_by_app, excluded, &mut faults);
        if let Some(framework) = config.framework_name.as_deref() {
            candidates.retain(|candidate| !candidate.id.chars().skip(1).eq(framework.chars()));
        }
        let (plans, admitted) = plan(&candidates, config);
        let build = |range: std::ops::Range<usize>, room: usize| {
            let mut builder = Builder::new(config, resolve, &admitted);
            builder.services.reserve(room);
            builder.big_weights.reserve(room);
            for (candidate, plan) in candidates[range.clone()].iter().zip(&plans[range]) {
                builder.add_app(candidate, plan);
            }
            builder
        };
        // A service per port at most: room for all of them in the list the other part joins.
        let ports_of = |plans: &[Plan]| plans.iter().map(|plan| plan.service_ports.len()).sum();
        let all = 0..candidates.len();
        let mut built = match candidates.len() < parts_from.max(2) {
            true => build(all, ports_of(&plans)),
            false => {
                let split = half_the_work(&candidates, &plans);
                let room = ports_of(&plans);
                let later = || build(split..all.end, ports_of(&plans[split..]));
                let (mut earlier, later) =
                    crate::threads::beside("model", later, || build(0..split, room));
                earlier.join(later);
                earlier
            }
        };
        // Room was kept for a service per port; ports that share one leave some unused.
        built.services.shrink_to_fit();
        faults.append(&mut built.faults);
        Pass {
            services: built.services,
            big_weights: built.big_weights,
            warnings: built.warnings,
            faults,
        }
    }
}

/// The candidates' plans in their order, and the health-result cache's verdicts on their
/// tasks (one per task of every candidate, `true` for those it is not asked about), given in
/// the order marathon-lb asks.
fn plan(candidates: &[Candidate<'_>], config: &ModelConfig) -> (Vec<Plan>, Vec<bool>) {
    let mut assigner = ServicePortAssigner::new(
        config.min_serv_port_ip_per_task,
        config.max_serv_port_ip_per_task,
    );
    let mut health_results = health::ResultCache::default();
    let mut admitted = Vec::new();
    let plans = candidates
        .iter()
        .map(|candidate| {
            let app = candidate.app;
            let mode = networking::app_mode(app);
            let first_task = candidate.tasks.first().map(|t| t.task);
            let (service_ports, exhausted) =
                assigner.service_ports(&candidate.id, app, first_task, &mode);
            let admitted_from = admitted.len();
            if config.health_check {
                let checked = !app.health_checks.is_empty();
                admitted.extend(candidate.tasks.iter().map(|candidate_task| {
                    let task = candidate_task.task;
                    !checked || !is_routed(task) || health_results.admits(task)
                }));
            }
            Plan {
                mode,
                service_ports,
                exhausted: exhausted.is_some(),
                admitted_from,
            }
        })
        .collect();
    (plans, admitted)
}

/// Where to split the candidates so that each part builds about as many servers.
fn half_the_work(candidates: &[Candidate<'_>], plans: &[Plan]) -> usize {
    let work = |(candidate, plan): (&Candidate<'_>, &Plan)| {
        1 + plan.service_ports.len() * (1 + candidate.tasks.len())
    };
    let total: usize = candidates.iter().zip(plans).map(work).sum();
    let mut done = 0;
    candidates
        .iter()
        .zip(plans)
        .position(|part| {
            done += work(part);
            done * 2 >= total
        })
        .map_or(candidates.len(), |last| last + 1)
}

/// Whether a task is in a state and on a host marathon-lb routes to.
fn is_routed(task: &Task) -> bool {
    !task.host.is_empty()
        && !task
            .state
            .as_deref()
            .is_some_and(|state| EXCLUDED_TASK_STATES.contains(&state))
}

/// marathon-lb's first pass: apps without a deployment group in order, then one merged
/// candidate per group, in order of the group's first app.
fn merge_deployment_groups<'t>(
    apps: &'t [App],
    tasks_by_app: &'t TasksByApp<'t>,
    excluded: &[bool],
    faults: &mut Vec<Fault>,
) -> Vec<Candidate<'t>> {
    let mut plain = Vec::new();
    let mut groups: Vec<Candidate<'t>> = Vec::new();
    let mut group_index: HashMap<String, usize> = HashMap::new();
    for (source, app) in apps.iter().enumerate() {
        if excluded[source] {
            continue;
        }
        if let Err(message) = fields::check_app_id(&app.id) {
            faults.push(Fault {
                source,
                label: None,
                message,
                reason: Reason::Field {
                    field: fields::Field::AppId,
                    value: app.id.clone(),
                },
            });
            continue;
        }
        let tasks = Cow::Borrowed(tasks_by_app.of(source));
        let group = match deployment::group_of(app) {
            None => {
                plain.push(Candidate {
                    source,
                    app,
                    id: Cow::Borrowed(&app.id),
                    tasks,
                });
                continue;
            }
            Some(Err(message)) => {
                faults.push(Fault::label(
                    source,
                    deployment::GROUP_LABEL.to_string(),
                    message,
                ));
                continue;
            }
            Some(Ok(group)) => group,
        };
        let candidate = Candidate {
            source,
            app,
            id: Cow::Owned(group.clone()),
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
                faults.push(fault.into());
            }
        }
    }
    plain.extend(groups);
    plain
}

/// marathon-lb's second pass over a run of candidates in order: their services, then their
/// tasks as backends.
struct Builder<'c> {
    config: &'c ModelConfig,
    resolve: Resolver<'c>,
    /// The pass's health-result verdicts, as [`plan`] gives them.
    admitted: &'c [bool],
    services: Vec<Service>,
    /// Beside each of `services`: its `HAPROXY_{n}_BACKEND_WEIGHT` when beyond `i64`.
    big_weights: Vec<Option<labels::PyInt>>,
    /// Where each original service port of the app being added has its service (counted from
    /// the first of them in `services`), reused from app to app: a map, not a list searched
    /// per port, so an app with thousands of ports costs no more per port than one with two.
    service_slots: HashMap<i64, usize>,
    /// For each port index of the app being added, its service's slot (as `service_slots`):
    /// what every task's ports are matched by.
    slot_by_index: Vec<Option<usize>>,
    warnings: Vec<Warning>,
    faults: Vec<Fault>,
    /// (app id, host) pairs already warned about, so a dead agent is named once per app, each
    /// with its warning's place in `warnings` (for [`Builder::join`]).
    unresolvable: HashMap<(String, String), usize>,
}

impl<'c> Builder<'c> {
    fn new(config: &'c ModelConfig, resolve: Resolver<'c>, admitted: &'c [bool]) -> Builder<'c> {
        Builder {
            config,
            resolve,
            admitted,
            services: Vec::new(),
            big_weights: Vec::new(),
            service_slots: HashMap::new(),
            slot_by_index: Vec::new(),
            warnings: Vec::new(),
            faults: Vec::new(),
            unresolvable: HashMap::new(),
        }
    }

    /// Appends what `later` built from the candidates after these, as if this builder had gone
    /// on to build them: an agent it already named unresolvable for an app is not named again.
    /// The one join of a split pass: `later`'s record of the agents it named is not carried
    /// over, so a builder joined once is not joined again.
    fn join(&mut self, mut later: Builder<'_>) {
        let mut named_before: Vec<usize> = later
            .unresolvable
            .iter()
            .filter(|(key, _)| self.unresolvable.contains_key(*key))
            .map(|(_, &place)| place)
            .collect();
        named_before.sort_unstable();
        self.warnings.extend(
            later
                .warnings
                .into_iter()
                .enumerate()
                .filter(|(place, _)| named_before.binary_search(place).is_err())
                .map(|(_, warning)| warning),
        );
        self.services.append(&mut later.services);
        self.big_weights.append(&mut later.big_weights);
        self.faults.append(&mut later.faults);
    }

    /// One app's services, then its tasks as backends.
    fn add_app(&mut self, candidate: &Candidate<'_>, plan: &Plan) {
        let app = candidate.app;
        let mut groups = app.labels.get("HAPROXY_GROUP").map(labels::split_commas);
        let service_ports = &plan.service_ports;
        if plan.exhausted {
            self.warn(
                candidate,
                Reason::Unservable,
                "no service port left in the IP-per-task range".into(),
            );
        }
        let refused_checks = self.refused_health_checks(candidate);

        let port_labels = PortLabels::new(&app.labels);
        // The app's services are built in place at the end of `services` (and their big weights
        // beside them), each found in `service_slots` by its original service port; a later port
        // with the same key replaces the earlier one in place, as assigning to a Python dict does.
        let first = self.services.len();
        self.service_slots.clear();
        let faults_before = self.faults.len();
        for (index, service_port) in service_ports.iter().enumerate() {
            let Some(service_port) = *service_port else {
                continue;
            };
            let Some(mut service) =
                self.new_service(candidate, index, service_port, &refused_checks)
            else {
                continue;
            };
            // The last port takes the list itself (most apps have one port): no copy.
            service.groups = match index + 1 == service_ports.len() {
                true => groups.take(),
                false => groups.clone(),
            }
            .unwrap_or_default();
            for (spec, value) in port_labels.of_port(index) {
                if let Err(error) = labels::apply(&mut service, spec, index, value) {
                    self.faults
                        .push(Fault::label(candidate.source, error.label, error.message));
                }
            }
            self.health_check_from_port_index(candidate, &mut service, &refused_checks);
            let weight = big_weight(&port_labels, index);
            match self.service_slots.get(&service_port) {
                Some(&slot) => {
                    self.services[first + slot] = service;
                    self.big_weights[first + slot] = weight;
                }
                None => {
                    self.service_slots
                        .insert(service_port, self.services.len() - first);
                    self.services.push(service);
                    self.big_weights.push(weight);
                }
            }
        }
        if self.faults.len() > faults_before {
            self.services.truncate(first);
            self.big_weights.truncate(first);
            return;
        }
        // Most tasks serve every port: sized once, a service's list is not regrown past its
        // task count (a 3-task list would otherwise take room for 4).
        for service in &mut self.services[first..] {
            service.backends.reserve_exact(candidate.tasks.len());
        }
        self.slot_by_index.clear();
        self.slot_by_index
            .extend(service_ports.iter().map(|service_port| {
                service_port.and_then(|service_port| self.service_slots.get(&service_port).copied())
            }));
        for (offset, candidate_task) in candidate.tasks.iter().enumerate() {
            let admitted = self.admitted.get(plan.admitted_from + offset) != Some(&false);
            let task = (candidate_task, admitted);
            self.add_task(candidate, &plan.mode, task, service_ports, first);
        }
    }

    /// Checks the app's health checks against their grammars (`fields`): a check whose path
    /// or protocol is refused is named once and left out of every service that would use it
    /// (`true` at its index). It still decides the service's mode and `--health-check`, as
    /// Marathon still runs it; only HAProxy does not.
    fn refused_health_checks(&mut self, candidate: &Candidate<'_>) -> Vec<bool> {
        let mut refused = Vec::new();
        for (index, check) in candidate.app.health_checks.iter().enumerate() {
            let protocol = fields::check_health_check_protocol(&check.protocol).map_err(|why| {
                (
                    fields::Field::HealthCheckProtocol { index },
                    check.protocol.clone(),
                    why,
                )
            });
            let path = match &check.path {
                Some(path) => fields::check_health_check_path(path)
                    .map_err(|why| (fields::Field::HealthCheckPath { index }, path.clone(), why)),
                None => Ok(()),
            };
            let fault = protocol.and(path).err();
            refused.push(fault.is_some());
            if let Some((field, value, why)) = fault {
                let message = format!("{why}; the health check is left out of HAProxy's checks");
                self.warn(candidate, Reason::Field { field, value }, message);
            }
        }
        refused
    }

    fn new_service(
        &mut self,
        candidate: &Candidate<'_>,
        index: usize,
        service_port: i64,
        refused_checks: &[bool],
    ) -> Option<Service> {
        let Ok(port) = u32::try_from(service_port) else {
            self.faults.push(Fault::definition(
                candidate.source,
                format!("service port {service_port} is out of range"),
            ));
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
                mode = Some(Cow::Borrowed("http"));
            }
        }
        Some(Service {
            enabled: !self.config.strict_mode,
            mode,
            health_check: usable(candidate.app, health_check, refused_checks).map(ServiceCheck::of),
            ..Service::new(&*candidate.id, port)
        })
    }

    /// marathon-lb issue 198: a port without its own health check may borrow another port's
    /// (`HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX`); an HTTP-ish one then forces http mode.
    fn health_check_from_port_index(
        &mut self,
        candidate: &Candidate<'_>,
        service: &mut Service,
        refused_checks: &[bool],
    ) {
        let (None, Some(port_index)) = (
            &service.health_check,
            service.extras().healthcheck_port_index,
        ) else {
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
            service.mode = Some(Cow::Borrowed("http"));
        }
        service.health_check =
            usable(candidate.app, Some(check), refused_checks).map(ServiceCheck::of);
    }

    fn fault_no_protocol(&mut self, candidate: &Candidate<'_>) {
        self.faults.push(Fault::definition(
            candidate.source,
            "a health check has no protocol".to_string(),
        ));
    }

    /// A task's servers; `admitted` is the health-result cache's verdict on it.
    fn add_task(
        &mut self,
        candidate: &Candidate<'_>,
        mode: &Mode,
        (candidate_task, admitted): (&CandidateTask<'_>, bool),
        service_ports: &[Option<i64>],
        first_service: usize,
    ) {
        let task = candidate_task.task;
        if !is_routed(task) || !admitted {
            return;
        }
        // Most agents are named by their IPv4 address: read once, a valid host and its own
        // address.
        let host_is_ipv4 = task.host.parse::<Ipv4Addr>().is_ok();
        let host_check = match host_is_ipv4 {
            true => Ok(()),
            false => fields::check_host(&task.host),
        };
        if let Err(why) = host_check {
            let field = fields::Field::TaskHost {
                task: task.id.clone(),
            };
            let reason = Reason::Field {
                field,
                value: task.host.to_string(),
            };
            self.warn(candidate, reason, format!("{why}; the task is skipped"));
            return;
        }
        let ip = match networking::task_ip(task, mode, host_is_ipv4, self.resolve) {
            Ok(ip) => ip,
            Err(NoAddress::NotAllocated) => return,
            Err(NoAddress::Refused { value, why }) => {
                let field = fields::Field::TaskIpAddress {
                    task: task.id.clone(),
                };
                let reason = Reason::Field { field, value };
                self.warn(candidate, reason, format!("{why}; the task is skipped"));
                return;
            }
            Err(NoAddress::Unresolvable(host)) => {
                let key = (candidate.id.to_string(), host.clone());
                if let Entry::Vacant(entry) = self.unresolvable.entry(key) {
                    entry.insert(self.warnings.len());
                    let message = crate::fetch::resolve::unresolvable_message(&host);
                    self.warn(candidate, Reason::Unservable, message);
                }
                return;
            }
        };
        let task_ports = networking::task_ports(candidate.app, task, mode);
        // Different app versions may have different port counts: match what lines up.
        for (index, (task_port, service_port)) in task_ports.iter().zip(service_ports).enumerate() {
            let slot = self.slot_by_index.get(index).copied().flatten();
            let (Some(service_port), Some(slot)) = (service_port, slot) else {
                continue;
            };
            let Some(port) = task_port.and_then(|port| u32::try_from(port).ok()) else {
                let what = match task_port {
                    Some(port) => format!("port {port} is out of range"),
                    None => "port is null".to_string(),
                };
                let message = format!(
                    "task {}: {what}; not a server of port {service_port}",
                    fields::escaped(&task.id)
                );
                self.warn(candidate, Reason::Unservable, message);
                continue;
            };
            self.services[first_service + slot].backends.push(Backend {
                host: Arc::clone(&task.host),
                ip: Arc::clone(&ip),
                port,
                draining: candidate_task.draining,
            });
        }
    }

    fn warn(&mut self, candidate: &Candidate<'_>, reason: Reason, message: String) {
        self.warnings.push(Warning {
            app_id: candidate.app.id.clone(),
            label: None,
            message,
            app_left_out: false,
            reason,
        });
    }
}

/// `check` unless it is one of the app's refused health checks.
fn usable<'a>(
    app: &App,
    check: Option<&'a HealthCheck>,
    refused_checks: &[bool],
) -> Option<&'a HealthCheck> {
    let check = check?;
    let index = app
        .health_checks
        .iter()
        .position(|candidate| std::ptr::eq(candidate, check));
    match index.and_then(|index| refused_checks.get(index)) {
        Some(true) => None,
        _ => Some(check),
    }
}

#[cfg(test)]
mod corpus_tests;

#[cfg(test)]
mod tests;
