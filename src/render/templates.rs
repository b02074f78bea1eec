//! The template table (every section by marathon-lb's name, with its shipped default, whether a
//! per-service label may override it, and what it is for) and the loader that resolves each
//! section: label `HAPROXY_{n}_<NAME>` > environment `HAPROXY_<NAME>` > file in the templates
//! directory > the default embedded from `templates/`. Reads template files; writes nothing.
//!
//! Two syntaxes: marathon-lb's `{placeholder}` (`str.format`, see `format.rs`) for bare file
//! names, environment values and labels, so existing marathon-lb setups work unchanged; and
//! minijinja for files named `<NAME>.j2`, with the same variables, strict about undefined ones.
//! When both `<NAME>` and `<NAME>.j2` are in the directory, the `.j2` file wins: it can only
//! have been put there on purpose for this tool, while the bare file may be a leftover from a
//! marathon-lb setup.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use minijinja::{Environment, UndefinedBehavior};

use super::format::{self, Compiled, Value, Vars};
use crate::config::RenderConfig;
use crate::error::Failure;
use crate::model::{confine, Service};

/// How a section's text is turned into output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// marathon-lb's `str.format` placeholders (or the text verbatim, where marathon-lb uses
    /// the section verbatim).
    Format,
    /// minijinja, always rendered with the section's variables.
    Jinja,
}

/// Whether marathon-lb runs the section through `str.format` or pastes it verbatim. A verbatim
/// section may contain single braces (`{ ssl_fc }`), so formatting it would break it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    Formatted,
    Verbatim,
}

/// One row of the template table.
#[derive(Debug)]
pub struct TemplateDef {
    pub name: Name,
    /// marathon-lb's name without the `HAPROXY_` prefix, e.g. `BACKEND_HEAD`.
    pub short_name: &'static str,
    /// File name of the shipped default in `templates/`; a `.j2` suffix means minijinja.
    pub default_file: &'static str,
    pub default_text: &'static str,
    /// The label suffix that overrides this section per service (`HAPROXY_{n}_<label>`), or
    /// `None` for global-only sections. The map variants answer to the plain ACL's label, as
    /// in marathon-lb.
    pub label: Option<&'static str>,
    pub usage: Use,
    /// Placeholders every rendering of this section can use; some call sites offer more.
    pub placeholders: &'static [&'static str],
    pub description: &'static str,
}

impl TemplateDef {
    /// `HAPROXY_<NAME>`: the environment variable and the file name.
    pub fn full_name(&self) -> String {
        format!("HAPROXY_{}", self.short_name)
    }

    pub fn overridable_per_service(&self) -> bool {
        self.label.is_some()
    }
}

macro_rules! template_table {
    ($(
        $variant:ident: $short:literal, file $file:literal, label $label:expr, $usage:ident,
        [$($placeholder:literal),*], $description:literal;
    )*) => {
        /// Every template section, in table order; `Name as usize` indexes [`TEMPLATES`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Name { $($variant),* }

        /// The one table of template sections: docs are generated from and checked against it.
        pub static TEMPLATES: &[TemplateDef] = &[$(
            TemplateDef {
                name: Name::$variant,
                short_name: $short,
                default_file: $file,
                default_text: include_str!(concat!("../../templates/", $file)),
                label: $label,
                usage: Use::$usage,
                placeholders: &[$($placeholder),*],
                description: $description,
            }
        ),*];
    };
}

/// Global-only sections: no per-service label overrides them.
const GLOBAL: Option<&str> = None;

