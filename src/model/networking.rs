//! Where an app's tasks are reached: its networking mode, each task's address and ports, and
//! the app's service ports, including marathon-lb's deterministic auto-assignment for IP-per-task
//! apps that Marathon gives none (marathon-lb's `utils.py`). Pure: name resolution is handed in.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sha1::{Digest, Sha1};

use crate::marathon::{App, PortMapping, Task};

/// marathon-lb's networking modes. `Other` is a `networks[].mode` it does not know: such tasks
/// are reached through their agent, with container-style ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Host,
    /// Docker bridge (`BRIDGE` in 1.4, `container/bridge` in 1.5+).
    Bridge,
    /// IP-per-task: Docker `USER`, `container` networks, legacy `ipAddress`.
    Container,
    Other(String),
}

/// The app's networking mode; the last entry of `networks` wins, as in marathon-lb.
pub fn app_mode(app: &App) -> Mode {
    let mut mode = Mode::Host;
    if app.ip_address.as_ref().is_some_and(|ip| !ip.is_empty()) {
        mode = Mode::Container;
    }
    let docker_network = app
        .container
        .as_ref()
        .and_then(|container| container.docker.as_ref())
        .and_then(|docker| docker.network.as_deref());
    match docker_network {
        Some("USER") => mode = Mode::Container,
        Some("BRIDGE") => mode = Mode::Bridge,
        _ => {}
    }
    for network in &app.networks {
        mode = match network.mode.as_deref().unwrap_or("container") {
            "host" => Mode::Host,
            "container" => Mode::Container,
            "container/bridge" => Mode::Bridge,
            other => Mode::Other(other.to_string()),
        };
    }
    mode
}

/// `container.docker.portMappings` when non-empty (1.4), else `container.portMappings` (1.5+).
pub fn port_mappings(app: &App) -> &[PortMapping] {
    let Some(container) = &app.container else {
        return &[];
    };
    match &container.docker {
        Some(docker) if !docker.port_mappings.is_empty() => &docker.port_mappings,
        _ => &container.port_mappings,
    }
}

fn port_definition_ports(app: &App) -> Vec<Option<i64>> {
    let definitions = app.port_definitions.as_deref().unwrap_or(&[]);
    definitions
        .iter()
        .filter_map(|definition| definition.port)
        .map(Some)
        .collect()
}

fn discovery_ports(app: &App) -> Vec<Option<i64>> {
    let Some(ip_address) = app.ip_address.as_ref().filter(|ip| !ip.is_empty()) else {
        return Vec::new();
    };
    let ports = ip_address
        .discovery
        .as_ref()
        .map(|d| d.ports.as_slice())
        .unwrap_or(&[]);
    ports
        .iter()
        .filter_map(|port| port.number)
        .map(Some)
        .collect()
}

fn container_ports(app: &App) -> Vec<Option<i64>> {
    port_mappings(app)
        .iter()
        .filter_map(|m| m.container_port)
        .map(Some)
        .collect()
}

/// The ports a task serves on, in port-index order (`None`: Marathon listed a `null` port).
/// Borrowed when they are the task's own (the common case: no copy per task).
pub fn task_ports<'a>(app: &App, task: &'a Task, mode: &Mode) -> Cow<'a, [Option<i64>]> {
    match mode {
        Mode::Host => {
            if !task.ports.is_empty() {
                return Cow::Borrowed(&task.ports[..]);
            }
            Cow::Owned(port_definition_ports(app))
        }
        Mode::Bridge => {
            if !task.ports.is_empty() {
                return Cow::Borrowed(&task.ports[..]);
            }
            // Marathon < 1.5 lists bridge ports as port definitions.
            let ports = port_definition_ports(app);
            if !ports.is_empty() {
                return Cow::Owned(ports);
            }
            Cow::Owned(container_ports(app))
        }
        Mode::Container | Mode::Other(_) => {
            let ports = discovery_ports(app);
            if !ports.is_empty() {
                return Cow::Owned(ports);
            }
            Cow::Owned(container_ports(app))
        }
    }
}

/// Why a task has no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoAddress {
    /// IP-per-task without an allocated IP yet (normal while a task starts).
    NotAllocated,
    /// The agent's name does not resolve.
    Unresolvable(String),
    /// The task's own address is not an IP address (`fields::check_ip_address`).
    Refused { value: String, why: String },
}

