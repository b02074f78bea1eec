//! The per-service-port label table (`HAPROXY_{n}_*`) and how each label sets a [`Service`]
//! field, with marathon-lb's parsing rules (Python `int()`, its `string_to_bool`, CRLF→LF for
//! template labels). Pure; a value that does not parse is returned as a [`LabelError`], never a
//! panic.

use super::{Auth, Service};
use crate::marathon::Labels;

/// What a label does to its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelKind {
    /// `realm:user:crypted-password`, exactly three `:`-separated fields.
    Auth,
    /// Comma-separated virtual hosts, lower-cased.
    Vhost,
    /// Comma-separated groups of this port; they replace `HAPROXY_GROUP`.
    Group,
    /// `path_beg` arguments; also raises a zero backend weight to 1.
    Path,
    Sticky,
    Enabled,
    RedirectToHttps,
    UseHsts,
    SslCert,
    BindOptions,
    BindAddr,
    /// The bind port (an integer), replacing the service port.
    Port,
    /// `http` or `tcp`, lower-cased.
    Mode,
    Balance,
    ProxyPath,
    RevProxyPath,
    RedirPath,
    /// An integer; backends with a larger weight come first in the frontends.
    BackendWeight,
    NetworkAllowed,
    /// An integer: the port index whose health check this port uses.
    HealthcheckPortIndex,
    /// A raw template section replacing the template of the same name for this port.
    Template,
}

/// One `HAPROXY_{n}_<name>` label.
#[derive(Debug)]
pub struct LabelSpec {
    /// The name after `HAPROXY_{n}_`.
    pub name: &'static str,
    pub kind: LabelKind,
    pub doc: &'static str,
}

const fn label(name: &'static str, kind: LabelKind, doc: &'static str) -> LabelSpec {
    LabelSpec { name, kind, doc }
}

const TEMPLATE_DOC: &str = "Replaces the template of the same name (HAPROXY_<NAME>) for this port.";