template_table! {
    Head: "HEAD", file "HAPROXY_HEAD.j2", label GLOBAL, Verbatim, ["global_default_options"],
        "The global and defaults sections and the stats listener on :9090.";
    UserlistHead: "USERLIST_HEAD", file "HAPROXY_USERLIST_HEAD", label Some("USERLIST_HEAD"), Formatted,
        ["backend", "user", "passwd"], "The userlist of a service with HTTP basic auth.";
    HttpFrontendHead: "HTTP_FRONTEND_HEAD", file "HAPROXY_HTTP_FRONTEND_HEAD", label GLOBAL, Verbatim, [],
        "The :80 frontend that gathers every virtual host.";
    HttpFrontendAppidHead: "HTTP_FRONTEND_APPID_HEAD", file "HAPROXY_HTTP_FRONTEND_APPID_HEAD", label GLOBAL, Verbatim, [],
        "The :9091 frontend routing on the X-Marathon-App-Id header to every http-mode service.";
    HttpsFrontendHead: "HTTPS_FRONTEND_HEAD", file "HAPROXY_HTTPS_FRONTEND_HEAD", label GLOBAL, Formatted, ["sslCerts"],
        "The :443 frontend terminating TLS for every virtual host.";
    HttpsGroupedFrontendHead: "HTTPS_GROUPED_FRONTEND_HEAD", file "HAPROXY_HTTPS_GROUPED_FRONTEND_HEAD", label GLOBAL, Verbatim, [],
        "With --group-https-by-vhost: the :443 frontend in tcp mode routing on SNI.";
    HttpsGroupedVhostFrontendHead: "HTTPS_GROUPED_VHOST_FRONTEND_HEAD", file "HAPROXY_HTTPS_GROUPED_VHOST_FRONTEND_HEAD", label GLOBAL, Formatted,
        ["name", "sslCerts", "bindOpts"], "With --group-https-by-vhost: the TLS-terminating frontend of one vhost.";
    HttpsGroupedVhostBackendHead: "HTTPS_GROUPED_VHOST_BACKEND_HEAD", file "HAPROXY_HTTPS_GROUPED_VHOST_BACKEND_HEAD", label GLOBAL, Formatted,
        ["name"], "With --group-https-by-vhost: the loopback backend feeding one vhost's frontend.";
    HttpsGroupedVhostFrontendAcl: "HTTPS_GROUPED_VHOST_FRONTEND_ACL", file "HAPROXY_HTTPS_GROUPED_VHOST_FRONTEND_ACL", label GLOBAL, Formatted,
        ["backend", "host"], "With --group-https-by-vhost: the SNI rule sending one vhost to its backend.";
    FrontendHead: "FRONTEND_HEAD", file "HAPROXY_FRONTEND_HEAD", label Some("FRONTEND_HEAD"), Formatted,
        ["bindAddr", "backend", "servicePort", "mode", "sslCert", "bindOptions"], "The service's own frontend on its service port.";
    BackendHead: "BACKEND_HEAD", file "HAPROXY_BACKEND_HEAD", label Some("BACKEND_HEAD"), Formatted,
        ["backend", "balance", "mode"], "The start of a service's backend: balance algorithm and mode.";
    BackendRedirectHttpToHttps: "BACKEND_REDIRECT_HTTP_TO_HTTPS", file "HAPROXY_BACKEND_REDIRECT_HTTP_TO_HTTPS", label Some("BACKEND_REDIRECT_HTTP_TO_HTTPS"), Formatted,
        ["bindAddr", "cleanedUpHostname"], "Redirect to https for HAPROXY_{n}_REDIRECT_TO_HTTPS.";
    BackendRedirectHttpToHttpsWithPath: "BACKEND_REDIRECT_HTTP_TO_HTTPS_WITH_PATH", file "HAPROXY_BACKEND_REDIRECT_HTTP_TO_HTTPS_WITH_PATH", label Some("BACKEND_REDIRECT_HTTP_TO_HTTPS_WITH_PATH"), Formatted,
        ["bindAddr", "cleanedUpHostname", "backend"], "Redirect to https, for a service with a path.";
    BackendHstsOptions: "BACKEND_HSTS_OPTIONS", file "HAPROXY_BACKEND_HSTS_OPTIONS", label Some("BACKEND_HSTS_OPTIONS"), Verbatim,
        [], "The HSTS response header for HAPROXY_{n}_USE_HSTS (ours: http-response set-header).";
    HttpFrontendAcl: "HTTP_FRONTEND_ACL", file "HAPROXY_HTTP_FRONTEND_ACL", label Some("HTTP_FRONTEND_ACL"), Formatted,
        ["cleanedUpHostname", "hostname", "backend"], "Host ACL and use_backend in the :80 frontend.";
    MapHttpFrontendAcl: "MAP_HTTP_FRONTEND_ACL", file "HAPROXY_MAP_HTTP_FRONTEND_ACL", label Some("HTTP_FRONTEND_ACL"), Formatted,
        ["haproxy_dir"], "With --haproxy-map: the :80 use_backend through domain2backend.map.";
    HttpFrontendAclWithAuth: "HTTP_FRONTEND_ACL_WITH_AUTH", file "HAPROXY_HTTP_FRONTEND_ACL_WITH_AUTH", label Some("HTTP_FRONTEND_ACL_WITH_AUTH"), Formatted,
        ["cleanedUpHostname", "hostname", "appId", "realm", "backend"], "Host ACL with basic auth in the :80 frontend.";
    HttpFrontendAclOnly: "HTTP_FRONTEND_ACL_ONLY", file "HAPROXY_HTTP_FRONTEND_ACL_ONLY", label Some("HTTP_FRONTEND_ACL_ONLY"), Formatted,
        ["cleanedUpHostname", "hostname"], "Host ACL only, for a service with several vhosts.";
    MapHttpFrontendAclOnly: "MAP_HTTP_FRONTEND_ACL_ONLY", file "HAPROXY_MAP_HTTP_FRONTEND_ACL_ONLY", label Some("HTTP_FRONTEND_ACL_ONLY"), Formatted,
        ["haproxy_dir"], "With --haproxy-map: the map use_backend, for a service with several vhosts.";
    HttpFrontendRoutingOnly: "HTTP_FRONTEND_ROUTING_ONLY", file "HAPROXY_HTTP_FRONTEND_ROUTING_ONLY", label Some("HTTP_FRONTEND_ROUTING_ONLY"), Formatted,
        ["cleanedUpHostname", "backend"], "use_backend on the host ACL, for a service with several vhosts.";
    HttpFrontendRoutingOnlyWithAuth: "HTTP_FRONTEND_ROUTING_ONLY_WITH_AUTH", file "HAPROXY_HTTP_FRONTEND_ROUTING_ONLY_WITH_AUTH", label Some("HTTP_FRONTEND_ROUTING_ONLY_WITH_AUTH"), Formatted,
        ["cleanedUpHostname", "realm", "backend"], "Auth and use_backend, for a service with several vhosts.";
    HttpFrontendAclWithPath: "HTTP_FRONTEND_ACL_WITH_PATH", file "HAPROXY_HTTP_FRONTEND_ACL_WITH_PATH", label Some("HTTP_FRONTEND_ACL_WITH_PATH"), Formatted,
        ["cleanedUpHostname", "hostname", "path", "appId", "backend"], "Host and path ACLs with use_backend in the :80 frontend.";
    HttpFrontendAclWithAuthAndPath: "HTTP_FRONTEND_ACL_WITH_AUTH_AND_PATH", file "HAPROXY_HTTP_FRONTEND_ACL_WITH_AUTH_AND_PATH", label Some("HTTP_FRONTEND_ACL_WITH_AUTH_AND_PATH"), Formatted,
        ["cleanedUpHostname", "hostname", "path", "appId", "realm", "backend"], "Host and path ACLs with basic auth in the :80 frontend.";
    HttpFrontendAclOnlyWithPath: "HTTP_FRONTEND_ACL_ONLY_WITH_PATH", file "HAPROXY_HTTP_FRONTEND_ACL_ONLY_WITH_PATH", label Some("HTTP_FRONTEND_ACL_ONLY_WITH_PATH"), Formatted,
        ["path", "backend"], "The path ACL only.";
    HttpFrontendAclOnlyWithPathAndAuth: "HTTP_FRONTEND_ACL_ONLY_WITH_PATH_AND_AUTH", file "HAPROXY_HTTP_FRONTEND_ACL_ONLY_WITH_PATH_AND_AUTH", label Some("HTTP_FRONTEND_ACL_ONLY_WITH_PATH_AND_AUTH"), Formatted,
        ["path", "cleanedUpHostname", "hostname", "realm", "backend"], "Path and auth ACLs only, for a service with several vhosts.";
    HttpsFrontendAclOnlyWithPath: "HTTPS_FRONTEND_ACL_ONLY_WITH_PATH", file "HAPROXY_HTTPS_FRONTEND_ACL_ONLY_WITH_PATH", label Some("HTTPS_FRONTEND_ACL_ONLY_WITH_PATH"), Formatted,
        ["path", "backend"], "The path ACL only, in the :443 frontend.";
    HttpFrontendRoutingOnlyWithPath: "HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH", file "HAPROXY_HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH", label Some("HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH"), Formatted,
        ["cleanedUpHostname", "backend"], "use_backend on host and path ACLs, for a service with several vhosts.";
    HttpFrontendRoutingOnlyWithPathAndAuth: "HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH_AND_AUTH", file "HAPROXY_HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH_AND_AUTH", label Some("HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH_AND_AUTH"), Formatted,
        ["cleanedUpHostname", "realm", "backend"], "Auth and use_backend on host and path ACLs, for several vhosts.";
    HttpsFrontendRoutingOnlyWithPathAndAuth: "HTTPS_FRONTEND_ROUTING_ONLY_WITH_PATH_AND_AUTH", file "HAPROXY_HTTPS_FRONTEND_ROUTING_ONLY_WITH_PATH_AND_AUTH", label GLOBAL, Formatted,
        ["cleanedUpHostname", "realm", "backend"], "Defined by marathon-lb but never used; kept so its name stays valid.";
    HttpFrontendAppidAcl: "HTTP_FRONTEND_APPID_ACL", file "HAPROXY_HTTP_FRONTEND_APPID_ACL", label Some("HTTP_FRONTEND_APPID_ACL"), Formatted,
        ["cleanedUpAppId", "hostname", "appId", "backend"], "App-id ACL and use_backend in the :9091 frontend.";
    MapHttpFrontendAppidAcl: "MAP_HTTP_FRONTEND_APPID_ACL", file "HAPROXY_MAP_HTTP_FRONTEND_APPID_ACL", label Some("HTTP_FRONTEND_APPID_ACL"), Formatted,
        ["haproxy_dir"], "With --haproxy-map: the :9091 use_backend through app2backend.map.";
    HttpsFrontendAcl: "HTTPS_FRONTEND_ACL", file "HAPROXY_HTTPS_FRONTEND_ACL", label Some("HTTPS_FRONTEND_ACL"), Formatted,
        ["cleanedUpHostname", "hostname", "appId", "backend"], "SNI use_backend in the :443 frontend.";
    MapHttpsFrontendAcl: "MAP_HTTPS_FRONTEND_ACL", file "HAPROXY_MAP_HTTPS_FRONTEND_ACL", label Some("HTTPS_FRONTEND_ACL"), Formatted,
        ["hostname", "haproxy_dir"], "With --haproxy-map: the :443 use_backend through domain2backend.map.";
    HttpsFrontendAclWithAuth: "HTTPS_FRONTEND_ACL_WITH_AUTH", file "HAPROXY_HTTPS_FRONTEND_ACL_WITH_AUTH", label Some("HTTPS_FRONTEND_ACL_WITH_AUTH"), Formatted,
        ["cleanedUpHostname", "hostname", "appId", "realm", "backend"], "SNI use_backend with basic auth in the :443 frontend.";
    HttpsFrontendAuthAclOnly: "HTTPS_FRONTEND_AUTH_ACL_ONLY", file "HAPROXY_HTTPS_FRONTEND_AUTH_ACL_ONLY", label GLOBAL, Formatted,
        ["cleanedUpHostname", "backend"], "Defined by marathon-lb but never used; kept so its name stays valid.";
    HttpsFrontendAuthRequestOnly: "HTTPS_FRONTEND_AUTH_REQUEST_ONLY", file "HAPROXY_HTTPS_FRONTEND_AUTH_REQUEST_ONLY", label GLOBAL, Formatted,
        ["realm", "hostname", "cleanedUpHostname"], "Defined by marathon-lb but never used; kept so its name stays valid.";
    HttpsFrontendAclWithPath: "HTTPS_FRONTEND_ACL_WITH_PATH", file "HAPROXY_HTTPS_FRONTEND_ACL_WITH_PATH", label Some("HTTPS_FRONTEND_ACL_WITH_PATH"), Formatted,
        ["cleanedUpHostname", "hostname", "appId", "backend"], "SNI and path use_backend in the :443 frontend.";
    HttpsFrontendAclWithAuthAndPath: "HTTPS_FRONTEND_ACL_WITH_AUTH_AND_PATH", file "HAPROXY_HTTPS_FRONTEND_ACL_WITH_AUTH_AND_PATH", label Some("HTTPS_FRONTEND_ACL_WITH_AUTH_AND_PATH"), Formatted,
        ["cleanedUpHostname", "hostname", "appId", "realm", "backend"], "SNI and path use_backend with basic auth in the :443 frontend.";
    BackendHttpOptions: "BACKEND_HTTP_OPTIONS", file "HAPROXY_BACKEND_HTTP_OPTIONS", label Some("BACKEND_HTTP_OPTIONS"), Verbatim,
        [], "Forwarding headers of an http-mode backend.";
    HttpBackendProxypassGlue: "HTTP_BACKEND_PROXYPASS_GLUE", file "HAPROXY_HTTP_BACKEND_PROXYPASS_GLUE", label Some("HTTP_BACKEND_PROXYPASS_GLUE"), Formatted,
        ["hostname", "proxypath"], "Path-prefix stripping for HAPROXY_{n}_HTTP_BACKEND_PROXYPASS_PATH (ours: http-request replace-path).";
    HttpBackendRevproxyGlue: "HTTP_BACKEND_REVPROXY_GLUE", file "HAPROXY_HTTP_BACKEND_REVPROXY_GLUE", label Some("HTTP_BACKEND_REVPROXY_GLUE"), Formatted,
        ["hostname", "rootpath"], "Location rewriting for HAPROXY_{n}_HTTP_BACKEND_REVPROXY_PATH (ours: http-response replace-header).";
    // No label: `HAPROXY_{n}_HTTP_BACKEND_REDIR` is the redirect path itself in marathon-lb.
    HttpBackendRedir: "HTTP_BACKEND_REDIR", file "HAPROXY_HTTP_BACKEND_REDIR", label GLOBAL, Formatted,
        ["hostname", "redirpath"], "Redirect of the domain root for HAPROXY_{n}_HTTP_BACKEND_REDIR.";
    BackendHttpHealthcheckOptions: "BACKEND_HTTP_HEALTHCHECK_OPTIONS", file "HAPROXY_BACKEND_HTTP_HEALTHCHECK_OPTIONS", label Some("BACKEND_HTTP_HEALTHCHECK_OPTIONS"), Formatted,
        ["healthCheckPortIndex", "healthCheckPort", "healthCheckProtocol", "healthCheckPath", "healthCheckTimeoutSeconds", "healthCheckIntervalSeconds", "healthCheckGracePeriodSeconds", "healthCheckMaxConsecutiveFailures", "healthCheckFalls", "healthCheckPortOptions"],
        "Backend health-check options of an http-mode service with an HTTP health check.";
    BackendTcpHealthcheckOptions: "BACKEND_TCP_HEALTHCHECK_OPTIONS", file "HAPROXY_BACKEND_TCP_HEALTHCHECK_OPTIONS", label Some("BACKEND_TCP_HEALTHCHECK_OPTIONS"), Formatted,
        ["healthCheckPortIndex", "healthCheckPort", "healthCheckProtocol", "healthCheckPath", "healthCheckTimeoutSeconds", "healthCheckIntervalSeconds", "healthCheckGracePeriodSeconds", "healthCheckMaxConsecutiveFailures", "healthCheckFalls", "healthCheckPortOptions"],
        "Backend health-check options of a tcp-mode service (empty by default).";
    BackendStickyOptions: "BACKEND_STICKY_OPTIONS", file "HAPROXY_BACKEND_STICKY_OPTIONS", label Some("BACKEND_STICKY_OPTIONS"), Verbatim,
        [], "The sticky-session cookie for HAPROXY_{n}_STICKY.";
    BackendServerOptions: "BACKEND_SERVER_OPTIONS", file "HAPROXY_BACKEND_SERVER_OPTIONS", label Some("BACKEND_SERVER_OPTIONS"), Formatted,
        ["host", "host_ipv4", "port", "serverName", "serverId", "cookieOptions", "healthCheckOptions", "otherOptions"], "One server line per task.";
    BackendServerHttpHealthcheckOptions: "BACKEND_SERVER_HTTP_HEALTHCHECK_OPTIONS", file "HAPROXY_BACKEND_SERVER_HTTP_HEALTHCHECK_OPTIONS", label Some("BACKEND_SERVER_HTTP_HEALTHCHECK_OPTIONS"), Formatted,
        ["healthCheckPortIndex", "healthCheckPort", "healthCheckProtocol", "healthCheckPath", "healthCheckTimeoutSeconds", "healthCheckIntervalSeconds", "healthCheckGracePeriodSeconds", "healthCheckMaxConsecutiveFailures", "healthCheckFalls", "healthCheckPortOptions"],
        "Check options on each server line of an http-mode service (stripped, then one leading space).";
    BackendServerTcpHealthcheckOptions: "BACKEND_SERVER_TCP_HEALTHCHECK_OPTIONS", file "HAPROXY_BACKEND_SERVER_TCP_HEALTHCHECK_OPTIONS", label Some("BACKEND_SERVER_TCP_HEALTHCHECK_OPTIONS"), Formatted,
        ["healthCheckPortIndex", "healthCheckPort", "healthCheckProtocol", "healthCheckPath", "healthCheckTimeoutSeconds", "healthCheckIntervalSeconds", "healthCheckGracePeriodSeconds", "healthCheckMaxConsecutiveFailures", "healthCheckFalls", "healthCheckPortOptions"],
        "Check options on each server line of a tcp-mode service (stripped, then one leading space).";
    FrontendBackendGlue: "FRONTEND_BACKEND_GLUE", file "HAPROXY_FRONTEND_BACKEND_GLUE", label Some("FRONTEND_BACKEND_GLUE"), Formatted,
        ["backend"], "Sends the service's own frontend to its backend.";
    HttpBackendNetworkAllowedAcl: "HTTP_BACKEND_NETWORK_ALLOWED_ACL", file "HAPROXY_HTTP_BACKEND_NETWORK_ALLOWED_ACL", label Some("HTTP_BACKEND_NETWORK_ALLOWED_ACL"), Formatted,
        ["network_allowed"], "One allowed network of HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL (http mode).";
    HttpBackendAclAllowDeny: "HTTP_BACKEND_ACL_ALLOW_DENY", file "HAPROXY_HTTP_BACKEND_ACL_ALLOW_DENY", label GLOBAL, Verbatim,
        [], "Allows the allowed networks and denies the rest (http mode).";
    TcpBackendNetworkAllowedAcl: "TCP_BACKEND_NETWORK_ALLOWED_ACL", file "HAPROXY_TCP_BACKEND_NETWORK_ALLOWED_ACL", label Some("TCP_BACKEND_NETWORK_ALLOWED_ACL"), Formatted,
        ["network_allowed"], "One allowed network of HAPROXY_{n}_BACKEND_NETWORK_ALLOWED_ACL (tcp mode).";
    TcpBackendAclAllowDeny: "TCP_BACKEND_ACL_ALLOW_DENY", file "HAPROXY_TCP_BACKEND_ACL_ALLOW_DENY", label GLOBAL, Verbatim,
        [], "Accepts the allowed networks and rejects the rest (tcp mode).";
}

