//! Model → configuration text (and `--haproxy-map` files), reproducing marathon-lb's `config()`
//! byte for byte: which services are rendered, in which order, through which template sections.
//! Reads template files only through its loader (`templates.rs`) and never writes anything.
//!
//! Submodules: `templates` (the table and the loader), `format` (marathon-lb's `{placeholder}`
//! formatting), `vhost` (routing in the shared :80/:443 frontends), `server_id` (server names,
//! ids and cookies).

mod format;
mod server_id;
mod templates;
mod vhost;

use std::collections::{BTreeMap, HashSet};

use anyhow::Result;

pub use format::{format as format_placeholders, FormatError, Value};
pub use server_id::{cookie_value, server_id, server_name, TakenIds};
pub use templates::{
    is_plain_file_name, reference_markdown, BadTemplateLabel, BadTemplateLabels, Name, Syntax,
    TemplateDef, Templates, Use, TEMPLATES,
};

use crate::config::{RenderConfig, DEFAULT_SSL_CERT};
use crate::model::conflicts::SharedListener;
use crate::model::{Model, Service, ServiceCheck};
use server_id::{sanitize, server_name_into};
use vhost::{GroupedVhost, MapState, VhostInput};

/// A companion file written next to the config (the `--haproxy-map` files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFile {
    /// File name inside the config's directory, e.g. `domain2backend.map`.
    pub file_name: String,
    pub content: String,
}

/// The rendered candidate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub config: String,
    /// Present (possibly empty) exactly when `--haproxy-map` is on.
    pub maps: Vec<MapFile>,
    /// The app each rendered backend serves (backend name → app id), for change summaries.
    pub backend_apps: BTreeMap<String, String>,
}

pub const DOMAIN_MAP_FILE: &str = "domain2backend.map";
pub const APP_MAP_FILE: &str = "app2backend.map";

/// marathon-lb's default `HAPROXY_GLOBAL_DEFAULT_OPTIONS`.
pub const DEFAULT_GLOBAL_OPTIONS: &str = "redispatch,http-server-close,dontlognull";

/// The `option` lines of the default head: one per comma-separated name, sorted and
/// deduplicated (marathon-lb builds them as a sorted set).
pub fn global_default_options(options: Option<&str>) -> String {
    let options = options.unwrap_or(DEFAULT_GLOBAL_OPTIONS);
    let lines: std::collections::BTreeSet<String> = options
        .split(',')
        .map(|option| format!("  option            {}\n", option.trim()))
        .collect();
    lines.into_iter().collect()
}

/// Python's `os.path.dirname`: everything before the last `/`, trailing slashes dropped
/// unless the head is all slashes. Map paths in the config are built from it.
fn python_dirname(path: &str) -> &str {
    match path.rfind('/') {
        None => "",
        Some(last) => {
            let head = &path[..=last];
            let trimmed = head.trim_end_matches('/');
            if trimmed.is_empty() {
                head
            } else {
                trimmed
            }
        }
    }
}

/// The backend a service of `app_id` on `service_port` is rendered as: marathon-lb's
/// `{app_id[1:] with / as _}_{service_port}`. Also names the backends of services not rendered
/// (no task to serve), for the guard and the change summary.
pub fn backend_name(app_id: &str, service_port: u32) -> String {
    use std::fmt::Write as _;
    let path = without_first_char(app_id);
    let mut name = String::with_capacity(path.len() + 6);
    name.extend(path.chars().map(|c| if c == '/' { '_' } else { c }));
    let _ = write!(name, "_{service_port}");
    name
}

/// Python's `app_id[1:]`: the id without its leading `/` (or whatever its first character is).
fn without_first_char(app_id: &str) -> &str {
    app_id
        .char_indices()
        .nth(1)
        .map_or("", |(at, _)| &app_id[at..])
}

/// `service` as the rendering needs it, after marathon-lb's defaults are applied.
struct Prepared<'a> {
    service: &'a Service,
    backend: String,
    mode: &'a str,
    hostname: Option<&'a str>,
}

/// Renders the model into the candidate config and map files.
///
/// Service template labels that do not format fail the render with [`BadTemplateLabels`] (all
/// of them, from one pass) in the error chain, so the caller can leave those apps out and
/// render again (marathon-lb fails the whole run); any other template failure is the
/// operator's and fails the render.
pub fn render(model: &Model, templates: &Templates, config: &RenderConfig) -> Result<Rendered> {
    Renderer::new(model, templates, config).run()
}

/// [`render`] on the calling thread alone, whatever the size: what the two-thread render must
/// equal.
#[cfg(test)]
fn render_on_one_thread(
    model: &Model,
    templates: &Templates,
    config: &RenderConfig,
) -> Result<Rendered> {
    let mut renderer = Renderer::new(model, templates, config);
    renderer.parallel_from = usize::MAX;
    renderer.run()
}

