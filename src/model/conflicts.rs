//! Two apps claiming one thing in the same configuration: a service port both bind, or a
//! virtual host (and path) both route. marathon-lb renders both without a word; so do we, byte
//! for byte, but each conflict is a [`Warning`] naming both apps, what they share, and which one
//! actually gets the traffic. Pure: it reads the model and the render settings, changes nothing.
//!
//! An app whose listener takes the port of a shared listener (a bind of a section that belongs
//! to no app: the head's, the :80/:443 and :9091 frontends') is a [`SharedPortTaken`]: a
//! warning like the others by default, since marathon-lb renders it too; with
//! `--protect-shared-listeners`, `exclusion` leaves that app out, since otherwise it takes a
//! share of every other app's connections to that listener.
//!
//! Who gets the traffic, as HAProxy runs marathon-lb's output:
//! - Two frontends binding the same address and port both bind (HAProxy sets `SO_REUSEPORT`),
//!   and the kernel spreads new connections between them. A specific address beside `*` takes
//!   the connections to that address; `*` takes the rest.
//! - In the shared :80/:443 frontends the first matching `use_backend` rule wins. Rules are
//!   sorted by `HAPROXY_{n}_BACKEND_WEIGHT`, largest first, and otherwise come in the order
//!   services are rendered (app id, then service port). With `--haproxy-map`, a vhost without
//!   path, auth or redirect is routed through `domain2backend.map`, whose rule sorts as weight
//!   -1 and whose first line for a host wins.

use std::cmp::Reverse;
use std::fmt;

use crate::config::RenderConfig;

use super::{fields, Model, Reason, Service, Warning};

/// The conflicts among the services `render` renders with `config`.
pub fn find(model: &Model, config: &RenderConfig) -> Vec<Warning> {
    let mut services: Vec<&Service> = model
        .services
        .iter()
        .filter(|service| service.is_rendered(&config.groups))
        .collect();
    // render's order, which decides the order of the shared frontends' rules.
    services.sort_by(|a, b| (&a.app_id, a.service_port).cmp(&(&b.app_id, b.service_port)));
    let mut warnings = listener_conflicts(&services);
    if config.bind_http_https {
        warnings.extend(vhost_conflicts(&services, config.haproxy_map));
    }
    warnings
}

fn is_wildcard(bind_addr: &str) -> bool {
    matches!(bind_addr, "*" | "" | "0.0.0.0" | "::" | "[::]")
}

/// Whether two bind addresses take the same connections: either is a wildcard, or both are the
/// same address. Distinct specific addresses do not overlap.
fn overlaps(a: &str, b: &str) -> bool {
    is_wildcard(a) || is_wildcard(b) || a == b
}

/// One address and port range bound by a section that belongs to no app, as rendered (`render`
/// reads it from the text of those sections, so an operator's template is what counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedListener {
    /// The section's opening line, e.g. `frontend marathon_http_in`.
    pub section: String,
    /// The bind's address as written (`*`, `0.0.0.0`, a specific address; `[]` removed).
    pub address: String,
    /// The first and last port it binds.
    pub ports: (u32, u32),
}

impl SharedListener {
    fn takes(&self, bind_addr: &str, port: u32) -> bool {
        (self.ports.0..=self.ports.1).contains(&port) && overlaps(&self.address, bind_addr)
    }
}

impl fmt::Display for SharedListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let address = if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        };
        match self.ports {
            (first, last) if first == last => {
                write!(f, "{} (bind {address}:{first})", self.section)
            }
            (first, last) => write!(f, "{} (bind {address}:{first}-{last})", self.section),
        }
    }
}

/// A rendered service whose own listener takes the port of a shared listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPortTaken {
    pub app_id: String,
    pub service_port: u32,
    pub bind_addr: String,
    pub listener: SharedListener,
}

impl fmt::Display for SharedPortTaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service port {port} (bind {addr}:{port}) is a port of the shared listener {}, \
             whose new connections HAProxy would split with this app",
            self.listener,
            port = self.service_port,
            addr = self.bind_addr,
        )
    }
}

impl SharedPortTaken {
    /// The warning given when the app is rendered anyway, as marathon-lb renders it.
    pub fn into_warning(self) -> Warning {
        let message = format!(
            "{self}; rendered as marathon-lb renders it (--protect-shared-listeners leaves the \
             app out)"
        );
        Warning {
            app_id: self.app_id,
            label: None,
            message,
            app_left_out: false,
            reason: Reason::Conflict,
        }
    }
}