impl Name {
    pub fn def(self) -> &'static TemplateDef {
        &TEMPLATES[self as usize]
    }
}

/// Where a section's text came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    Embedded,
    /// A `HAPROXY_{n}_<NAME>` label of the service being rendered.
    Label,
    Environment,
    File(PathBuf),
}

static LABEL_ORIGIN: Origin = Origin::Label;

#[derive(Debug, Clone)]
struct Section {
    text: String,
    syntax: Syntax,
    origin: Origin,
    /// The minijinja template name, for `Syntax::Jinja`.
    jinja_name: String,
    /// The text scanned once for `str.format`, since most sections are filled once per service
    /// or per server.
    compiled: Compiled,
    /// The per-server form of a health-check section (its text stripped, after one space), or
    /// `None` when the stripped text is empty; see [`Templates::server_check_options`].
    stripped: Option<Compiled>,
}

impl Section {
    fn new(text: String, syntax: Syntax, origin: Origin, jinja_name: String) -> Section {
        Section {
            compiled: Compiled::new(&text),
            stripped: stripped_check_options(&text).map(|text| Compiled::new(&text)),
            text,
            syntax,
            origin,
            jinja_name,
        }
    }
}

/// marathon-lb strips a per-server health-check section and puts one space before it; `None`
/// when nothing is left.
fn stripped_check_options(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| format!(" {trimmed}"))
}