/// The head section (`global`, `defaults` and whatever else the operator's head adds).
fn head(templates: &Templates, config: &RenderConfig) -> Result<String> {
    templates.verbatim(
        Name::Head,
        None,
        &[(
            "global_default_options",
            Value::str(global_default_options(
                config.global_default_options.as_deref(),
            )),
        )],
    )
}

/// The listeners of the sections that belong to no app, read from their rendered text (the
/// head, the :80 and :443 frontends unless `--dont-bind-http-https`, the :9091 app-id
/// frontend), so an operator's template counts as written. Only address-and-port binds are
/// listed (not unix sockets, `abns@` or `fd@`). A section that does not render lists nothing:
/// the render itself then reports it.
pub fn shared_listeners(templates: &Templates, config: &RenderConfig) -> Vec<SharedListener> {
    let certs = if config.ssl_certs.is_empty() {
        vec![DEFAULT_SSL_CERT.to_string()]
    } else {
        config.ssl_certs.clone()
    };
    let certs_line = certs
        .iter()
        .map(|cert| format!("crt {cert}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut sections = vec![
        head(templates, config),
        templates.verbatim(Name::HttpFrontendAppidHead, None, &[]),
    ];
    if config.bind_http_https {
        sections.push(templates.verbatim(Name::HttpFrontendHead, None, &[]));
        sections.push(match config.group_https_by_vhost {
            true => templates.verbatim(Name::HttpsGroupedFrontendHead, None, &[]),
            false => templates.format(
                Name::HttpsFrontendHead,
                None,
                &[("sslCerts", s(&certs_line))],
            ),
        });
    }
    sections
        .iter()
        .flatten()
        .flat_map(|text| binds_in(text))
        .collect()
}

/// The address-and-port binds of configuration text, with the section each is in.
fn binds_in(text: &str) -> Vec<SharedListener> {
    let mut section = "";
    let mut binds = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            section = trimmed;
            continue;
        }
        let mut words = trimmed.split_whitespace();
        if words.next() != Some("bind") {
            continue;
        }
        let Some(addresses) = words.next() else {
            continue;
        };
        binds.extend(addresses.split(',').filter_map(|address| {
            let (address, ports) = bind_address(address)?;
            Some(SharedListener {
                section: section.to_string(),
                address,
                ports,
            })
        }));
    }
    binds
}

/// One address of a `bind` line as HAProxy reads it: `[ipv4@|ipv6@]address:port[-last]`.
fn bind_address(address: &str) -> Option<(String, (u32, u32))> {
    let address = address
        .strip_prefix("ipv4@")
        .or_else(|| address.strip_prefix("ipv6@"))
        .unwrap_or(address);
    if address.contains('@') || address.starts_with('/') {
        return None;
    }
    let (host, ports) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
        .unwrap_or(host);
    let (first, last) = ports.split_once('-').unwrap_or((ports, ports));
    let ports = (first.parse().ok()?, last.parse().ok()?);
    Some((host.to_string(), ports))
}

/// `services` sorted by (app id, service port), equal keys in the model's order: a stable sort.
///
/// The model keeps an app's services together, so the apps are sorted as units (a run of one
/// app's services at a time) and each app's services by port after: half as many comparisons
/// as sorting the services, and most of them decided by the ids' first bytes held in the runs
/// themselves, where comparing services read two services far apart in the model and then
/// their ids (at 30,000 apps the sort was a tenth of the render, all of it before the second
/// thread starts). An app id met in two runs still sorts as one stable sort would: its runs
/// keep their order, and its services are then sorted together.
fn in_output_order(services: &[Service]) -> Vec<&Service> {
    let app_id = |run: &(u128, std::ops::Range<usize>)| &services[run.1.start].app_id;
    let mut runs: Vec<(u128, std::ops::Range<usize>)> = Vec::new();
    for (at, service) in services.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if *app_id(run) == service.app_id => run.1.end = at + 1,
            _ => runs.push((sort_prefix(&service.app_id), at..at + 1)),
        }
    }
    runs.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| app_id(a).cmp(app_id(b))));
    let mut sorted: Vec<&Service> = Vec::with_capacity(services.len());
    for app in runs.chunk_by(|a, b| a.0 == b.0 && app_id(a) == app_id(b)) {
        let first = sorted.len();
        for (_, run) in app {
            sorted.extend(&services[run.clone()]);
        }
        sorted[first..].sort_by_key(|service| service.service_port);
    }
    sorted
}

/// The first 16 bytes of `text` as a big-endian number, zeros after a shorter text: two texts
/// whose prefixes differ compare as their prefixes do (where a shorter text's zero meets a
/// byte of the longer, that byte is not zero, or the prefixes would not differ there, and the
/// shorter text comes first either way), so only equal prefixes need the texts themselves.
fn sort_prefix(text: &str) -> u128 {
    let mut prefix = [0; 16];
    let len = text.len().min(16);
    prefix[..len].copy_from_slice(&text.as_bytes()[..len]);
    u128::from_be_bytes(prefix)
}