/// The rendered services of `model` whose listener (bind address and service port, as the
/// model knows them) overlaps one of `shared`: the first such listener for each, in the
/// model's order.
pub fn shared_ports_taken(
    model: &Model,
    groups: &[String],
    shared: &[SharedListener],
) -> Vec<SharedPortTaken> {
    model
        .services
        .iter()
        .filter(|service| service.is_rendered(groups))
        .filter_map(|service| {
            let listener = shared
                .iter()
                .find(|listener| listener.takes(&service.bind_addr, service.service_port))?;
            Some(SharedPortTaken {
                app_id: service.app_id.clone(),
                service_port: service.service_port,
                bind_addr: service.bind_addr.to_string(),
                listener: listener.clone(),
            })
        })
        .collect()
}

fn listener_conflicts(services: &[&Service]) -> Vec<Warning> {
    // Sorted, not mapped: a list per port was most of the cost at 10,000 apps. The sort is
    // stable, so the services sharing a port stay in render's order.
    let mut by_port = services.to_vec();
    by_port.sort_by_key(|service| service.service_port);
    let mut warnings = Vec::new();
    for sharing in by_port.chunk_by(|a, b| a.service_port == b.service_port) {
        let port = sharing[0].service_port;
        for (at, later) in sharing.iter().enumerate() {
            for earlier in &sharing[..at] {
                let (a, b) = (&earlier.bind_addr, &later.bind_addr);
                let traffic = if a == b || (is_wildcard(a) && is_wildcard(b)) {
                    "both bind it and HAProxy splits its new connections between them".to_string()
                } else if is_wildcard(a) {
                    format!(
                        "connections to {b} go to {}, the rest to {}",
                        shown_app(later),
                        shown_app(earlier)
                    )
                } else if is_wildcard(b) {
                    format!(
                        "connections to {a} go to {}, the rest to {}",
                        shown_app(earlier),
                        shown_app(later)
                    )
                } else {
                    continue;
                };
                let message = format!(
                    "service port {port} (bind {b}:{port}) is also bound by app {} \
                     (bind {a}:{port}): {traffic}",
                    shown_app(earlier)
                );
                warnings.push(conflict(later, message));
            }
        }
    }
    warnings
}

/// How one service's rule for a vhost sorts in the shared frontends: largest weight first,
/// then the earlier rule, then (for the map's lines) the earlier line.
type RulePlace = (Reverse<i64>, usize, usize);

fn vhost_conflicts(services: &[&Service], haproxy_map: bool) -> Vec<Warning> {
    let routed_by_map = |service: &Service| {
        haproxy_map
            && service.path.as_deref().unwrap_or("").is_empty()
            && service
                .extras()
                .auth
                .as_ref()
                .is_none_or(|auth| auth.realm.is_empty())
            && !service.redirect_http_to_https
    };
    let with_vhost: Vec<&Service> = services
        .iter()
        .copied()
        .filter(|service| !service.hostname.as_deref().unwrap_or("").is_empty())
        .collect();
    let map_rule = with_vhost
        .iter()
        .position(|service| routed_by_map(service))
        .unwrap_or(0);
    // Each (host, path) a service routes, with where its rule sorts; sorted, the claims on one
    // vhost are neighbours in the order of their rules. A place belongs to one service alone,
    // so a service naming a host twice claims it once.
    let mut claims: Vec<(&str, &str, RulePlace, &Service)> = Vec::with_capacity(with_vhost.len());
    for (at, service) in with_vhost.iter().enumerate() {
        let place = if routed_by_map(service) {
            (Reverse(-1), map_rule, at)
        } else {
            (Reverse(service.backend_weight), at, 0)
        };
        let path = service.path.as_deref().unwrap_or("");
        let hosts = service.hostname.as_deref().unwrap_or("").split(',');
        for host in hosts.map(|host| host.trim_matches(' ')) {
            claims.push((host, path, place, service));
        }
    }
    claims.sort_unstable_by(|a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
    claims.dedup_by(|a, b| (a.0, a.1, a.2) == (b.0, b.1, b.2));
    let mut warnings = Vec::new();
    for claimants in claims.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
        if claimants.len() < 2 {
            continue;
        }
        let (host, path) = (claimants[0].0, claimants[0].1);
        let (_, _, winner_place, winner) = claimants[0];
        let (_, _, runner_up_place, runner_up) = claimants[1];
        let why = match (routed_by_map(winner), routed_by_map(runner_up)) {
            (true, true) => "its line comes first in domain2backend.map",
            (true, false) => "the domain2backend.map rule comes before a weight below -1",
            (false, true) => "its own rule comes before the domain2backend.map rule",
            (false, false) if runner_up_place.0 != winner_place.0 => {
                "its HAPROXY_{n}_BACKEND_WEIGHT is larger"
            }
            (false, false) => "same weight, and its rule comes first: its app id sorts first",
        };
        let vhost = match path {
            "" => format!("vhost {}", fields::escaped(host)),
            path => format!(
                "vhost {} with path {}",
                fields::escaped(host),
                fields::shown(path)
            ),
        };
        for (_, _, _, loser) in &claimants[1..] {
            let message = format!(
                "{vhost} is also claimed by app {}; requests for it go to {} ({why})",
                shown_app(winner),
                fields::escaped(&winner.app_id)
            );
            warnings.push(conflict(loser, message));
        }
    }
    warnings
}