/// Every section resolved to its global source (label overrides are per service and looked up
/// at render time), plus the minijinja environment holding the `.j2` sections.
#[derive(Debug)]
pub struct Templates {
    sections: Vec<Section>,
    jinja: Environment<'static>,
    label_templates: bool,
    warnings: Vec<String>,
    /// The run's deadline (`--run-timeout`): rendering past it is an error.
    deadline: Option<Instant>,
}

impl Templates {
    /// Loads every section: a non-empty `HAPROXY_<NAME>` environment value (`\n` escapes become
    /// newlines), else `<NAME>.j2` or `<NAME>` in the templates directory, else the embedded
    /// default. A `.j2` file that names no known section is refused, as it is most likely a typo.
    pub fn load(config: &RenderConfig) -> Result<Templates> {
        Templates::load_with_defaults_for(config, &BTreeSet::new())
    }

    /// [`Templates::load`] with the built-in default in place of the operator's text for the
    /// sections named in `defaults_for` (full names, `HAPROXY_BACKEND_HEAD`): how a rejected
    /// candidate is checked for a fault in the operator's templates rather than an app's.
    pub fn load_with_defaults_for(
        config: &RenderConfig,
        defaults_for: &BTreeSet<String>,
    ) -> Result<Templates> {
        let mut jinja = new_jinja_environment(config.templates_dir.clone());
        let mut sections = Vec::with_capacity(TEMPLATES.len());
        let warnings = match &config.templates_dir {
            Some(dir) => check_templates_dir(dir)?,
            None => Vec::new(),
        };
        for def in TEMPLATES {
            let full_name = def.full_name();
            let operator_text = if defaults_for.contains(&full_name) {
                None
            } else {
                config
                    .template_env
                    .get(&full_name)
                    .filter(|v| !v.is_empty())
            };
            let from_dir = if defaults_for.contains(&full_name) {
                None
            } else {
                config.templates_dir.as_deref()
            };
            let section = match operator_text {
                Some(value) => Section::new(
                    value.replace("\\n", "\n"),
                    Syntax::Format,
                    Origin::Environment,
                    String::new(),
                ),
                None => match read_from_dir(from_dir, &full_name)? {
                    Some(section) => section,
                    None => Section::new(
                        def.default_text.to_string(),
                        syntax_of(def.default_file),
                        Origin::Embedded,
                        def.default_file.to_string(),
                    ),
                },
            };
            if section.syntax == Syntax::Jinja {
                jinja
                    .add_template_owned(section.jinja_name.clone(), section.text.clone())
                    .with_context(|| format!("template {}", describe(def, &section.origin)))
                    .context(Failure::Template)?;
            }
            sections.push(section);
        }
        Ok(Templates {
            sections,
            jinja,
            label_templates: config.label_templates,
            warnings,
            deadline: None,
        })
    }