/// The address a task is reached at: its own IP for IP-per-task, else its agent's address. A
/// dotted-quad agent is its own address (`host_is_ipv4`: the host parses as an
/// [`std::net::Ipv4Addr`], read once per task by the caller, which checks the host with it);
/// other names go through `resolve`.
pub fn task_ip(
    task: &Task,
    mode: &Mode,
    host_is_ipv4: bool,
    resolve: &dyn Fn(&str) -> Option<std::net::IpAddr>,
) -> Result<Arc<str>, NoAddress> {
    // The task's own text is shared, not copied: every server of every port of a task holds
    // it, and most clusters name their agents by address.
    if *mode == Mode::Container {
        return match &task.ip_address {
            Some(ip) if !ip.is_empty() => match super::fields::check_ip_address(ip) {
                Ok(()) => Ok(Arc::clone(ip)),
                Err(why) => Err(NoAddress::Refused {
                    value: ip.to_string(),
                    why,
                }),
            },
            _ => Err(NoAddress::NotAllocated),
        };
    }
    let host = &*task.host;
    if host_is_ipv4 {
        return Ok(Arc::clone(&task.host));
    }
    if host.is_empty() {
        return Err(NoAddress::Unresolvable(String::new()));
    }
    resolve(host)
        .map(|ip| Arc::from(ip.to_string()))
        .ok_or_else(|| NoAddress::Unresolvable(host.to_string()))
}

/// marathon-lb gives up hashing after this many clashes and takes the first free port.
const MAX_CLASHES: u32 = 50;

/// Service ports for IP-per-task apps Marathon gave none (Marathon issue 3636): hashed from
/// app id and task port into `min..=max`, avoiding ports already handed out in this run, so the
/// result depends only on the apps and their order. `0` as either bound disables it.
#[derive(Debug, Clone)]
pub struct ServicePortAssigner {
    min_port: i64,
    max_port: i64,
    can_assign: bool,
    /// (app id, task port) → assigned port; `None` once the range ran out. Its length counts
    /// towards exhaustion, as in marathon-lb.
    assigned: HashMap<(String, i64), Option<i64>>,
    used: HashSet<i64>,
}

/// A service port could not be assigned: the range is used up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsExhausted;

impl ServicePortAssigner {
    pub fn new(min_port: u32, max_port: u32) -> ServicePortAssigner {
        ServicePortAssigner {
            min_port: i64::from(min_port),
            max_port: i64::from(max_port),
            can_assign: min_port != 0 && max_port != 0,
            assigned: HashMap::new(),
            used: HashSet::new(),
        }
    }

    /// The app's service ports in port-index order; `None` marks an undefined one (a `null` in
    /// the legacy `ports` list, or an auto-assignment that found the range used up).
    pub fn service_ports(
        &mut self,
        app_id: &str,
        app: &App,
        first_task: Option<&Task>,
        mode: &Mode,
    ) -> (Vec<Option<i64>>, Option<PortsExhausted>) {
        if matches!(mode, Mode::Container | Mode::Bridge) {
            let ports: Vec<Option<i64>> = port_mappings(app)
                .iter()
                .filter_map(|m| m.service_port)
                .map(Some)
                .collect();
            if !ports.is_empty() {
                return (ports, None);
            }
        }
        let ports = match &app.port_definitions {
            Some(_) => port_definition_ports(app),
            None => app.ports.clone(),
        };
        if !ports.is_empty() || *mode != Mode::Container || !self.can_assign {
            return (ports, None);
        }
        // Legacy IP-per-task (Marathon ≤ 1.4): ports come from the first task's view.
        let Some(task) = first_task else {
            return (ports, None);
        };
        let mut exhausted = None;
        let assigned = task_ports(app, task, mode)
            .iter()
            .flatten()
            .map(|&task_port| {
                let port = self.assign(app_id, task_port);
                if port.is_none() {
                    exhausted = Some(PortsExhausted);
                }
                port
            })
            .collect();
        (assigned, exhausted)
    }

    fn assign(&mut self, app_id: &str, task_port: i64) -> Option<i64> {
        let key = (app_id.to_string(), task_port);
        if let Some(Some(port)) = self.assigned.get(&key) {
            return Some(*port);
        }
        let port = self.new_port(app_id, task_port);
        if let Some(port) = port {
            self.used.insert(port);
        }
        self.assigned.insert(key, port);
        port
    }

