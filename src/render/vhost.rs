//! The virtual-host routing of one service in the shared :80 and :443 frontends (marathon-lb's
//! `generateHttpVhostAcl`): host/path/auth ACLs, redirects to https, map-file routing and the
//! per-vhost SNI table of `--group-https-by-vhost`. Every branch mirrors marathon-lb's, since
//! the order and choice of templates decide the bytes of the output.

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;

use super::format::Value;
use super::server_id::sanitize;
use super::templates::{Name, Templates};
use super::without_first_char;
use crate::model::Service;

/// What one vhost gathers under `--group-https-by-vhost`.
#[derive(Debug, Default)]
pub struct GroupedVhost {
    /// `(backend weight, text)` in generation order; sorted by weight when rendered.
    pub acls: Vec<(i64, String)>,
    /// `HAPROXY_{n}_SSL_CERT` values of the services on this vhost (a set in marathon-lb).
    pub certs: Vec<String>,
    /// `HAPROXY_{n}_BIND_OPTIONS` values (a set in marathon-lb).
    pub bind_options: Vec<String>,
}

impl GroupedVhost {
    /// Merges another service's entry for the same vhost (marathon-lb's `mergeVhostTable`).
    pub fn merge(&mut self, other: GroupedVhost) {
        self.acls.extend(other.acls);
        for cert in other.certs {
            insert_unique(&mut self.certs, cert);
        }
        for options in other.bind_options {
            insert_unique(&mut self.bind_options, options);
        }
    }
}

fn insert_unique(set: &mut Vec<String>, value: String) {
    if !set.contains(&value) {
        set.push(value);
    }
}

/// State shared by every service of one render under `--haproxy-map`: the map lines so far and
/// which map `use_backend` lines were already emitted (each is emitted once).
#[derive(Debug, Default)]
pub struct MapState {
    /// `domain2backend.map` lines in generation order, each (host, backend) pair once.
    pub domains: Vec<(String, String)>,
    /// `app2backend.map` lines in generation order, each (app id, backend) pair once.
    pub apps: Vec<(String, String)>,
    seen_domains: HashSet<(String, String)>,
    seen_apps: HashSet<(String, String)>,
    pub http_acl_emitted: bool,
    pub https_acl_emitted: bool,
    pub appid_acl_emitted: bool,
}

impl MapState {
    pub fn add_domain(&mut self, host: &str, backend: &str) {
        add_unique(&mut self.domains, &mut self.seen_domains, host, backend);
    }

    pub fn add_app(&mut self, app_id: &str, backend: &str) {
        add_unique(&mut self.apps, &mut self.seen_apps, app_id, backend);
    }
}

/// marathon-lb keeps a list of one-entry dicts and appends one unless an equal one is there.
fn add_unique(
    lines: &mut Vec<(String, String)>,
    seen: &mut HashSet<(String, String)>,
    key: &str,
    backend: &str,
) {
    let line = (key.to_string(), backend.to_string());
    if seen.insert(line.clone()) {
        lines.push(line);
    }
}

/// The result for one service.
#[derive(Debug)]
pub struct VhostAcls {
    /// The weight the service is sorted by in the shared frontends; `-1` once the service
    /// emitted a shared map line, so that line sorts after every per-app rule.
    pub weight: i64,
    pub http: String,
    pub https: String,
    pub grouped: BTreeMap<String, GroupedVhost>,
}

/// What the vhost templates need to know about one service.
pub struct VhostInput<'a> {
    pub templates: &'a Templates,
    pub service: &'a Service,
    /// `HAPROXY_{n}_VHOST`, non-empty.
    pub hostname: &'a str,
    pub backend: &'a str,
    pub haproxy_map: bool,
    pub haproxy_dir: &'a str,
    /// `--group-https-by-vhost`: only then is the per-vhost table built.
    pub group_https_by_vhost: bool,
}

struct Builder<'a> {
    input: &'a VhostInput<'a>,
    acl_name: String,
    weight: i64,
    http: String,
    https: String,
    grouped: BTreeMap<String, GroupedVhost>,
}