    /// Renders with these templates end with an error once `deadline` has passed, so that
    /// `--run-timeout` bounds rendering too. Every format spec is bounded, so checking between
    /// services is enough.
    pub fn until(mut self, deadline: Instant) -> Templates {
        self.deadline = Some(deadline);
        self
    }

    /// `Err` once the deadline given to [`Templates::until`] has passed.
    pub fn check_deadline(&self, rendered: usize) -> Result<()> {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => Err(anyhow!(
                "rendering passed the run's deadline (--run-timeout) after {rendered} services; \
                 nothing was changed"
            ))
            .context(Failure::Template),
            _ => Ok(()),
        }
    }

    /// These templates with the built-in defaults for `defaults_for`, under the same deadline.
    pub fn with_defaults_for(
        &self,
        config: &RenderConfig,
        defaults_for: &BTreeSet<String>,
    ) -> Result<Templates> {
        let mut replaced = Templates::load_with_defaults_for(config, defaults_for)?;
        replaced.deadline = self.deadline;
        Ok(replaced)
    }

    /// The full names of the sections the operator wrote (an environment variable or a file
    /// in `--templates`), in table order.
    pub fn operator_sections(&self) -> Vec<String> {
        TEMPLATES
            .iter()
            .zip(&self.sections)
            .filter(|(_, section)| matches!(section.origin, Origin::Environment | Origin::File(_)))
            .map(|(def, _)| def.full_name())
            .collect()
    }

    /// Where the operator's text of section `full_name` came from, for messages: the file, or
    /// the environment variable.
    pub fn operator_source(&self, full_name: &str) -> Option<String> {
        let (def, section) = TEMPLATES
            .iter()
            .zip(&self.sections)
            .find(|(def, _)| def.full_name() == full_name)?;
        match &section.origin {
            Origin::Environment | Origin::File(_) => Some(describe(def, &section.origin)),
            Origin::Embedded | Origin::Label => None,
        }
    }

    /// What loading noticed but did not refuse: files in the templates directory that no
    /// section reads (each named, with the closest section name).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The section run through `str.format` (or jinja) with `vars`.
    pub fn format(&self, name: Name, service: Option<&Service>, vars: &Vars<'_>) -> Result<String> {
        let mut out = String::new();
        self.format_into(name, service, vars, &mut out)?;
        Ok(out)
    }

    /// [`Templates::format`], appended to `out` (which is left as it was on an error).
    pub fn format_into(
        &self,
        name: Name,
        service: Option<&Service>,
        vars: &Vars<'_>,
        out: &mut String,
    ) -> Result<()> {
        self.render_into(name, service, vars, Use::Formatted, out)
    }

    /// The section as marathon-lb pastes it: verbatim, unless it is a jinja file, which is
    /// rendered with `vars`.
    pub fn verbatim(
        &self,
        name: Name,
        service: Option<&Service>,
        vars: &Vars<'_>,
    ) -> Result<String> {
        let mut out = String::new();
        self.verbatim_into(name, service, vars, &mut out)?;
        Ok(out)
    }

    /// [`Templates::verbatim`], appended to `out` (which is left as it was on an error).
    pub fn verbatim_into(
        &self,
        name: Name,
        service: Option<&Service>,
        vars: &Vars<'_>,
        out: &mut String,
    ) -> Result<()> {
        self.render_into(name, service, vars, Use::Verbatim, out)
    }

    /// A per-server health-check section: marathon-lb strips its text and prefixes one space,
    /// so `""` means "no options".
    pub fn server_check_options(
        &self,
        name: Name,
        service: &Service,
        vars: &Vars<'_>,
    ) -> Result<String> {
        let (text, syntax, origin) = self.resolve(name, Some(service));
        let rendered = match syntax {
            Syntax::Format => {
                let label_text;
                let compiled = match origin {
                    Origin::Label => match stripped_check_options(text) {
                        Some(stripped) => {
                            label_text = Compiled::new(&stripped);
                            &label_text
                        }
                        None => return Ok(String::new()),
                    },
                    _ => match &self.sections[name as usize].stripped {
                        Some(compiled) => compiled,
                        None => return Ok(String::new()),
                    },
                };
                let mut out = String::with_capacity(compiled.text().len() + 32);
                compiled.fill(vars, &mut out).map_err(|err| {
                    format_failure(name.def(), origin, Some(service), anyhow::Error::new(err))
                })?;
                confine_label(name.def(), origin, Some(service), out)?
            }
            Syntax::Jinja => {
                let out = self.render_jinja(name, origin, Some(service), vars)?;
                stripped_check_options(&out).unwrap_or_default()
            }
        };
        Ok(rendered)
    }

    /// Whether the section's source text is empty (marathon-lb skips an empty backend
    /// health-check section entirely).
    pub fn is_empty(&self, name: Name, service: Option<&Service>) -> bool {
        self.resolve(name, service).0.is_empty()
    }

    fn render_into(
        &self,
        name: Name,
        service: Option<&Service>,
        vars: &Vars<'_>,
        usage: Use,
        out: &mut String,
    ) -> Result<()> {
        debug_assert!(
            name.def()
                .placeholders
                .iter()
                .all(|p| vars.iter().any(|(key, _)| key == p)),
            "{:?} rendered without one of its documented placeholders",
            name
        );
        let (text, syntax, origin) = self.resolve(name, service);
        match (syntax, usage, origin) {
            (Syntax::Jinja, _, _) => {
                out.push_str(&self.render_jinja(name, origin, service, vars)?);
            }
            // A label's output is checked before it joins the rest.
            (Syntax::Format, usage, Origin::Label) => {
                let label_out = match usage {
                    Use::Verbatim => text.to_string(),
                    Use::Formatted => format::format(text, vars).map_err(|err| {
                        format_failure(name.def(), origin, service, anyhow::Error::new(err))
                    })?,
                };
                out.push_str(&confine_label(name.def(), origin, service, label_out)?);
            }
            (Syntax::Format, Use::Verbatim, _) => out.push_str(text),
            (Syntax::Format, Use::Formatted, _) => {
                let start = out.len();
                let compiled = &self.sections[name as usize].compiled;
                if let Err(err) = compiled.fill(vars, out) {
                    out.truncate(start);
                    return Err(format_failure(
                        name.def(),
                        origin,
                        service,
                        anyhow::Error::new(err),
                    ));
                }
            }
        }
        Ok(())
    }

    fn render_jinja(
        &self,
        name: Name,
        origin: &Origin,
        service: Option<&Service>,
        vars: &Vars<'_>,
    ) -> Result<String> {
        let section = &self.sections[name as usize];
        let context: BTreeMap<&str, minijinja::Value> = vars
            .iter()
            .map(|(key, value)| (*key, jinja_value(value)))
            .collect();
        self.jinja
            .get_template(&section.jinja_name)
            .and_then(|template| template.render(context))
            .map_err(|err| anyhow::anyhow!("{err:#}"))
            .with_context(|| match service {
                Some(service) => describe_for(name.def(), origin, service),
                None => format!("template {}", describe(name.def(), origin)),
            })
            .context(Failure::Template)
    }

    /// The text in force for `service`: its label when allowed, else the global section.
    fn resolve<'a>(
        &'a self,
        name: Name,
        service: Option<&'a Service>,
    ) -> (&'a str, Syntax, &'a Origin) {
        let def = name.def();
        if let (Some(label), Some(service), true) = (def.label, service, self.label_templates) {
            if let Some(text) = service.extras().template_labels.get(label) {
                return (text, Syntax::Format, &LABEL_ORIGIN);
            }
        }
        let section = &self.sections[name as usize];
        (&section.text, section.syntax, &section.origin)
    }
}