/// Every per-port label, sorted by name: marathon-lb applies them in this order, which matters
/// where one label reads what another set (`PATH` raises a zero `BACKEND_WEIGHT` to 1).
pub const LABELS: &[LabelSpec] = &[
    label(
        "AUTH",
        LabelKind::Auth,
        "HTTP basic auth as realm:user:crypted-password (a crypt(3) hash such as $6$salt$hash).",
    ),
    label("BACKEND_HEAD", LabelKind::Template, TEMPLATE_DOC),
    label(
        "BACKEND_HEALTHCHECK_PORT_INDEX",
        LabelKind::HealthcheckPortIndex,
        "Port index whose health check (and backend port) checks this service port.",
    ),
    label("BACKEND_HSTS_OPTIONS", LabelKind::Template, TEMPLATE_DOC),
    label(
        "BACKEND_HTTP_HEALTHCHECK_OPTIONS",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label("BACKEND_HTTP_OPTIONS", LabelKind::Template, TEMPLATE_DOC),
    label(
        "BACKEND_NETWORK_ALLOWED_ACL",
        LabelKind::NetworkAllowed,
        "Space-separated networks allowed to reach the backend; others are denied.",
    ),
    label(
        "BACKEND_REDIRECT_HTTP_TO_HTTPS",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "BACKEND_REDIRECT_HTTP_TO_HTTPS_WITH_PATH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "BACKEND_SERVER_HTTP_HEALTHCHECK_OPTIONS",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label("BACKEND_SERVER_OPTIONS", LabelKind::Template, TEMPLATE_DOC),
    label(
        "BACKEND_SERVER_TCP_HEALTHCHECK_OPTIONS",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label("BACKEND_STICKY_OPTIONS", LabelKind::Template, TEMPLATE_DOC),
    label(
        "BACKEND_TCP_HEALTHCHECK_OPTIONS",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "BACKEND_WEIGHT",
        LabelKind::BackendWeight,
        "Integer of any size ordering the backend's ACLs: larger weights first (default 0, 1 with \
         a PATH).",
    ),
    label(
        "BALANCE",
        LabelKind::Balance,
        "Load-balancing algorithm (default roundrobin).",
    ),
    label(
        "BIND_ADDR",
        LabelKind::BindAddr,
        "Address the service frontend binds (default *).",
    ),
    label(
        "BIND_OPTIONS",
        LabelKind::BindOptions,
        "Extra options of the frontend's bind line.",
    ),
    label(
        "ENABLED",
        LabelKind::Enabled,
        "Whether the port is exposed (true/t/yes/y).",
    ),
    label("FRONTEND_BACKEND_GLUE", LabelKind::Template, TEMPLATE_DOC),
    label("FRONTEND_HEAD", LabelKind::Template, TEMPLATE_DOC),
    label(
        "GROUP",
        LabelKind::Group,
        "Comma-separated groups of this port (overrides HAPROXY_GROUP).",
    ),
    label("HTTPS_FRONTEND_ACL", LabelKind::Template, TEMPLATE_DOC),
    label(
        "HTTPS_FRONTEND_ACL_ONLY_WITH_PATH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTPS_FRONTEND_ACL_WITH_AUTH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTPS_FRONTEND_ACL_WITH_AUTH_AND_PATH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTPS_FRONTEND_ACL_WITH_PATH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_BACKEND_NETWORK_ALLOWED_ACL",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_BACKEND_PROXYPASS_GLUE",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_BACKEND_PROXYPASS_PATH",
        LabelKind::ProxyPath,
        "Path prefix rewritten away before requests reach the backend.",
    ),
    label(
        "HTTP_BACKEND_REDIR",
        LabelKind::RedirPath,
        "Path the root of the vhost redirects to.",
    ),
    label(
        "HTTP_BACKEND_REVPROXY_GLUE",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_BACKEND_REVPROXY_PATH",
        LabelKind::RevProxyPath,
        "Path prefix put back into Location headers of responses.",
    ),
    label("HTTP_FRONTEND_ACL", LabelKind::Template, TEMPLATE_DOC),
    label("HTTP_FRONTEND_ACL_ONLY", LabelKind::Template, TEMPLATE_DOC),
    label(
        "HTTP_FRONTEND_ACL_ONLY_WITH_PATH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_FRONTEND_ACL_ONLY_WITH_PATH_AND_AUTH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_FRONTEND_ACL_WITH_AUTH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_FRONTEND_ACL_WITH_AUTH_AND_PATH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_FRONTEND_ACL_WITH_PATH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label("HTTP_FRONTEND_APPID_ACL", LabelKind::Template, TEMPLATE_DOC),
    label(
        "HTTP_FRONTEND_ROUTING_ONLY",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_FRONTEND_ROUTING_ONLY_WITH_AUTH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "HTTP_FRONTEND_ROUTING_ONLY_WITH_PATH_AND_AUTH",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label("MAP_HTTPS_FRONTEND_ACL", LabelKind::Template, TEMPLATE_DOC),
    label("MAP_HTTP_FRONTEND_ACL", LabelKind::Template, TEMPLATE_DOC),
    label(
        "MAP_HTTP_FRONTEND_ACL_ONLY",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "MAP_HTTP_FRONTEND_APPID_ACL",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label(
        "MODE",
        LabelKind::Mode,
        "http or tcp (lower-cased); an HTTP health check sets http first.",
    ),
    label(
        "PATH",
        LabelKind::Path,
        "Path prefixes to route (path_beg arguments); needs a VHOST.",
    ),
    label(
        "PORT",
        LabelKind::Port,
        "Integer bind port replacing the service port.",
    ),
    label(
        "REDIRECT_TO_HTTPS",
        LabelKind::RedirectToHttps,
        "Redirect plain HTTP to HTTPS (true/t/yes/y).",
    ),
    label(
        "SSL_CERT",
        LabelKind::SslCert,
        "Certificate for the service frontend's bind line.",
    ),
    label(
        "STICKY",
        LabelKind::Sticky,
        "Cookie-based sticky sessions (true/t/yes/y).",
    ),
    label(
        "TCP_BACKEND_NETWORK_ALLOWED_ACL",
        LabelKind::Template,
        TEMPLATE_DOC,
    ),
    label("USERLIST_HEAD", LabelKind::Template, TEMPLATE_DOC),
    label(
        "USE_HSTS",
        LabelKind::UseHsts,
        "Send Strict-Transport-Security (true/t/yes/y).",
    ),
    label(
        "VHOST",
        LabelKind::Vhost,
        "Virtual host name(s), comma-separated (spaces around names kept), lower-cased.",
    ),
];

/// App-level labels (no port index), with what they do. `HAPROXY_DEPLOYMENT_ALT_PORT` and
/// `HAPROXY_DEPLOYMENT_COLOUR` are zdd.py's bookkeeping and do not change the output.
pub const APP_LABELS: &[(&str, &str)] = &[
    (
        "HAPROXY_GROUP",
        "Comma-separated groups of every port of the app.",
    ),
    (
        "HAPROXY_DEPLOYMENT_GROUP",
        "Blue/green: apps sharing it merge into one app named /<group>.",
    ),
    (
        "HAPROXY_DEPLOYMENT_STARTED_AT",
        "Blue/green: ISO-8601 start of the deployment; the later app is the new one.",
    ),
    (
        "HAPROXY_DEPLOYMENT_NEW_INSTANCES",
        "Blue/green: when present (any value), the new app is the one scaled last and \
         HAPROXY_DEPLOYMENT_TARGET_INSTANCES applies.",
    ),
    (
        "HAPROXY_DEPLOYMENT_TARGET_INSTANCES",
        "Blue/green: instance count sought; old tasks beyond it drain.",
    ),
    (
        "HAPROXY_DEPLOYMENT_ALT_PORT",
        "Blue/green: zdd.py's alternate service port.",
    ),
    (
        "HAPROXY_DEPLOYMENT_COLOUR",
        "Blue/green: zdd.py's deployment colour.",
    ),
];

/// A label value that does not parse; the app is left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    /// The full label name, e.g. `HAPROXY_0_PORT`.
    pub label: String,
    pub message: String,
}

/// The app's per-port labels grouped by port index, each group in table order.
#[derive(Debug, Default)]
pub struct PortLabels<'a> {
    /// Sorted by port index, then by name: one list (one allocation per app, none without
    /// port labels), where a tree of lists per index cost a node and a list per app.
    by_index: Vec<(usize, &'static LabelSpec, &'a str)>,
}

impl<'a> PortLabels<'a> {
    /// Picks the `HAPROXY_{n}_<NAME>` labels out of an app's labels. `{n}` must be written as
    /// Python formats an index (no sign, no leading zero), or marathon-lb would not see it.
    pub fn new(labels: &'a Labels) -> PortLabels<'a> {
        let mut by_index = Vec::new();
        for (key, value) in labels.range("HAPROXY_0", "HAPROXY_:") {
            let Some((index, name)) = split_port_label(key) else {
                continue;
            };
            let Ok(position) = LABELS.binary_search_by(|spec| spec.name.cmp(name)) else {
                continue;
            };
            by_index.push((index, &LABELS[position], value));
        }
        // Stable: labels of one index and name (a JSON object may repeat a key) keep their
        // order, as they did grouped by index and then sorted by name.
        by_index.sort_by_key(|&(index, spec, _)| (index, spec.name));
        PortLabels { by_index }
    }

    /// The labels of port `index`, in the order marathon-lb applies them.
    pub fn of_port(
        &self,
        index: usize,
    ) -> impl Iterator<Item = (&'static LabelSpec, &'a str)> + '_ {
        let start = self.by_index.partition_point(|&(at, _, _)| at < index);
        self.by_index[start..]
            .iter()
            .take_while(move |&&(at, _, _)| at == index)
            .map(|&(_, spec, value)| (spec, value))
    }
}

/// `HAPROXY_12_VHOST` → `(12, "VHOST")`.
fn split_port_label(key: &str) -> Option<(usize, &str)> {
    let rest = key.strip_prefix("HAPROXY_")?;
    let (digits, name) = rest.split_once('_')?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    Some((digits.parse().ok()?, name))
}

/// Applies one label to its service, as marathon-lb's setter for it does.
pub fn apply(
    service: &mut Service,
    spec: &LabelSpec,
    index: usize,
    value: &str,
) -> Result<(), LabelError> {
    let error = |message: String| LabelError {
        label: format!("HAPROXY_{index}_{}", spec.name),
        message,
    };
    super::safety::check(spec.kind, value)
        .map_err(|why| error(format!("{}: {why}", super::fields::shown(value))))?;
    match spec.kind {
        LabelKind::Auth => {
            let fields: Vec<&str> = value.split(':').collect();
            let [realm, user, password] = fields.as_slice() else {
                return Err(error(format!(
                    "expected realm:user:password (three ':'-separated fields), got {} field(s)",
                    fields.len()
                )));
            };
            service.extras_mut().auth = Some(Auth {
                realm: realm.to_string(),
                user: user.to_string(),
                password: password.to_string(),
            });
        }
        LabelKind::Vhost => service.hostname = Some(value.to_lowercase()),
        LabelKind::Group => service.haproxy_groups = split_commas(value),
        LabelKind::Path => {
            service.path = Some(value.to_string());
            if service.backend_weight == 0 {
                service.backend_weight = 1;
            }
        }
        LabelKind::Sticky => service.sticky = string_to_bool(value),
        LabelKind::Enabled => service.enabled = string_to_bool(value),
        LabelKind::RedirectToHttps => service.redirect_http_to_https = string_to_bool(value),
        LabelKind::UseHsts => service.use_hsts = string_to_bool(value),
        LabelKind::SslCert => service.extras_mut().ssl_cert = Some(value.to_string()),
        LabelKind::BindOptions => service.extras_mut().bind_options = Some(value.to_string()),
        LabelKind::BindAddr => service.bind_addr = value.to_string().into(),
        LabelKind::Port => {
            let port = python_integer(value).ok_or_else(|| error(not_an_integer(value)))?;
            service.service_port = port
                .to_i64()
                .and_then(|port| u32::try_from(port).ok())
                .ok_or_else(|| {
                    error(format!(
                        "port {} is out of range",
                        super::fields::escaped(&port.to_string())
                    ))
                })?;
        }
        LabelKind::Mode => service.mode = Some(value.to_lowercase().into()),
        LabelKind::Balance => service.balance = value.to_string().into(),
        LabelKind::ProxyPath => service.extras_mut().proxypath = Some(value.to_string()),
        LabelKind::RevProxyPath => service.extras_mut().revproxypath = Some(value.to_string()),
        LabelKind::RedirPath => service.extras_mut().redirpath = Some(value.to_string()),
        LabelKind::BackendWeight => {
            // Beyond i64 the model orders it exactly afterwards (`PyInt`, `build`).
            service.backend_weight = python_integer(value)
                .ok_or_else(|| error(not_an_integer(value)))?
                .saturating_i64();
        }
        LabelKind::NetworkAllowed => service.extras_mut().network_allowed = Some(value.to_string()),
        LabelKind::HealthcheckPortIndex => {
            // Saturating is exact here: any index beyond the port count falls back alike.
            let index = python_integer(value).ok_or_else(|| error(not_an_integer(value)))?;
            service.extras_mut().healthcheck_port_index = Some(index.saturating_i64());
        }
        LabelKind::Template => {
            service
                .extras_mut()
                .template_labels
                .insert(spec.name.to_string(), normalize_line_endings(value));
        }
    }
    Ok(())
}

fn not_an_integer(value: &str) -> String {
    format!("{} is not an integer", super::fields::shown(value))
}

/// Python's `str.split(',')`: an empty string is one empty group.
pub fn split_commas(value: &str) -> Vec<String> {
    // Sized to its groups: a service keeps the list for the run.
    let mut groups = Vec::with_capacity(value.bytes().filter(|&b| b == b',').count() + 1);
    groups.extend(value.split(',').map(str::to_string));
    groups
}

/// marathon-lb's `string_to_bool`: true, t, yes, y in any case; anything else is false.
pub fn string_to_bool(value: &str) -> bool {
    matches!(value.to_lowercase().as_str(), "true" | "t" | "yes" | "y")
}

/// marathon-lb normalises CRLF in template labels (it leaves lone CRs alone).
pub fn normalize_line_endings(value: &str) -> String {
    value.replace("\r\n", "\n")
}

/// An integer as Python's `int()` reads it: of any size, as marathon-lb's labels are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PyInt {
    /// Never true for zero.
    negative: bool,
    /// Decimal digits without leading zeros ("0" for zero).
    digits: String,
}

impl PyInt {
    /// The value when it fits `i64`.
    pub fn to_i64(&self) -> Option<i64> {
        let magnitude: i128 = self.digits.parse().ok()?;
        i64::try_from(if self.negative { -magnitude } else { magnitude }).ok()
    }

    /// The value, or the nearest `i64` bound beyond it.
    pub fn saturating_i64(&self) -> i64 {
        self.to_i64()
            .unwrap_or(if self.negative { i64::MIN } else { i64::MAX })
    }

    fn cmp_magnitude(&self, other: &PyInt) -> std::cmp::Ordering {
        (self.digits.len(), &self.digits).cmp(&(other.digits.len(), &other.digits))
    }
}

impl From<i64> for PyInt {
    fn from(value: i64) -> PyInt {
        PyInt {
            negative: value < 0,
            digits: value.unsigned_abs().to_string(),
        }
    }
}

impl Ord for PyInt {
    fn cmp(&self, other: &PyInt) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        match (self.negative, other.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl PartialOrd for PyInt {
    fn partial_cmp(&self, other: &PyInt) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for PyInt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.negative { "-" } else { "" };
        write!(f, "{sign}{}", self.digits)
    }
}

/// Python's `int(text)` for base 10: surrounding whitespace, an optional sign, ASCII digits
/// with single `_` between them, leading zeros allowed, any size. `None` where Python raises,
/// and (unlike Python) for non-ASCII decimal digits.
pub fn python_integer(text: &str) -> Option<PyInt> {
    let trimmed = text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c));
    let (negative, digits) = match trimmed.as_bytes().first()? {
        b'-' => (true, &trimmed[1..]),
        b'+' => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let bytes = digits.as_bytes();
    if bytes.is_empty() || !bytes[0].is_ascii_digit() || !bytes[bytes.len() - 1].is_ascii_digit() {
        return None;
    }
    let mut kept = String::with_capacity(bytes.len());
    let mut previous_underscore = false;
    for &byte in bytes {
        match byte {
            b'_' if previous_underscore => return None,
            b'_' => previous_underscore = true,
            b'0'..=b'9' => {
                previous_underscore = false;
                if !(kept.is_empty() && byte == b'0') {
                    kept.push(char::from(byte));
                }
            }
            _ => return None,
        }
    }
    if kept.is_empty() {
        kept.push('0');
    }
    Some(PyInt {
        negative: negative && kept != "0",
        digits: kept,
    })
}

/// [`python_integer`] within `i64`; `None` beyond it too.
pub fn python_int(text: &str) -> Option<i64> {
    python_integer(text)?.to_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_by_name_and_unique() {
        for pair in LABELS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
        assert_eq!(LABELS.len(), 59);
    }

    #[test]
    fn python_int_accepts_what_python_accepts() {
        for (text, value) in [
            ("80", 80),
            (" 8080 ", 8080),
            ("\t+9090\n", 9090),
            ("08081", 8081),
            ("-5", -5),
            ("1_000", 1000),
            ("-0", 0),
            ("0_0", 0),
        ] {
            assert_eq!(python_int(text), Some(value), "{text:?}");
        }
    }

    #[test]
    fn python_int_rejects_what_python_rejects() {
        for text in [
            "", " ", "http", "1.5", "_1", "1_", "1__0", "+", "--1", "+-1", "0x10", "1 2", "١٢",
        ] {
            assert_eq!(python_int(text), None, "{text:?}");
        }
        assert_eq!(python_int("99999999999999999999"), None);
    }

    #[test]
    fn python_integers_have_no_size_limit_and_order_as_python_does() {
        let int = |text: &str| python_integer(text).unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            int("99999999999999999999").to_string(),
            "99999999999999999999"
        );
        assert_eq!(int("-0_000").to_string(), "0");
        assert_eq!(int("007").to_i64(), Some(7));
        assert_eq!(int("99999999999999999999").to_i64(), None);
        assert_eq!(int("99999999999999999999").saturating_i64(), i64::MAX);
        assert_eq!(int("-99999999999999999999").saturating_i64(), i64::MIN);
        assert_eq!(int("-9223372036854775808").to_i64(), Some(i64::MIN));
        let mut sorted = [
            "100000000000000000000",
            "-5",
            "99999999999999999999",
            "0",
            "-100000000000000000000",
            "9223372036854775807",
            "-99999999999999999999",
        ]
        .map(int);
        sorted.sort();
        let texts: Vec<String> = sorted.iter().map(PyInt::to_string).collect();
        assert_eq!(
            texts,
            [
                "-100000000000000000000",
                "-99999999999999999999",
                "-5",
                "0",
                "9223372036854775807",
                "99999999999999999999",
                "100000000000000000000"
            ]
        );
        assert_eq!(PyInt::from(-3), int("-3"));
    }

    #[test]
    fn string_to_bool_matches_marathon_lb() {
        for yes in ["true", "True", "T", "t", "yes", "YES", "y", "Y"] {
            assert!(string_to_bool(yes), "{yes}");
        }
        for no in ["false", "1", "on", "", " true", "enabled"] {
            assert!(!string_to_bool(no), "{no}");
        }
    }

    #[test]
    fn port_labels_need_python_formatted_indices() {
        let labels: Labels = [
            ("HAPROXY_0_VHOST", "a"),
            ("HAPROXY_00_VHOST", "b"),
            ("HAPROXY_1_PATH", "/p"),
            ("HAPROXY_1_BACKEND_WEIGHT", "3"),
            ("HAPROXY_1_NOT_A_LABEL", "x"),
            ("HAPROXY_GROUP", "external"),
            ("HAPROXY_10_MODE", "http"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let port_labels = PortLabels::new(&labels);
        let names = |index| -> Vec<&str> {
            port_labels
                .of_port(index)
                .map(|(spec, _)| spec.name)
                .collect()
        };
        assert_eq!(names(0), ["VHOST"]);
        assert_eq!(names(1), ["BACKEND_WEIGHT", "PATH"]);
        assert_eq!(names(10), ["MODE"]);
        assert!(names(2).is_empty());
    }
}