/// How many services are rendered before the output's size is estimated from them.
const SIZE_SAMPLE: usize = 256;

/// From how many services the render runs on two threads (see [`Renderer::second_half_at`]).
const PARALLEL_FROM: usize = 512;

/// The most [`Renderer::reserve_for`] reserves for one buffer: an estimate is no reason to
/// ask for more.
const MAX_RESERVED: usize = 1 << 30;

/// `len` bytes from `rendered` services, scaled to `total` services and an eighth more (for
/// the head and for services longer than the sample's), at most [`MAX_RESERVED`].
fn scaled_up(len: usize, rendered: usize, total: usize) -> usize {
    (len / rendered.max(1))
        .saturating_mul(total)
        .saturating_mul(9)
        .checked_div(8)
        .unwrap_or(0)
        .min(MAX_RESERVED)
}

struct Renderer<'a> {
    model: &'a Model,
    templates: &'a Templates,
    config: &'a RenderConfig,
    /// Each app's services that have backends, in service-port order: built the first time a
    /// health-check port index asks, so that a cluster using it everywhere walks the model once
    /// instead of once per server (10,000 such apps: 1.26 s → render's usual time).
    siblings: std::cell::OnceCell<std::collections::HashMap<&'a str, Vec<&'a Service>>>,
    haproxy_dir: String,
    ssl_certs: Vec<String>,
    userlists: String,
    frontends: String,
    backends: String,
    http_appid_frontends: String,
    apps_with_appid_backend: HashSet<&'a str>,
    http_vhosts: Vec<(i64, String)>,
    https_vhosts: Vec<(i64, String)>,
    grouped: BTreeMap<String, GroupedVhost>,
    maps: MapState,
    /// (backend, app id) in rendering order; a map at the end, the last of a name winning as
    /// with inserts, without a tree walk per service.
    backend_apps: Vec<(String, String)>,
    /// [`PARALLEL_FROM`], except in tests comparing with the one-thread render.
    parallel_from: usize,
    /// The server ids of the backend being rendered, cleared for each.
    taken_ids: TakenIds,
    /// The name of the server line being rendered.
    server_name: String,
}

fn s(text: &str) -> Value<'_> {
    Value::str(text)
}