/// Why one app cannot be rendered, found while rendering: mostly its own template label
/// (`HAPROXY_{n}_<NAME>`) that does not format or leaves its section, else a fact of its
/// services (a backend with more servers than ids). marathon-lb fails the whole run over
/// either; the run leaves that app out with a warning instead, as the model does for a label
/// that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTemplateLabel {
    pub app_id: String,
    pub service_port: u32,
    /// The label's suffix, e.g. `BACKEND_HEAD`; `None` when no label is at fault.
    pub label: Option<&'static str>,
    /// marathon-lb's name of the section the label stood in for, when it differs from the
    /// label's (the map sections answer to the plain ACL labels).
    pub section: &'static str,
    pub reason: String,
}

impl BadTemplateLabel {
    /// The description without the app, for a warning that names the app already.
    pub fn without_app(&self) -> String {
        let Some(label) = self.label else {
            return format!("service port {}: {}", self.service_port, self.reason);
        };
        let mut text = format!(
            "template label HAPROXY_{{n}}_{label} (service port {})",
            self.service_port
        );
        if self.section != label {
            text += &format!(", used as HAPROXY_{} here", self.section);
        }
        text + ": " + &self.reason
    }
}

impl std::fmt::Display for BadTemplateLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(label) = self.label else {
            return write!(
                f,
                "app {} (service port {}): {}",
                self.app_id, self.service_port, self.reason
            );
        };
        write!(
            f,
            "template label HAPROXY_{{n}}_{label} of app {} (service port {})",
            self.app_id, self.service_port
        )?;
        if self.section != label {
            write!(f, ", used as HAPROXY_{} here", self.section)?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for BadTemplateLabel {}

/// Every [`BadTemplateLabel`] one render pass met, in rendering order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadTemplateLabels(pub Vec<BadTemplateLabel>);

impl std::fmt::Display for BadTemplateLabels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let texts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&texts.join("; "))
    }
}