    fn new_port(&self, app_id: &str, task_port: i64) -> Option<i64> {
        let range_size = self.max_port - self.min_port + 1;
        if range_size <= self.assigned.len() as i64 {
            return None;
        }
        for attempt in 0..MAX_CLASHES {
            let digest = Sha1::digest(format!("{app_id}-{task_port}-{attempt}").as_bytes());
            let hash = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
            let trial = self.min_port + i64::from(hash) % range_size;
            if !self.used.contains(&trial) {
                return Some(trial);
            }
        }
        (self.min_port..=self.max_port).find(|port| !self.used.contains(port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::task_ip`] with the host read as the model reads it.
    fn task_ip(
        task: &Task,
        mode: &Mode,
        resolve: &dyn Fn(&str) -> Option<std::net::IpAddr>,
    ) -> Result<Arc<str>, NoAddress> {
        let host_is_ipv4 = task.host.parse::<std::net::Ipv4Addr>().is_ok();
        super::task_ip(task, mode, host_is_ipv4, resolve)
    }

    fn app(json: &str) -> App {
        serde_json::from_str(json).unwrap()
    }

    fn task(json: &str) -> Task {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn modes_of_every_marathon_shape() {
        assert_eq!(app_mode(&app(r#"{"id": "/a"}"#)), Mode::Host);
        assert_eq!(
            app_mode(&app(r#"{"id": "/a", "ipAddress": {}}"#)),
            Mode::Host
        );
        assert_eq!(
            app_mode(&app(
                r#"{"id": "/a", "ipAddress": {"networkName": "dcos"}}"#
            )),
            Mode::Container
        );
        assert_eq!(
            app_mode(&app(
                r#"{"id": "/a", "container": {"docker": {"network": "BRIDGE"}}}"#
            )),
            Mode::Bridge
        );
        assert_eq!(
            app_mode(&app(
                r#"{"id": "/a", "container": {"docker": {"network": "USER"}}}"#
            )),
            Mode::Container
        );
        assert_eq!(
            app_mode(&app(
                r#"{"id": "/a", "container": {"docker": {"network": "HOST"}}}"#
            )),
            Mode::Host
        );
        assert_eq!(
            app_mode(&app(
                r#"{"id": "/a", "networks": [{"mode": "container/bridge"}]}"#
            )),
            Mode::Bridge
        );
        assert_eq!(
            app_mode(&app(r#"{"id": "/a", "networks": [{"name": "dcos"}]}"#)),
            Mode::Container
        );
        assert_eq!(
            app_mode(&app(
                r#"{"id": "/a", "ipAddress": {"networkName": "x"}, "networks": [{"mode": "host"}]}"#
            )),
            Mode::Host
        );
        assert_eq!(
            app_mode(&app(r#"{"id": "/a", "networks": [{"mode": "weird"}]}"#)),
            Mode::Other("weird".into())
        );
    }

    #[test]
    fn host_task_ports_fall_back_to_port_definitions() {
        let a = app(r#"{"id": "/a", "portDefinitions": [{"port": 10000}, {"name": "x"}]}"#);
        assert_eq!(
            *task_ports(&a, &task(r#"{"ports": [31000]}"#), &Mode::Host),
            [Some(31000)]
        );
        assert_eq!(
            *task_ports(&a, &task(r#"{"ports": []}"#), &Mode::Host),
            [Some(10000)]
        );
    }

    #[test]
    fn bridge_task_ports_fall_back_to_container_ports() {
        let a = app(
            r#"{"id": "/a", "container": {"portMappings": [{"containerPort": 80, "servicePort": 10001}]}}"#,
        );
        assert_eq!(*task_ports(&a, &task(r#"{}"#), &Mode::Bridge), [Some(80)]);
        assert_eq!(
            *task_ports(&a, &task(r#"{"ports": [31005]}"#), &Mode::Bridge),
            [Some(31005)]
        );
    }

    #[test]
    fn container_task_ports_prefer_discovery_then_container_ports() {
        let legacy = app(
            r#"{"id": "/a", "ipAddress": {"discovery": {"ports": [{"number": 8080}, {"name": "x"}]}}}"#,
        );
        let t = task(r#"{"ports": [31000]}"#);
        assert_eq!(*task_ports(&legacy, &t, &Mode::Container), [Some(8080)]);
        let user = app(r#"{"id": "/a", "container": {"docker": {"network": "USER",
                "portMappings": [{"containerPort": 9000, "servicePort": 10009}]}}}"#);
        assert_eq!(*task_ports(&user, &t, &Mode::Container), [Some(9000)]);
    }

    #[test]
    fn task_ip_for_container_uses_first_task_address() {
        let resolve = |_: &str| -> Option<std::net::IpAddr> { panic!("no resolution expected") };
        let with_ip = task(r#"{"host": "agent", "ipAddresses": [{"ipAddress": "9.0.0.2"}]}"#);
        assert_eq!(
            task_ip(&with_ip, &Mode::Container, &resolve),
            Ok("9.0.0.2".into())
        );
        let empty = task(r#"{"host": "agent", "ipAddresses": [{"ipAddress": ""}]}"#);
        assert_eq!(
            task_ip(&empty, &Mode::Container, &resolve),
            Err(NoAddress::NotAllocated)
        );
        let none = task(r#"{"host": "agent"}"#);
        assert_eq!(
            task_ip(&none, &Mode::Container, &resolve),
            Err(NoAddress::NotAllocated)
        );
    }

    #[test]
    fn task_ip_resolves_names_but_not_dotted_quads() {
        let resolve = |host: &str| (host == "agent-1").then(|| "10.0.0.7".parse().unwrap());
        let quad = task(r#"{"host": "10.1.2.3"}"#);
        assert_eq!(
            task_ip(&quad, &Mode::Host, &|_| None),
            Ok("10.1.2.3".into())
        );
        let named = task(r#"{"host": "agent-1"}"#);
        assert_eq!(
            task_ip(&named, &Mode::Bridge, &resolve),
            Ok("10.0.0.7".into())
        );
        let unknown = task(r#"{"host": "agent-2"}"#);
        assert_eq!(
            task_ip(&unknown, &Mode::Host, &resolve),
            Err(NoAddress::Unresolvable("agent-2".into()))
        );
    }

    #[test]
    fn service_ports_by_mode() {
        let mut assigner = ServicePortAssigner::new(10050, 10100);
        let bridge = app(
            r#"{"id": "/a", "networks": [{"mode": "container/bridge"}], "portDefinitions": [],
                "container": {"portMappings": [{"servicePort": 10001}, {"containerPort": 1}]}}"#,
        );
        let (ports, _) = assigner.service_ports("/a", &bridge, None, &Mode::Bridge);
        assert_eq!(ports, [Some(10001)]);
        let legacy = app(r#"{"id": "/a", "ports": [10002, null]}"#);
        let (ports, _) = assigner.service_ports("/a", &legacy, None, &Mode::Host);
        assert_eq!(ports, [Some(10002), None]);
        let both = app(r#"{"id": "/a", "ports": [10002], "portDefinitions": []}"#);
        let (ports, _) = assigner.service_ports("/a", &both, None, &Mode::Host);
        assert!(ports.is_empty());
    }

    /// Ports the Python implementation assigns for these requests (hash of "/app-8080-0" etc.).
    #[test]
    fn auto_assignment_hashes_app_id_and_task_port() {
        let legacy = app(
            r#"{"id": "/legacy", "ipAddress": {"discovery": {"ports": [{"number": 8080}, {"number": 8081}]}}}"#,
        );
        let t = task(r#"{"id": "t1", "ipAddresses": [{"ipAddress": "9.0.0.1"}]}"#);
        let mut assigner = ServicePortAssigner::new(10050, 10100);
        let (ports, exhausted) =
            assigner.service_ports("/legacy", &legacy, Some(&t), &Mode::Container);
        let expected = |key: &str| {
            let digest = Sha1::digest(key.as_bytes());
            10050
                + i64::from(u32::from_be_bytes([
                    digest[0], digest[1], digest[2], digest[3],
                ])) % 51
        };
        assert_eq!(
            ports,
            [
                Some(expected("/legacy-8080-0")),
                Some(expected("/legacy-8081-0"))
            ]
        );
        assert_eq!(exhausted, None);
        // Asking again for the same app and task port gives the same answer.
        let (again, _) = assigner.service_ports("/legacy", &legacy, Some(&t), &Mode::Container);
        assert_eq!(again, ports);
        // Without tasks there is nothing to hash from.
        let mut fresh = ServicePortAssigner::new(10050, 10100);
        assert!(fresh
            .service_ports("/legacy", &legacy, None, &Mode::Container)
            .0
            .is_empty());
    }

    #[test]
    fn auto_assignment_avoids_clashes_and_runs_out() {
        let legacy = app(
            r#"{"id": "/x", "ipAddress": {"discovery": {"ports": [{"number": 1}, {"number": 2}, {"number": 3}]}}}"#,
        );
        let t = task(r#"{"id": "t"}"#);
        let mut assigner = ServicePortAssigner::new(20000, 20001);
        let (ports, exhausted) = assigner.service_ports("/x", &legacy, Some(&t), &Mode::Container);
        assert_eq!(ports.len(), 3);
        let mut given: Vec<i64> = ports.iter().flatten().copied().collect();
        given.sort();
        assert_eq!(given, [20000, 20001]);
        assert_eq!(ports[2], None);
        assert_eq!(exhausted, Some(PortsExhausted));
    }

    #[test]
    fn auto_assignment_disabled_by_zero_bounds() {
        let legacy = app(r#"{"id": "/x", "ipAddress": {"discovery": {"ports": [{"number": 1}]}}}"#);
        let t = task(r#"{"id": "t"}"#);
        let mut assigner = ServicePortAssigner::new(0, 0);
        assert!(assigner
            .service_ports("/x", &legacy, Some(&t), &Mode::Container)
            .0
            .is_empty());
    }
}