impl Builder<'_> {
    /// Appends the section to the :80 frontend's rules.
    fn http_into(&mut self, name: Name, vars: &[(&'static str, Value)]) -> Result<()> {
        let input = self.input;
        input
            .templates
            .format_into(name, Some(input.service), vars, &mut self.http)
    }

    /// Appends the section to the :443 frontend's rules, and to no vhost's.
    fn https_into(&mut self, name: Name, vars: &[(&'static str, Value)]) -> Result<()> {
        let input = self.input;
        input
            .templates
            .format_into(name, Some(input.service), vars, &mut self.https)
    }

    /// Appends the section to the :443 frontend's rules and to `host`'s.
    fn https_for(&mut self, host: &str, name: Name, vars: &[(&'static str, Value)]) -> Result<()> {
        let start = self.https.len();
        self.https_into(name, vars)?;
        if self.input.group_https_by_vhost {
            let text = self.https[start..].to_string();
            let weight = self.weight;
            if let Some(vhost) = self.vhost(host) {
                vhost.acls.push((weight, text));
            }
        }
        Ok(())
    }

    /// The vhost's entry in the per-vhost table, or `None` when the table is not wanted.
    fn vhost(&mut self, host: &str) -> Option<&mut GroupedVhost> {
        if !self.input.group_https_by_vhost {
            return None;
        }
        Some(self.grouped.entry(host.to_string()).or_default())
    }

    /// Notes the service's certificate and bind options on `host`'s entry; the entry is made
    /// only when there is one to note (an entry decides whether the vhost gets a frontend).
    fn note_cert_and_bind_options(&mut self, host: &str) {
        let service = self.input.service;
        if let Some(cert) = &service.extras().ssl_cert {
            if let Some(vhost) = self.vhost(host) {
                insert_unique(&mut vhost.certs, cert.clone());
            }
        }
        if let Some(options) = &service.extras().bind_options {
            if let Some(vhost) = self.vhost(host) {
                insert_unique(&mut vhost.bind_options, options.clone());
            }
        }
    }
}

fn s(text: &str) -> Value<'_> {
    Value::str(text)
}

/// What the :80 and :443 texts of one service are given at first.
const VHOST_ROOM: usize = 256;

/// Builds the service's routing in the shared frontends.
pub fn vhost_acls(input: &VhostInput<'_>, map: &mut MapState) -> Result<VhostAcls> {
    let service = input.service;
    let app_path = without_first_char(&service.app_id).replace('/', "_");
    let first_host = input.hostname.split(',').next().unwrap_or("");
    let mut builder = Builder {
        input,
        acl_name: format!("{}_{}", sanitize(first_host), app_path),
        weight: service.backend_weight,
        // Room for the usual rules at once (about 200 and 110 bytes with the default
        // templates), instead of growing a piece at a time; trimmed to the text below.
        http: String::with_capacity(VHOST_ROOM),
        https: String::with_capacity(VHOST_ROOM),
        grouped: BTreeMap::new(),
    };
    if input.hostname.contains(',') {
        several_hosts(&mut builder, map)?;
    } else {
        one_host(&mut builder, map)?;
    }
    // The texts are kept until every service is rendered, and sections appended a piece at a
    // time leave up to twice their length in capacity: thousands of services would hold
    // megabytes of it.
    builder.http.shrink_to_fit();
    builder.https.shrink_to_fit();
    Ok(VhostAcls {
        weight: builder.weight,
        http: builder.http,
        https: builder.https,
        grouped: builder.grouped,
    })
}

fn realm_of(service: &Service) -> Option<&str> {
    service
        .extras()
        .auth
        .as_ref()
        .map(|auth| auth.realm.as_str())
        .filter(|realm| !realm.is_empty())
}

fn path_of(service: &Service) -> Option<&str> {
    service.path.as_deref().filter(|path| !path.is_empty())
}

/// `HAPROXY_{n}_VHOST` with a comma: one host ACL per vhost, routed once.
fn several_hosts(b: &mut Builder<'_>, map: &mut MapState) -> Result<()> {
    let input = b.input;
    let service = input.service;
    let backend = input.backend;
    let acl_name = b.acl_name.clone();
    let hosts: Vec<&str> = input.hostname.split(',').collect();
    let realm = realm_of(service);
    let path = path_of(service);
    let app_id = service.app_id.as_str();

    if let Some(path) = path {
        match realm {
            Some(realm) => {
                let vars = [
                    ("path", s(path)),
                    ("cleanedUpHostname", s(&acl_name)),
                    ("hostname", s(hosts[0])),
                    ("realm", s(realm)),
                    ("backend", s(backend)),
                ];
                b.http_into(Name::HttpFrontendAclOnlyWithPathAndAuth, &vars)?;
                b.https_into(Name::HttpsFrontendAclOnlyWithPath, &vars)?;
            }
            None => {
                let vars = [("path", s(path)), ("backend", s(backend))];
                b.http_into(Name::HttpFrontendAclOnlyWithPath, &vars)?;
                b.https_into(Name::HttpsFrontendAclOnlyWithPath, &vars)?;
            }
        }
    }
    // Every vhost's SNI frontend starts with the shared path ACLs gathered so far.
    let shared_head = b.https.clone();

    for &host in &hosts {
        let weight = b.weight;
        if let Some(vhost) = b.vhost(host) {
            vhost.acls.push((weight, shared_head.clone()));
        }
        b.note_cert_and_bind_options(host);

        if input.haproxy_map && path.is_none() && realm.is_none() && !service.redirect_http_to_https
        {
            if !map.http_acl_emitted {
                b.weight = -1;
                b.http_into(
                    Name::MapHttpFrontendAclOnly,
                    &[("haproxy_dir", s(input.haproxy_dir))],
                )?;
                map.http_acl_emitted = true;
            }
            map.add_domain(host, backend);
        } else {
            b.http_into(
                Name::HttpFrontendAclOnly,
                &[("cleanedUpHostname", s(&acl_name)), ("hostname", s(host))],
            )?;
        }

        match (path, realm) {
            (Some(_), Some(realm)) => {
                b.https_for(
                    host,
                    Name::HttpsFrontendAclWithAuthAndPath,
                    &[
                        ("cleanedUpHostname", s(&acl_name)),
                        ("hostname", s(host)),
                        ("appId", s(app_id)),
                        ("realm", s(realm)),
                        ("backend", s(backend)),
                    ],
                )?;
            }
            (Some(_), None) => {
                b.https_for(
                    host,
                    Name::HttpsFrontendAclWithPath,
                    &[
                        ("cleanedUpHostname", s(&acl_name)),
                        ("hostname", s(host)),
                        ("appId", s(app_id)),
                        ("backend", s(backend)),
                    ],
                )?;
            }
            (None, Some(realm)) => {
                b.https_for(
                    host,
                    Name::HttpsFrontendAclWithAuth,
                    &[
                        ("cleanedUpHostname", s(&acl_name)),
                        ("hostname", s(host)),
                        ("appId", s(app_id)),
                        ("realm", s(realm)),
                        ("backend", s(backend)),
                    ],
                )?;
            }
            (None, None) if input.haproxy_map => {
                if !map.https_acl_emitted {
                    b.weight = -1;
                    b.https_for(
                        host,
                        Name::MapHttpsFrontendAcl,
                        &[("hostname", s(host)), ("haproxy_dir", s(input.haproxy_dir))],
                    )?;
                    map.https_acl_emitted = true;
                }
                map.add_domain(host, backend);
            }
            (None, None) => {
                b.https_for(
                    host,
                    Name::HttpsFrontendAcl,
                    &[
                        ("cleanedUpHostname", s(&acl_name)),
                        ("hostname", s(host)),
                        ("appId", s(app_id)),
                        ("backend", s(backend)),
                    ],
                )?;
            }
        }
    }

    // The host ACLs are in place; now route them (once) to the backend.
    let bind_addr = s(&service.bind_addr);
    if service.redirect_http_to_https {
        match path {
            Some(_) => b.http_into(
                Name::BackendRedirectHttpToHttpsWithPath,
                &[
                    ("bindAddr", bind_addr),
                    ("cleanedUpHostname", s(&acl_name)),
                    ("backend", s(backend)),
                ],
            )?,
            None => b.http_into(
                Name::BackendRedirectHttpToHttps,
                &[("bindAddr", bind_addr), ("cleanedUpHostname", s(&acl_name))],
            )?,
        }
    } else {
        let routing = match (path, realm) {
            (Some(_), Some(realm)) => {
                Some((Name::HttpFrontendRoutingOnlyWithPathAndAuth, Some(realm)))
            }
            (Some(_), None) => Some((Name::HttpFrontendRoutingOnlyWithPath, None)),
            (None, Some(realm)) => Some((Name::HttpFrontendRoutingOnlyWithAuth, Some(realm))),
            (None, None) if !input.haproxy_map => Some((Name::HttpFrontendRoutingOnly, None)),
            (None, None) => None,
        };
        if let Some((name, realm)) = routing {
            let mut vars = vec![("cleanedUpHostname", s(&acl_name)), ("backend", s(backend))];
            if let Some(realm) = realm {
                vars.push(("realm", s(realm)));
            }
            b.http_into(name, &vars)?;
        }
    }
    Ok(())
}

/// A single vhost.
fn one_host(b: &mut Builder<'_>, map: &mut MapState) -> Result<()> {
    let input = b.input;
    let service = input.service;
    let backend = input.backend;
    let host = input.hostname;
    let acl_name = b.acl_name.clone();
    let realm = realm_of(service);
    let app_id = service.app_id.as_str();
    let bind_addr = &*service.bind_addr;
    b.note_cert_and_bind_options(host);

    if let Some(path) = path_of(service) {
        if service.redirect_http_to_https {
            b.http_into(
                Name::HttpFrontendAclOnly,
                &[("cleanedUpHostname", s(&acl_name)), ("hostname", s(host))],
            )?;
            b.http_into(
                Name::HttpFrontendAclOnlyWithPath,
                &[
                    ("cleanedUpHostname", s(&acl_name)),
                    ("hostname", s(host)),
                    ("path", s(path)),
                    ("backend", s(backend)),
                ],
            )?;
            b.http_into(
                Name::BackendRedirectHttpToHttpsWithPath,
                &[
                    ("bindAddr", s(bind_addr)),
                    ("cleanedUpHostname", s(&acl_name)),
                    ("backend", s(backend)),
                ],
            )?;
        } else {
            let mut vars = vec![
                ("cleanedUpHostname", s(&acl_name)),
                ("hostname", s(host)),
                ("path", s(path)),
                ("appId", s(app_id)),
                ("backend", s(backend)),
            ];
            let name = match realm {
                Some(realm) => {
                    vars.push(("realm", s(realm)));
                    Name::HttpFrontendAclWithAuthAndPath
                }
                None => Name::HttpFrontendAclWithPath,
            };
            b.http_into(name, &vars)?;
        }
        b.https_for(
            host,
            Name::HttpsFrontendAclOnlyWithPath,
            &[("path", s(path)), ("backend", s(backend))],
        )?;
        match realm {
            Some(realm) => b.https_for(
                host,
                Name::HttpsFrontendAclWithAuthAndPath,
                &[
                    ("cleanedUpHostname", s(&acl_name)),
                    ("hostname", s(host)),
                    ("path", s(path)),
                    ("appId", s(app_id)),
                    ("realm", s(realm)),
                    ("backend", s(backend)),
                ],
            )?,
            None => b.https_for(
                host,
                Name::HttpsFrontendAclWithPath,
                &[
                    ("cleanedUpHostname", s(&acl_name)),
                    ("hostname", s(host)),
                    ("appId", s(app_id)),
                    ("backend", s(backend)),
                ],
            )?,
        }
        return Ok(());
    }

    if service.redirect_http_to_https {
        b.http_into(
            Name::HttpFrontendAcl,
            &[
                ("cleanedUpHostname", s(&acl_name)),
                ("hostname", s(host)),
                ("backend", s(backend)),
            ],
        )?;
        b.http_into(
            Name::BackendRedirectHttpToHttps,
            &[
                ("bindAddr", s(bind_addr)),
                ("cleanedUpHostname", s(&acl_name)),
            ],
        )?;
    } else if let Some(realm) = realm {
        b.http_into(
            Name::HttpFrontendAclWithAuth,
            &[
                ("cleanedUpHostname", s(&acl_name)),
                ("hostname", s(host)),
                ("appId", s(app_id)),
                ("realm", s(realm)),
                ("backend", s(backend)),
            ],
        )?;
    } else if input.haproxy_map {
        if !map.http_acl_emitted {
            b.weight = -1;
            b.http_into(
                Name::MapHttpFrontendAcl,
                &[("haproxy_dir", s(input.haproxy_dir))],
            )?;
            map.http_acl_emitted = true;
        }
        map.add_domain(host, backend);
    } else {
        b.http_into(
            Name::HttpFrontendAcl,
            &[
                ("cleanedUpHostname", s(&acl_name)),
                ("hostname", s(host)),
                ("appId", s(app_id)),
                ("backend", s(backend)),
            ],
        )?;
    }

    if let Some(realm) = realm {
        b.https_for(
            host,
            Name::HttpsFrontendAclWithAuth,
            &[
                ("cleanedUpHostname", s(&acl_name)),
                ("hostname", s(host)),
                ("appId", s(app_id)),
                ("realm", s(realm)),
                ("backend", s(backend)),
            ],
        )?;
    } else if input.haproxy_map {
        if !map.https_acl_emitted {
            b.weight = -1;
            b.https_for(
                host,
                Name::MapHttpsFrontendAcl,
                &[("hostname", s(host)), ("haproxy_dir", s(input.haproxy_dir))],
            )?;
            map.https_acl_emitted = true;
        }
        map.add_domain(host, backend);
    } else {
        b.https_for(
            host,
            Name::HttpsFrontendAcl,
            &[
                ("cleanedUpHostname", s(&acl_name)),
                ("hostname", s(host)),
                ("appId", s(app_id)),
                ("backend", s(backend)),
            ],
        )?;
    }
    Ok(())
}