impl std::error::Error for BadTemplateLabels {}

/// The error for a section that did not format: a [`BadTemplateLabel`] when the text came from
/// the service's label, else the reason under a description of the section's source.
fn format_failure(
    def: &TemplateDef,
    origin: &Origin,
    service: Option<&Service>,
    reason: anyhow::Error,
) -> anyhow::Error {
    match (origin, service) {
        (Origin::Label, Some(service)) => anyhow::Error::new(BadTemplateLabel {
            app_id: service.app_id.clone(),
            service_port: service.service_port,
            label: Some(def.label.unwrap_or(def.short_name)),
            section: def.short_name,
            reason: format!("{reason:#}"),
        }),
        (_, Some(service)) => reason.context(describe_for(def, origin, service)),
        (_, None) => reason.context(format!("template {}", describe(def, origin))),
    }
    .context(Failure::Template)
}

/// A label's output, with its placeholders filled in, must still stay inside the section the
/// label stands in for (`model::confine`): a placeholder at the start of a line, or a head
/// label opening another kind of section, is only visible here. Operator templates are the
/// operator's and pass unchecked.
fn confine_label(
    def: &TemplateDef,
    origin: &Origin,
    service: Option<&Service>,
    out: String,
) -> Result<String> {
    let (Origin::Label, Some(service)) = (origin, service) else {
        return Ok(out);
    };
    match confine::check(&out, confine::heading_of(def.short_name)) {
        Ok(()) => Ok(out),
        Err(why) => Err(format_failure(
            def,
            origin,
            Some(service),
            anyhow!("{why} (after its placeholders were filled in)"),
        )),
    }
}

fn describe(def: &TemplateDef, origin: &Origin) -> String {
    match origin {
        Origin::Embedded => format!(
            "{} (built-in default {})",
            def.full_name(),
            def.default_file
        ),
        Origin::Label => format!("{} (from a label)", def.full_name()),
        Origin::Environment => format!("{} (from the environment variable)", def.full_name()),
        Origin::File(path) => format!("{} (from {})", def.full_name(), path.display()),
    }
}

