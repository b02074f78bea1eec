//! The service model: Marathon apps + tasks → services with their backends, with marathon-lb's
//! label semantics. Pure: no I/O (name resolution is handed in as a function); never aborts on
//! one bad app or label, it leaves that app out and records a [`Warning`] naming app and label.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::ModelConfig;
use crate::fetch::api::{App, HealthCheck, Task};

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
#[derive(Debug, Clone)]
pub struct Service {
    /// Marathon app id with its leading `/` (rewritten to the deployment group for blue/green).
    pub app_id: String,
    pub service_port: u32,
    /// In insertion order; `render` sorts them by (host, port).
    pub backends: Vec<Backend>,
    /// `HAPROXY_{n}_VHOST`, lower-cased, possibly a comma-separated list.
    pub hostname: Option<String>,
    pub path: Option<String>,
    pub proxypath: Option<String>,
    pub revproxypath: Option<String>,
    pub redirpath: Option<String>,
    pub auth: Option<Auth>,
    pub sticky: bool,
    pub enabled: bool,
    pub redirect_http_to_https: bool,
    pub use_hsts: bool,
    pub ssl_cert: Option<String>,
    pub bind_options: Option<String>,
    /// `HAPROXY_{n}_BIND_ADDR`, default `*`.
    pub bind_addr: String,
    /// App-level groups (`HAPROXY_GROUP`, comma-separated).
    pub groups: Vec<String>,
    /// Per-port groups (`HAPROXY_{n}_GROUP`); when non-empty they replace `groups`.
    pub haproxy_groups: Vec<String>,
    /// `HAPROXY_{n}_MODE` lower-cased, or `http` when the health check is HTTP; `None` lets
    /// render choose (`http` with a vhost, else `tcp`).
    pub mode: Option<String>,
    /// `HAPROXY_{n}_BALANCE`, default `roundrobin`.
    pub balance: String,
    pub health_check: Option<HealthCheck>,
    /// Raw template labels of this port, keyed by template name without prefix
    /// (`BACKEND_HEAD` for `HAPROXY_0_BACKEND_HEAD`), CRLF normalised to LF.
    pub template_labels: BTreeMap<String, String>,
    pub backend_weight: i64,
    /// `HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL`: space-separated networks.
    pub network_allowed: Option<String>,
    pub healthcheck_port_index: Option<i64>,
}

/// Something the model left out or could not honour; the run goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub app_id: String,
    /// The label at fault, when one is.
    pub label: Option<String>,
    pub message: String,
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

/// Resolves an agent host name to an address; `None` when it cannot be resolved.
pub type Resolver<'a> = &'a dyn Fn(&str) -> Option<IpAddr>;

/// Builds the model from Marathon's apps and tasks (tasks joined to apps by `appId`).
pub fn build(
    apps: &[App],
    tasks: &[Task],
    config: &ModelConfig,
    resolve: Resolver<'_>,
) -> (Model, Vec<Warning>) {
    let _ = (apps, tasks, config, resolve);
    (Model::default(), Vec::new())
}