impl<'a> Renderer<'a> {
    fn new(model: &'a Model, templates: &'a Templates, config: &'a RenderConfig) -> Renderer<'a> {
        let haproxy_config = config.haproxy_config.to_string_lossy();
        let ssl_certs = if config.ssl_certs.is_empty() {
            vec![DEFAULT_SSL_CERT.to_string()]
        } else {
            config.ssl_certs.clone()
        };
        Renderer {
            model,
            templates,
            config,
            siblings: std::cell::OnceCell::new(),
            haproxy_dir: python_dirname(&haproxy_config).to_string(),
            ssl_certs,
            userlists: String::new(),
            frontends: String::new(),
            backends: String::new(),
            http_appid_frontends: String::new(),
            apps_with_appid_backend: HashSet::new(),
            http_vhosts: Vec::new(),
            https_vhosts: Vec::new(),
            grouped: BTreeMap::new(),
            backend_apps: Vec::new(),
            maps: MapState::default(),
            parallel_from: PARALLEL_FROM,
            taken_ids: TakenIds::default(),
            server_name: String::new(),
        }
    }

    fn run(mut self) -> Result<Rendered> {
        let config = self.config;
        let head = head(self.templates, config)?;
        self.http_appid_frontends =
            self.templates
                .verbatim(Name::HttpFrontendAppidHead, None, &[])?;

        let services = in_output_order(&self.model.services);
        let total = services.len();
        let bad_labels = match self.second_half_at(&services) {
            None => self.render_services(&services, 0, total)?,
            Some(at) => {
                let (first, second) = services.split_at(at);
                let (model, templates) = (self.model, self.templates);
                let render_second = move || {
                    let mut other = Renderer::new(model, templates, config);
                    let outcome = other.render_services(second, at, second.len());
                    (other, outcome)
                };
                // The first half's buffers are reserved for the whole output, so the second
                // half's text is appended to them and not the other way round.
                let (own, other) = crate::threads::beside("render", render_second, || {
                    self.render_services(first, 0, total)
                });
                let (other, other_outcome) = other;
                // The error the one-thread pass would have ended with: the first half's
                // failure, else the second's, else every bad label in output order.
                let mut bad_labels = own?;
                bad_labels.extend(other_outcome?);
                if bad_labels.is_empty() {
                    self.append(other);
                }
                bad_labels
            }
        };
        if !bad_labels.is_empty() {
            return Err(anyhow::Error::new(BadTemplateLabels(bad_labels))
                .context(crate::error::Failure::Template));
        }

        let (http_head, https) = match config.bind_http_https {
            true => (
                self.templates.verbatim(Name::HttpFrontendHead, None, &[])?,
                self.https_frontends()?,
            ),
            false => (String::new(), Vec::new()),
        };
        if config.bind_http_https {
            sort_by_weight(&mut self.http_vhosts);
        }
        // Grouped by vhost, the https frontends were built without these texts.
        drop(std::mem::take(&mut self.https_vhosts));
        let mut before = vec![head, std::mem::take(&mut self.userlists)];
        if config.bind_http_https {
            before.push(http_head);
            before.extend(
                std::mem::take(&mut self.http_vhosts)
                    .into_iter()
                    .map(|(_, text)| text),
            );
        }
        before.push(std::mem::take(&mut self.http_appid_frontends));
        before.extend(https);
        before.push(std::mem::take(&mut self.frontends));
        let out = put_before(std::mem::take(&mut self.backends), before);

        let maps = if config.haproxy_map {
            vec![
                MapFile {
                    file_name: DOMAIN_MAP_FILE.to_string(),
                    content: map_text(&self.maps.domains),
                },
                MapFile {
                    file_name: APP_MAP_FILE.to_string(),
                    content: map_text(&self.maps.apps),
                },
            ]
        } else {
            Vec::new()
        };
        Ok(Rendered {
            config: out,
            maps,
            backend_apps: std::mem::take(&mut self.backend_apps).into_iter().collect(),
        })
    }

    /// Where the sorted `services` are cut in two for a second thread, if they are: never when
    /// too few for the thread to pay (starting one costs tens of microseconds), never with
    /// `--haproxy-map` (its map lines and the one `map` ACL are deduplicated over the whole
    /// pass), and only between two apps, so that an app's first http service, the one its
    /// `X-Marathon-App-Id` route goes to, is found by one thread alone.
    fn second_half_at(&self, services: &[&Service]) -> Option<usize> {
        if services.len() < self.parallel_from.max(2) || self.config.haproxy_map {
            return None;
        }
        let middle = services.len() / 2;
        let app_id = &services[middle - 1].app_id;
        (middle..services.len()).find(|&at| &services[at].app_id != app_id)
    }

    /// Renders `services`, the `offset`-th on of `total` sorted ones (`total` is what the
    /// buffers are sized for). The bad template labels met, or the first other failure.
    fn render_services(
        &mut self,
        services: &[&'a Service],
        offset: usize,
        total: usize,
    ) -> Result<Vec<BadTemplateLabel>> {
        // Bad template labels are collected over the whole pass, so the caller can leave out
        // every app at fault at once; any other failure ends the render.
        let mut bad_labels = Vec::new();
        for (rendered, &service) in services.iter().enumerate() {
            self.templates.check_deadline(offset + rendered)?;
            if rendered == SIZE_SAMPLE {
                self.reserve_for(rendered, total);
            }
            if !self.is_selected(service) {
                continue;
            }
            if let Err(err) = self.render_service(service) {
                match err.downcast_ref::<BadTemplateLabel>() {
                    Some(bad) => bad_labels.push(bad.clone()),
                    None => return Err(err),
                }
            }
        }
        Ok(bad_labels)
    }

    /// Appends what `later` rendered of the services after this one's, as one pass over both
    /// would have left it. Each buffer of `later` is freed as soon as it is copied, the
    /// frontends before the backends, so that no more is held at once than at the end.
    fn append(&mut self, later: Renderer<'a>) {
        let Renderer {
            userlists,
            frontends,
            backends,
            http_appid_frontends,
            http_vhosts,
            https_vhosts,
            grouped,
            maps,
            backend_apps,
            ..
        } = later;
        debug_assert!(maps.domains.is_empty() && maps.apps.is_empty());
        self.userlists.push_str(&userlists);
        drop(userlists);
        self.http_appid_frontends.push_str(&http_appid_frontends);
        drop(http_appid_frontends);
        self.frontends.push_str(&frontends);
        drop(frontends);
        self.backends.push_str(&backends);
        drop(backends);
        // The vhost texts are sorted by weight later, stably: appended in order they sort as
        // one list would.
        self.http_vhosts.extend(http_vhosts);
        self.https_vhosts.extend(https_vhosts);
        for (host, entry) in grouped {
            self.grouped.entry(host).or_default().merge(entry);
        }
        self.backend_apps.extend(backend_apps);
    }

    /// Reserves room for the whole output, estimated from the text of the first `rendered` of
    /// `total` services, so that megabytes of backends are not copied to a larger buffer again
    /// and again as they grow (each copy faulting in fresh pages). An estimate too small only
    /// means a late copy, as before; one too large is address space never touched.
    fn reserve_for(&mut self, rendered: usize, total: usize) {
        let so_far = self.userlists.len()
            + self.frontends.len()
            + self.backends.len()
            + self.http_appid_frontends.len()
            + self
                .http_vhosts
                .iter()
                .map(|(_, text)| text.len())
                .sum::<usize>()
            + self
                .https_vhosts
                .iter()
                .map(|(_, text)| text.len())
                .sum::<usize>();
        let wanted = scaled_up(so_far, rendered, total).saturating_sub(self.backends.len());
        // Not getting the room is no failure: the buffer grows as it would have.
        let _ = self.backends.try_reserve(wanted);
        let wanted =
            scaled_up(self.frontends.len(), rendered, total).saturating_sub(self.frontends.len());
        let _ = self.frontends.try_reserve(wanted);
    }

    /// marathon-lb skips services outside the groups, disabled, or without a backend.
    fn is_selected(&self, service: &Service) -> bool {
        service.is_rendered(&self.config.groups)
    }

    fn render_service(&mut self, service: &'a Service) -> Result<()> {
        let hostname = service.hostname.as_deref().filter(|host| !host.is_empty());
        let prepared = Prepared {
            service,
            backend: backend_name(&service.app_id, service.service_port),
            mode: match &service.mode {
                Some(mode) => mode,
                None if hostname.is_some() => "http",
                None => "tcp",
            },
            hostname,
        };
        let rendered = self.render_prepared(&prepared);
        // Recorded whether or not a label is bad; the name moves in rather than being copied,
        // one small string fewer per service held to the end of the render.
        self.backend_apps
            .push((prepared.backend, service.app_id.clone()));
        rendered
    }

    fn render_prepared(&mut self, prepared: &Prepared<'a>) -> Result<()> {
        let templates = self.templates;
        let service = prepared.service;
        let hostname = prepared.hostname;
        let backend = prepared.backend.as_str();
        let mode = prepared.mode;

        if let Some(auth) = service
            .extras()
            .auth
            .as_ref()
            .filter(|auth| !auth.user.is_empty())
        {
            templates.format_into(
                Name::UserlistHead,
                Some(service),
                &[
                    ("backend", s(backend)),
                    ("user", s(&auth.user)),
                    ("passwd", s(&auth.password)),
                ],
                &mut self.userlists,
            )?;
        }

        templates.format_into(
            Name::FrontendHead,
            Some(service),
            &[
                ("bindAddr", s(&service.bind_addr)),
                ("backend", s(backend)),
                ("servicePort", Value::Int(service.service_port.into())),
                ("mode", s(mode)),
                (
                    "sslCert",
                    s(&prefixed(" ssl crt ", service.extras().ssl_cert.as_deref())),
                ),
                (
                    "bindOptions",
                    s(&prefixed(" ", service.extras().bind_options.as_deref())),
                ),
            ],
            &mut self.frontends,
        )?;
        templates.format_into(
            Name::BackendHead,
            Some(service),
            &[
                ("backend", s(backend)),
                ("balance", s(&service.balance)),
                ("mode", s(mode)),
            ],
            &mut self.backends,
        )?;

        if let (true, Some(hostname)) = (self.config.bind_http_https, hostname) {
            let acls = vhost::vhost_acls(
                &VhostInput {
                    templates,
                    service,
                    hostname,
                    backend,
                    haproxy_map: self.config.haproxy_map,
                    haproxy_dir: &self.haproxy_dir,
                    group_https_by_vhost: self.config.group_https_by_vhost,
                },
                &mut self.maps,
            )?;
            self.http_vhosts.push((acls.weight, acls.http));
            self.https_vhosts.push((acls.weight, acls.https));
            if self.config.group_https_by_vhost {
                for (host, entry) in acls.grouped {
                    self.grouped.entry(host).or_default().merge(entry);
                }
            }
        }

        if mode == "http" && self.apps_with_appid_backend.insert(&service.app_id) {
            self.appid_routing(prepared)?;
        }
        if mode == "http" {
            self.http_backend_options(prepared)?;
        }
        self.network_allowed(prepared)?;
        if service.sticky {
            templates.verbatim_into(
                Name::BackendStickyOptions,
                Some(service),
                &backend_vars(prepared),
                &mut self.backends,
            )?;
        }
        templates.format_into(
            Name::FrontendBackendGlue,
            Some(service),
            &[("backend", s(backend))],
            &mut self.frontends,
        )?;
        self.servers(prepared)
    }

    /// The :9091 frontend routes on `X-Marathon-App-Id` to the app's first http service.
    fn appid_routing(&mut self, prepared: &Prepared<'_>) -> Result<()> {
        let service = prepared.service;
        if self.config.haproxy_map {
            if !self.maps.appid_acl_emitted {
                self.templates.format_into(
                    Name::MapHttpFrontendAppidAcl,
                    Some(service),
                    &[("haproxy_dir", s(&self.haproxy_dir))],
                    &mut self.http_appid_frontends,
                )?;
                self.maps.appid_acl_emitted = true;
            }
            self.maps.add_app(&service.app_id, &prepared.backend);
        } else {
            self.templates.format_into(
                Name::HttpFrontendAppidAcl,
                Some(service),
                &[
                    ("cleanedUpAppId", s(&sanitize(&service.app_id))),
                    ("hostname", Value::opt_str(service.hostname.as_deref())),
                    ("appId", s(&service.app_id)),
                    ("backend", s(&prepared.backend)),
                ],
                &mut self.http_appid_frontends,
            )?;
        }
        Ok(())
    }

    fn http_backend_options(&mut self, prepared: &Prepared<'_>) -> Result<()> {
        let service = prepared.service;
        let templates = self.templates;
        let hostname = Value::opt_str(service.hostname.as_deref());
        if service.use_hsts {
            templates.verbatim_into(
                Name::BackendHstsOptions,
                Some(service),
                &backend_vars(prepared),
                &mut self.backends,
            )?;
        }
        templates.verbatim_into(
            Name::BackendHttpOptions,
            Some(service),
            &backend_vars(prepared),
            &mut self.backends,
        )?;
        if let Some(proxypath) = non_empty(&service.extras().proxypath) {
            templates.format_into(
                Name::HttpBackendProxypassGlue,
                Some(service),
                &[("hostname", hostname.clone()), ("proxypath", s(proxypath))],
                &mut self.backends,
            )?;
        }
        if let Some(rootpath) = non_empty(&service.extras().revproxypath) {
            templates.format_into(
                Name::HttpBackendRevproxyGlue,
                Some(service),
                &[("hostname", hostname.clone()), ("rootpath", s(rootpath))],
                &mut self.backends,
            )?;
        }
        if let Some(redirpath) = non_empty(&service.extras().redirpath) {
            templates.format_into(
                Name::HttpBackendRedir,
                Some(service),
                &[("hostname", hostname), ("redirpath", s(redirpath))],
                &mut self.backends,
            )?;
        }
        Ok(())
    }

    fn network_allowed(&mut self, prepared: &Prepared<'_>) -> Result<()> {
        let service = prepared.service;
        let Some(networks) = non_empty(&service.extras().network_allowed) else {
            return Ok(());
        };
        let (acl, allow_deny) = match prepared.mode {
            "http" => (
                Name::HttpBackendNetworkAllowedAcl,
                Name::HttpBackendAclAllowDeny,
            ),
            "tcp" => (
                Name::TcpBackendNetworkAllowedAcl,
                Name::TcpBackendAclAllowDeny,
            ),
            _ => return Ok(()),
        };
        for network in networks.split_whitespace() {
            self.templates.format_into(
                acl,
                Some(service),
                &[("network_allowed", s(network))],
                &mut self.backends,
            )?;
        }
        self.templates.verbatim_into(
            allow_deny,
            None,
            &backend_vars(prepared),
            &mut self.backends,
        )?;
        Ok(())
    }

    fn servers(&mut self, prepared: &Prepared<'_>) -> Result<()> {
        let service = prepared.service;
        let templates = self.templates;
        let mut backends: Vec<&crate::model::Backend> = service.backends.iter().collect();
        backends.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        let check = service.health_check.as_ref().map(CheckFacts::from);
        // A tcp-mode service, or a TCP check, uses the tcp sections; else an http-mode one.
        let check_kind = check.as_ref().and_then(|check| {
            if prepared.mode == "tcp" || check.protocol == "TCP" || check.protocol == "MESOS_TCP" {
                Some((
                    Name::BackendTcpHealthcheckOptions,
                    Name::BackendServerTcpHealthcheckOptions,
                ))
            } else if prepared.mode == "http" {
                Some((
                    Name::BackendHttpHealthcheckOptions,
                    Name::BackendServerHttpHealthcheckOptions,
                ))
            } else {
                None
            }
        });

        let sibling_ports = match &check {
            Some(_) => self.sibling_ports(service),
            None => None,
        };
        if let (Some(check), Some((backend_section, _))) = (&check, check_kind) {
            if !templates.is_empty(backend_section, Some(service)) {
                let port = Self::backend_port(&backends, 0, sibling_ports.as_deref());
                templates.format_into(
                    backend_section,
                    Some(service),
                    &check.vars(Some(port)),
                    &mut self.backends,
                )?;
            }
        }

        self.taken_ids.clear();
        let mut name = std::mem::take(&mut self.server_name);
        // Without a port index every server's check options are the same: they are rendered
        // at the first server, where they always were, and reused for the rest.
        let mut shared_check_options: Option<String> = None;
        let port_index = service.extras().healthcheck_port_index;
        for (index, server) in backends.iter().enumerate() {
            server_name_into(&mut name, &server.host, &server.ip, server.port);
            let id = server_id(&name, &mut self.taken_ids).map_err(|full| {
                anyhow::Error::new(BadTemplateLabel {
                    app_id: service.app_id.clone(),
                    service_port: service.service_port,
                    label: None,
                    section: Name::BackendServerOptions.def().short_name,
                    reason: format!("{} servers: {full}", backends.len()),
                })
            })?;
            let own_check_options;
            let check_options = match (&check, check_kind) {
                (Some(check), Some((_, server_section))) => match port_index {
                    Some(_) => {
                        let port = Some(Self::backend_port(
                            &backends,
                            index,
                            sibling_ports.as_deref(),
                        ));
                        own_check_options = templates.server_check_options(
                            server_section,
                            service,
                            &check.vars(port),
                        )?;
                        own_check_options.as_str()
                    }
                    None => {
                        if shared_check_options.is_none() {
                            shared_check_options = Some(templates.server_check_options(
                                server_section,
                                service,
                                &check.vars(check.port),
                            )?);
                        }
                        shared_check_options.as_deref().unwrap_or_default()
                    }
                },
                _ => "",
            };
            let cookie = if service.sticky {
                format!(" check cookie {}", cookie_value(&name))
            } else {
                String::new()
            };
            templates.format_into(
                Name::BackendServerOptions,
                Some(service),
                &[
                    ("host", s(&server.host)),
                    ("host_ipv4", s(&server.ip)),
                    ("port", Value::Int(server.port.into())),
                    ("serverName", s(&name)),
                    ("serverId", Value::Int(id.into())),
                    ("cookieOptions", s(&cookie)),
                    ("healthCheckOptions", s(check_options)),
                    (
                        "otherOptions",
                        s(if server.draining { " disabled" } else { "" }),
                    ),
                ],
                &mut self.backends,
            )?;
        }
        self.server_name = name;
        Ok(())
    }

    /// marathon-lb's `get_backend_port`: the port of the `index`-th (sorted) backend of the
    /// sibling service named by `HAPROXY_{n}_BACKEND_HEALTHCHECK_PORT_INDEX` (siblings: the
    /// app's services that have backends, ordered by service port; Python indexing, so a
    /// negative index counts from the end), else of the service itself.
    ///
    /// Where marathon-lb would crash on an index error (the index equals the sibling count, or
    /// the sibling has fewer backends), we use the service's own port instead of failing the
    /// whole run.
    ///
    /// `sibling_ports` is [`Self::sibling_ports`] of the service, found once for all its servers.
    fn backend_port(
        own: &[&crate::model::Backend],
        index: usize,
        sibling_ports: Option<&[u32]>,
    ) -> i64 {
        let own_port = i64::from(own[index].port);
        sibling_ports
            .and_then(|ports| ports.get(index).copied())
            .map_or(own_port, i64::from)
    }

    /// The ports of the sibling's backends sorted by (host, port), for [`Self::backend_port`];
    /// `None` without a port index or when it names no sibling.
    fn sibling_ports(&self, service: &Service) -> Option<Vec<u32>> {
        let port_index = service.extras().healthcheck_port_index?;
        let siblings = self.siblings.get_or_init(|| {
            let mut by_app: std::collections::HashMap<&str, Vec<&Service>> =
                std::collections::HashMap::new();
            for other in self.model.services.iter() {
                if !other.backends.is_empty() {
                    by_app.entry(other.app_id.as_str()).or_default().push(other);
                }
            }
            // Stable: siblings on one service port keep the model's order.
            for services in by_app.values_mut() {
                services.sort_by_key(|other| other.service_port);
            }
            by_app
        });
        let siblings = siblings.get(service.app_id.as_str())?;
        let count = siblings.len() as i64;
        if port_index.abs() > count {
            return None;
        }
        let position = if port_index < 0 {
            count + port_index
        } else {
            port_index
        };
        let sibling = siblings.get(usize::try_from(position).ok()?)?;
        let mut ports: Vec<(&str, u32)> = sibling
            .backends
            .iter()
            .map(|b| (&*b.host, b.port))
            .collect();
        ports.sort();
        Some(ports.into_iter().map(|(_, port)| port).collect())
    }

    /// The :443 frontend(s) as parts of the output in order: without grouping, its head and then
    /// each vhost's text as rendered (not joined into one more copy here).
    fn https_frontends(&mut self) -> Result<Vec<String>> {
        let templates = self.templates;
        let certs_line = |certs: &[String]| {
            certs
                .iter()
                .map(|cert| format!("crt {cert}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        if !self.config.group_https_by_vhost {
            let head = templates.format(
                Name::HttpsFrontendHead,
                None,
                &[("sslCerts", s(&certs_line(&self.ssl_certs)))],
            )?;
            sort_by_weight(&mut self.https_vhosts);
            let vhosts = std::mem::take(&mut self.https_vhosts);
            return Ok(std::iter::once(head)
                .chain(vhosts.into_iter().map(|(_, text)| text))
                .collect());
        }

        let mut out = templates.verbatim(Name::HttpsGroupedFrontendHead, None, &[])?;
        for vhost in self.grouped.keys() {
            out += &templates.format(
                Name::HttpsGroupedVhostFrontendAcl,
                None,
                &[("backend", s(&sanitize(vhost))), ("host", s(vhost))],
            )?;
        }
        let mut default_certs = Vec::new();
        for cert in &self.ssl_certs {
            if !default_certs.contains(cert) {
                default_certs.push(cert.clone());
            }
        }
        for (vhost, entry) in &mut self.grouped {
            let name = sanitize(vhost);
            out += &templates.format(
                Name::HttpsGroupedVhostBackendHead,
                None,
                &[("name", s(&name))],
            )?;
            let certs = if entry.certs.is_empty() {
                &default_certs
            } else {
                &entry.certs
            };
            // marathon-lb joins " opt" pieces with a space, so several options get two spaces.
            let bind_options: Vec<String> = entry
                .bind_options
                .iter()
                .map(|options| format!(" {options}"))
                .collect();
            out += &templates.format(
                Name::HttpsGroupedVhostFrontendHead,
                None,
                &[
                    ("name", s(&name)),
                    ("sslCerts", s(&certs_line(certs))),
                    ("bindOpts", s(&bind_options.join(" "))),
                ],
            )?;
            sort_by_weight(&mut entry.acls);
            for (_, text) in &entry.acls {
                out += text;
            }
        }
        Ok(vec![out])
    }
}

/// `parts` in order, then `bulk`: the backends, the bulk of a large cluster's config, stay in
/// their own buffer, each part is copied after them and freed at once, and the buffer is then
/// rotated in place, so that neither a joined copy of the parts nor a second buffer of the whole
/// is ever held, nor all the parts beside the room made for them (issue 14: 2 MB less at the
/// peak of a 10,000-app render).
fn put_before(bulk: String, parts: Vec<String>) -> String {
    let room = parts.iter().map(String::len).sum::<usize>();
    let mut out = bulk.into_bytes();
    out.reserve_exact(room);
    for part in parts {
        out.extend_from_slice(part.as_bytes());
    }
    out.rotate_right(room);
    // Whole strings laid end to end are valid UTF-8; the check costs a pass at memory speed.
    String::from_utf8(out).expect("whole strings joined are UTF-8")
}

/// Largest weight first; equal weights keep their generation order (Python's stable sort with
/// `reverse=True`).
fn sort_by_weight(entries: &mut [(i64, String)]) {
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
}

fn map_text(lines: &[(String, String)]) -> String {
    lines
        .iter()
        .map(|(key, backend)| format!("{key} {backend}\n"))
        .collect()
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|text| !text.is_empty())
}

fn prefixed(prefix: &str, value: Option<&str>) -> String {
    match value.filter(|text| !text.is_empty()) {
        Some(text) => format!("{prefix}{text}"),
        None => String::new(),
    }
}

/// Variables offered to `.j2` versions of sections marathon-lb pastes verbatim.
fn backend_vars<'a>(prepared: &'a Prepared<'_>) -> [(&'static str, Value<'a>); 5] {
    [
        ("backend", s(&prepared.backend)),
        ("appId", s(&prepared.service.app_id)),
        (
            "servicePort",
            Value::Int(prepared.service.service_port.into()),
        ),
        ("mode", s(prepared.mode)),
        ("hostname", Value::opt_str(prepared.hostname)),
    ]
}

/// The parts of a Marathon health check the check sections can show.
struct CheckFacts<'a> {
    protocol: &'a str,
    path: Option<&'a str>,
    port_index: Option<i64>,
    port: Option<i64>,
    timeout_seconds: i64,
    interval_seconds: i64,
    grace_period_seconds: i64,
    max_consecutive_failures: i64,
}

impl<'a> From<&'a ServiceCheck> for CheckFacts<'a> {
    fn from(check: &'a ServiceCheck) -> CheckFacts<'a> {
        CheckFacts {
            protocol: &check.protocol,
            path: check.path.as_deref(),
            port_index: check.port_index,
            port: check.port,
            timeout_seconds: check.timeout_seconds,
            interval_seconds: check.interval_seconds,
            grace_period_seconds: check.grace_period_seconds,
            max_consecutive_failures: check.max_consecutive_failures,
        }
    }
}

impl CheckFacts<'_> {
    /// The variables of marathon-lb's `_get_health_check_options`.
    fn vars(&self, port: Option<i64>) -> [(&'static str, Value<'_>); 10] {
        let port_options = match port {
            Some(port) if port != 0 => format!(" port {port}"),
            _ => String::new(),
        };
        [
            ("healthCheckPortIndex", Value::opt_int(self.port_index)),
            ("healthCheckPort", Value::opt_int(port)),
            ("healthCheckProtocol", s(self.protocol)),
            ("healthCheckPath", s(self.path.unwrap_or("/"))),
            (
                "healthCheckTimeoutSeconds",
                Value::Int(self.timeout_seconds),
            ),
            (
                "healthCheckIntervalSeconds",
                Value::Int(self.interval_seconds),
            ),
            (
                "healthCheckGracePeriodSeconds",
                Value::Int(self.grace_period_seconds),
            ),
            (
                "healthCheckMaxConsecutiveFailures",
                Value::Int(self.max_consecutive_failures),
            ),
            (
                "healthCheckFalls",
                Value::Int(self.max_consecutive_failures + 1),
            ),
            ("healthCheckPortOptions", Value::str(port_options)),
        ]
    }
}

#[cfg(test)]
mod tests;