fn shown_app(service: &Service) -> String {
    format!(
        "{} (service port {})",
        fields::escaped(&service.app_id),
        service.service_port
    )
}

fn conflict(service: &Service, message: String) -> Warning {
    Warning {
        app_id: service.app_id.clone(),
        label: None,
        message,
        app_left_out: false,
        reason: Reason::Conflict,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Backend;

    fn service(app_id: &str, port: u32) -> Service {
        Service {
            backends: vec![Backend {
                host: "10.0.0.1".into(),
                ip: "10.0.0.1".into(),
                port: 31000,
                draining: false,
            }],
            groups: vec!["external".into()],
            ..Service::new(app_id, port)
        }
    }

    fn config(haproxy_map: bool) -> RenderConfig {
        let mut config = crate::config::Config::new(Vec::new(), "/etc/haproxy/haproxy.cfg".into());
        config.render.groups = vec!["external".into()];
        config.render.haproxy_map = haproxy_map;
        config.render
    }

    fn messages(services: Vec<Service>, haproxy_map: bool) -> Vec<String> {
        find(&Model { services }, &config(haproxy_map))
            .iter()
            .map(Warning::to_string)
            .collect()
    }

    #[test]
    fn two_apps_on_one_service_port_are_named_with_who_gets_it() {
        assert_eq!(
            messages(
                vec![service("/dup/two", 10851), service("/dup/one", 10851)],
                false
            ),
            [
                "app /dup/two: service port 10851 (bind *:10851) is also bound by app /dup/one \
              (service port 10851) (bind *:10851): both bind it and HAProxy splits its new \
              connections between them"
            ]
        );
        let local = Service {
            bind_addr: "127.0.0.1".into(),
            ..service("/b", 10000)
        };
        assert_eq!(
            messages(vec![service("/a", 10000), local], false),
            [
                "app /b: service port 10000 (bind 127.0.0.1:10000) is also bound by app /a \
              (service port 10000) (bind *:10000): connections to 127.0.0.1 go to /b \
              (service port 10000), the rest to /a (service port 10000)"
            ]
        );
        let apart = |addr: &str, id: &str| Service {
            bind_addr: addr.to_string().into(),
            ..service(id, 10000)
        };
        assert!(messages(
            vec![apart("10.0.0.1", "/a"), apart("10.0.0.2", "/b")],
            false
        )
        .is_empty());
    }

    #[test]
    fn only_services_that_are_rendered_conflict() {
        let elsewhere = Service {
            groups: vec!["internal".into()],
            ..service("/b", 10000)
        };
        let empty = Service {
            backends: Vec::new(),
            ..service("/c", 10000)
        };
        let disabled = Service {
            enabled: false,
            ..service("/d", 10000)
        };
        assert!(messages(
            vec![service("/a", 10000), elsewhere, empty, disabled],
            false
        )
        .is_empty());
    }

    #[test]
    fn a_shared_vhost_goes_to_the_first_rule() {
        let vhost = |id: &str, port: u32, host: &str, weight: i64| Service {
            hostname: Some(host.into()),
            backend_weight: weight,
            ..service(id, port)
        };
        assert_eq!(
            messages(
                vec![
                    vhost("/b", 10001, "shop.example.com", 0),
                    vhost("/a", 10000, "www.example.com, shop.example.com", 0)
                ],
                false
            ),
            [
                "app /b: vhost shop.example.com is also claimed by app /a (service port 10000); \
              requests for it go to /a (same weight, and its rule comes first: its app id sorts \
              first)"
            ]
        );
        assert_eq!(
            messages(
                vec![
                    vhost("/a", 10000, "shop.example.com", 0),
                    vhost("/b", 10001, "shop.example.com", 5)
                ],
                false
            ),
            [
                "app /a: vhost shop.example.com is also claimed by app /b (service port 10001); \
              requests for it go to /b (its HAPROXY_{n}_BACKEND_WEIGHT is larger)"
            ]
        );
        // Different paths on one host are routing, not a conflict; the same path is.
        let with_path = |id: &str, port: u32, path: &str| Service {
            path: Some(path.into()),
            backend_weight: 1,
            ..vhost(id, port, "shop.example.com", 0)
        };
        assert!(messages(
            vec![with_path("/a", 10000, "/x"), with_path("/b", 10001, "/y")],
            false
        )
        .is_empty());
        assert_eq!(
            messages(
                vec![with_path("/a", 10000, "/x"), with_path("/b", 10001, "/x")],
                false
            ),
            [
                "app /b: vhost shop.example.com with path \"/x\" is also claimed by app /a \
              (service port 10000); requests for it go to /a (same weight, and its rule comes \
              first: its app id sorts first)"
            ]
        );
        // Through the map, the first line wins; a weighted ACL rule still beats the map.
        assert_eq!(
            messages(
                vec![
                    vhost("/a", 10000, "shop.example.com", 7),
                    vhost("/b", 10001, "shop.example.com", 7)
                ],
                true
            ),
            [
                "app /b: vhost shop.example.com is also claimed by app /a (service port 10000); \
              requests for it go to /a (its line comes first in domain2backend.map)"
            ]
        );
        let mut auth = vhost("/z", 10002, "shop.example.com", 0);
        auth.extras_mut().auth = Some(crate::model::Auth {
            realm: "r".into(),
            user: "u".into(),
            password: "p".into(),
        });
        assert_eq!(
            messages(vec![vhost("/a", 10000, "shop.example.com", 0), auth], true),
            [
                "app /a: vhost shop.example.com is also claimed by app /z (service port 10002); \
              requests for it go to /z (its own rule comes before the domain2backend.map rule)"
            ]
        );
    }

    #[test]
    fn a_listener_on_a_shared_port_is_taken_unless_both_addresses_are_specific_and_apart() {
        let shared = |address: &str, ports: (u32, u32)| SharedListener {
            section: "frontend marathon_http_in".into(),
            address: address.into(),
            ports,
        };
        let on = |addr: &str, id: &str, port: u32| Service {
            bind_addr: addr.to_string().into(),
            ..service(id, port)
        };
        let taken = |services: Vec<Service>, listeners: &[SharedListener]| -> Vec<String> {
            let groups = ["external".to_string()];
            shared_ports_taken(&Model { services }, &groups, listeners)
                .iter()
                .map(|taken| format!("{}: {taken}", taken.app_id))
                .collect()
        };
        assert_eq!(
            taken(
                vec![on("*", "/b", 80), on("*", "/a", 10000)],
                &[shared("*", (80, 80))]
            ),
            [
                "/b: service port 80 (bind *:80) is a port of the shared listener frontend \
                 marathon_http_in (bind *:80), whose new connections HAProxy would split with \
                 this app"
            ]
        );
        // A wildcard on either side overlaps; a port range counts each of its ports.
        assert_eq!(
            taken(
                vec![on("10.0.0.1", "/a", 80)],
                &[shared("0.0.0.0", (80, 80))]
            )
            .len(),
            1
        );
        assert_eq!(
            taken(
                vec![on("*", "/a", 8005)],
                &[shared("10.0.0.1", (8000, 8010))]
            )
            .len(),
            1
        );
        assert_eq!(
            taken(
                vec![on("10.0.0.1", "/a", 80)],
                &[shared("10.0.0.1", (80, 80))]
            )
            .len(),
            1
        );
        assert!(taken(
            vec![on("10.0.0.2", "/a", 80)],
            &[shared("10.0.0.1", (80, 80))]
        )
        .is_empty());
        assert!(taken(vec![on("*", "/a", 8011)], &[shared("*", (8000, 8010))]).is_empty());
        // A service not rendered binds nothing.
        let idle = Service {
            backends: Vec::new(),
            ..service("/idle", 80)
        };
        assert!(taken(vec![idle], &[shared("*", (80, 80))]).is_empty());
    }
}