fn describe_for(def: &TemplateDef, origin: &Origin, service: &Service) -> String {
    match origin {
        Origin::Label => format!(
            "template label HAPROXY_{{n}}_{} of app {} (service port {})",
            def.label.unwrap_or(def.short_name),
            service.app_id,
            service.service_port
        ),
        other => format!(
            "template {} for app {} (service port {})",
            describe(def, other),
            service.app_id,
            service.service_port
        ),
    }
}

fn syntax_of(file_name: &str) -> Syntax {
    if file_name.ends_with(".j2") {
        Syntax::Jinja
    } else {
        Syntax::Format
    }
}

/// `<dir>/<NAME>.j2` (preferred) or `<dir>/<NAME>`. Python reads these files in text mode,
/// which turns `\r\n` and lone `\r` into `\n`; so do we.
fn read_from_dir(dir: Option<&Path>, full_name: &str) -> Result<Option<Section>> {
    let Some(dir) = dir else { return Ok(None) };
    for (file_name, syntax) in [
        (format!("{full_name}.j2"), Syntax::Jinja),
        (full_name.to_string(), Syntax::Format),
    ] {
        let path = dir.join(&file_name);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return Ok(Some(Section::new(
                    text.replace("\r\n", "\n").replace('\r', "\n"),
                    syntax,
                    Origin::File(path),
                    file_name,
                )))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err)
                    .with_context(|| format!("reading template {}", path.display()))
                    .context(Failure::Template)
            }
        }
    }
    Ok(None)
}

/// The templates directory must exist and be a directory (marathon-lb silently renders its
/// defaults without one, replacing the operator's global and defaults sections). A `.j2` file
/// that names no section is refused, as it is most likely a typo; any other file named like
/// a section (`HAPROXY_...`, or a few edits from a section's name) that no section reads gives
/// a warning naming it and the closest section name.
fn check_templates_dir(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            let why = match err.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_string(),
                std::io::ErrorKind::NotADirectory => "is not a directory".to_string(),
                _ => err.to_string(),
            };
            return Err(anyhow!(
                "templates directory {} {why}; nothing was changed (check --templates)",
                dir.display()
            ))
            .context(Failure::Template);
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    let mut warnings = Vec::new();
    for file_name in names {
        let (stem, jinja) = match file_name.strip_suffix(".j2") {
            Some(stem) => (stem, true),
            None => (file_name.as_str(), false),
        };
        if TEMPLATES.iter().any(|def| def.full_name() == stem) {
            continue;
        }
        let closest = closest_template_name(stem);
        // Other files may be there on purpose: pieces that `.j2` templates include.
        if closest.is_none() && !stem.to_ascii_uppercase().starts_with("HAPROXY_") {
            continue;
        }
        let hint = match closest {
            Some(name) => format!("; did you mean {name}?"),
            None => "; see the template table for the names".to_string(),
        };
        let path = dir.join(&file_name);
        if jinja && stem.starts_with("HAPROXY_") {
            return Err(anyhow!(
                "{}: no template section is named {stem}{hint}",
                path.display()
            ))
            .context(Failure::Template);
        }
        warnings.push(format!(
            "template file {} matches no template section and is not used{hint}",
            path.display()
        ));
    }
    Ok(warnings)
}

/// The section name nearest to `name` by edit distance, if it is near enough to be a typo.
fn closest_template_name(name: &str) -> Option<String> {
    let (distance, closest) = TEMPLATES
        .iter()
        .map(|def| {
            let full = def.full_name();
            (edit_distance(name, &full), full)
        })
        .min()?;
    (distance <= 4.max(name.len() / 8)).then_some(closest)
}

/// Levenshtein distance over characters (insert, delete, substitute).
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

/// minijinja as the templates need it: whitespace exact, undefined names are errors, and
/// `{% include %}` / `{% import %}` read only plain file names from the templates directory.
fn new_jinja_environment(dir: Option<PathBuf>) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_keep_trailing_newline(true);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_loader(move |name| {
        let Some(dir) = &dir else { return Ok(None) };
        if !is_plain_file_name(name) {
            return Err(minijinja::Error::new(
                minijinja::ErrorKind::TemplateNotFound,
                format!("{name:?} is not a plain file name in the templates directory"),
            ));
        }
        match std::fs::read_to_string(dir.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("reading {}: {err}", dir.join(name).display()),
            )),
        }
    });
    env
}

/// Refuses `..`, hidden files and anything with a path separator.
pub fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

fn jinja_value(value: &Value<'_>) -> minijinja::Value {
    match value {
        Value::Str(text) => minijinja::Value::from(text.as_ref()),
        Value::Int(number) => minijinja::Value::from(*number),
        Value::None => minijinja::Value::from(()),
    }
}

/// The template reference as Markdown, generated from [`TEMPLATES`] (for the docs and the man
/// page, and for tests that check those against the table).
pub fn reference_markdown() -> String {
    let mut out = String::new();
    for def in TEMPLATES {
        out += &format!("### `{}`\n\n{}\n\n", def.full_name(), def.description);
        out += &match def.label {
            Some(label) => {
                format!("Overridable per service port with the label `HAPROXY_{{n}}_{label}`.\n\n")
            }
            None => "Global only.\n\n".to_string(),
        };
        if def.usage == Use::Verbatim {
            out += "marathon-lb pastes this section verbatim; a `.j2` file is rendered.\n\n";
        }
        if !def.placeholders.is_empty() {
            let names: Vec<String> = def.placeholders.iter().map(|p| format!("`{p}`")).collect();
            out += &format!("Placeholders: {}.\n\n", names.join(", "));
        }
        out += &format!(
            "Default (`templates/{}`):\n\n```\n{}```\n\n",
            def.default_file, def.default_text
        );
    }
    out
}
