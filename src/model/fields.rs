//! The grammar of every Marathon string that is not a label but reaches the configuration: app
//! ids (and `HAPROXY_DEPLOYMENT_GROUP`, which becomes one) are backend, frontend and map names;
//! task hosts and addresses are server names and addresses; a health check's `path` and
//! `protocol` are pasted into check options. Anyone who can deploy to Marathon writes these (and
//! anyone between us and a plain-http Marathon), so each is checked here, once, while the model
//! is built; a value outside its grammar never reaches `render`.
//!
//! Not checked, because nothing of them reaches the configuration: a health check's `command`
//! (Marathon runs it, HAProxy never sees it; `{healthCheck}` is not offered), task ids (only
//! named in warnings, escaped), `HAPROXY_GROUP` (only compared with `--group`), port names,
//! network names and images.

use std::net::IpAddr;

/// A Marathon field (not a label) whose value was refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// The app's `id`.
    AppId,
    /// A task's `host`.
    TaskHost { task: String },
    /// A task's `ipAddresses[0].ipAddress` (IP-per-task).
    TaskIpAddress { task: String },
    /// `healthChecks[n].path`.
    HealthCheckPath { index: usize },
    /// `healthChecks[n].protocol`.
    HealthCheckProtocol { index: usize },
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::AppId => write!(f, "id"),
            Field::TaskHost { task } => write!(f, "task {}: host", escaped(task)),
            Field::TaskIpAddress { task } => {
                write!(f, "task {}: ipAddresses[0].ipAddress", escaped(task))
            }
            Field::HealthCheckPath { index } => write!(f, "healthChecks[{index}].path"),
            Field::HealthCheckProtocol { index } => write!(f, "healthChecks[{index}].protocol"),
        }
    }
}

/// Longest value a warning quotes; the rest is counted, not shown.
const SHOWN_CHARS: usize = 120;

/// `value` as a warning shows it: quoted and escaped (newlines, control characters and Unicode
/// line separators as escapes, so the warning stays one line), cut after [`SHOWN_CHARS`].
pub fn shown(value: &str) -> String {
    let count = value.chars().count();
    if count <= SHOWN_CHARS {
        return format!("{value:?}");
    }
    let head: String = value.chars().take(SHOWN_CHARS).collect();
    format!("{head:?}... ({count} characters)")
}

/// `value` escaped for a log line but not quoted: text in the grammar reads as itself.
pub fn escaped(value: &str) -> String {
    let head: String = value.chars().take(SHOWN_CHARS).collect();
    let mut text = head.escape_debug().to_string();
    if head.len() < value.len() {
        text.push_str("...");
    }
    text
}

/// Marathon's app-id grammar for an absolute id: `/` and one or more segments separated by `/`,
/// each a dot-separated list of names of lowercase ASCII letters, digits and `-`, not starting
/// or ending with `-` (Marathon's `PathIdValidation` segment pattern; the relative `.` and `..`
/// it also accepts on input are resolved before it ever lists an app).
pub fn check_app_id(id: &str) -> Result<(), String> {
    let Some(path) = id.strip_prefix('/') else {
        return Err(format!("{} is not an absolute Marathon app id", shown(id)));
    };
    // Segments split at `/` and names at `.` obey one rule: the names between any two of
    // either are checked in one pass over the bytes.
    if is_id_path(path.as_bytes()) {
        return Ok(());
    }
    for segment in path.split('/') {
        if !segment.split('.').all(is_id_name) {
            return Err(format!(
                "{} is not a Marathon app id (path segments of lowercase letters, digits, \
                 '-' and '.')",
                shown(id)
            ));
        }
    }
    Ok(())
}

/// Whether every name between `/`s and `.`s of `path` is an [`is_id_name`].
fn is_id_path(path: &[u8]) -> bool {
    // The byte before the one read; a separator stands before the first.
    let mut previous = b'/';
    for &byte in path {
        let starts_name = matches!(previous, b'/' | b'.');
        match byte {
            b'/' | b'.' if starts_name || previous == b'-' => return false,
            b'-' if starts_name => return false,
            b'/' | b'.' | b'-' | b'a'..=b'z' | b'0'..=b'9' => {}
            _ => return false,
        }
        previous = byte;
    }
    !matches!(previous, b'/' | b'.' | b'-')
}

fn is_id_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// A task's agent: an IP address, or a host name as RFC 1123 writes one (dot-separated labels
/// of ASCII letters, digits and `-`, not starting or ending with `-`, at most 63 characters
/// each and 253 in all).
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() || is_host_name(host) {
        return Ok(());
    }
    Err(format!(
        "{} is neither an IP address nor a host name",
        shown(host)
    ))
}

fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            let bytes = label.as_bytes();
            (1..=63).contains(&bytes.len())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        })
}

/// An IP-per-task address: an IPv4 or IPv6 address and nothing else.
pub fn check_ip_address(ip: &str) -> Result<(), String> {
    match ip.parse::<IpAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{} is not an IP address", shown(ip))),
    }
}

/// A health-check path: printable ASCII without whitespace, quotes or backslashes (HAProxy would
/// read them as argument breaks or quoting), and nothing HAProxy expands (`$NAME`, `${`, `%[`).
pub fn check_health_check_path(path: &str) -> Result<(), String> {
    let refused = |c: char| !c.is_ascii_graphic() || "\"'\\".contains(c);
    // Byte by byte, as every refused character is or starts with a refused byte.
    let refused_byte = |b: &u8| !b.is_ascii_graphic() || matches!(b, b'"' | b'\'' | b'\\');
    if !path.as_bytes().iter().any(refused_byte) {
        return super::safety::no_expansion(path).map_err(|why| format!("{}: {why}", shown(path)));
    }
    if let Some(c) = path.chars().find(|&c| refused(c)) {
        return Err(format!(
            "{} holds {c:?}; a health-check path is one word of printable ASCII",
            shown(path)
        ));
    }
    super::safety::no_expansion(path).map_err(|why| format!("{}: {why}", shown(path)))
}

/// A health-check protocol: an upper-case word as Marathon writes them (`HTTP`, `MESOS_TCP`, ...).
pub fn check_health_check_protocol(protocol: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_';
    if protocol.chars().all(allowed) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a health-check protocol (upper-case letters, digits and '_')",
            shown(protocol)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_marathon_lists_are_accepted() {
        for id in ["/a", "/a-b", "/a.b", "/a/b/c", "/a0b", "/prod/api-14", "/0"] {
            assert_eq!(check_app_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn app_ids_outside_marathons_grammar_are_refused() {
        for id in [
            "",
            "/",
            "a",
            "/A",
            "/a_b",
            "/a//b",
            "/a/",
            "/-a",
            "/a-",
            "/a..b",
            "/.a",
            "/é",
            "/a b",
            "/a\nglobal",
            "/a\u{2028}b",
            "/${X}",
            "/a%[env(X)]",
        ] {
            assert!(check_app_id(id).is_err(), "{id:?}");
        }
    }

    /// The one-pass reading of an id's names agrees with splitting it at `/` and then at `.`,
    /// on every path of up to six bytes from the bytes that matter.
    #[test]
    fn id_paths_read_in_one_pass_as_split() {
        let alphabet = [b'a', b'0', b'-', b'.', b'/', b'A', b'_'];
        let mut paths: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..6 {
            let longer: Vec<Vec<u8>> = paths
                .iter()
                .filter(|path| path.len() == paths.last().map_or(0, Vec::len))
                .flat_map(|path| {
                    alphabet.iter().map(move |&byte| {
                        let mut path = path.clone();
                        path.push(byte);
                        path
                    })
                })
                .collect();
            paths.extend(longer);
        }
        for path in paths {
            let text = std::str::from_utf8(&path).unwrap();
            let split = text
                .split('/')
                .all(|segment| segment.split('.').all(is_id_name));
            assert_eq!(is_id_path(&path), split, "{text:?}");
        }
    }

    #[test]
    fn hosts_are_addresses_or_rfc_1123_names() {
        for host in [
            "10.0.0.1",
            "::1",
            "fd00::7",
            "agent-b",
            "ip-10-0-3-21.ec2.internal",
            "Agent1.Example.com",
            "1a",
        ] {
            assert_eq!(check_host(host), Ok(()), "{host}");
        }
        let long_label = "a".repeat(64);
        let long_name = ["a"; 128].join(".");
        for host in [
            "a b",
            "a\nb",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a_b",
            "a:80",
            "[::1]",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(check_host(host).is_err(), "{host:?}");
        }
        assert_eq!(check_ip_address("9.0.0.2"), Ok(()));
        assert_eq!(check_ip_address("fd00::2"), Ok(()));
        assert!(check_ip_address("9.0.0.2\n  server x 1.2.3.4:1").is_err());
        assert!(check_ip_address("agent").is_err());
    }

    #[test]
    fn health_check_paths_and_protocols() {
        for path in ["/", "/health", "/v1/health?full=1&x=%20", "/a#b", "/~u/x;y"] {
            assert_eq!(check_health_check_path(path), Ok(()), "{path}");
        }
        for path in [
            "/a b",
            "/\nglobal",
            "/a\r",
            "/\u{0}",
            "/\u{2028}",
            "/é",
            "/\"x",
            "/'x",
            "/\\x",
            "/${X}",
            "/$HOME",
            "/%[env(X)]",
        ] {
            assert!(check_health_check_path(path).is_err(), "{path:?}");
        }
        for protocol in ["HTTP", "MESOS_HTTPS", "TCP", "COMMAND"] {
            assert_eq!(check_health_check_protocol(protocol), Ok(()));
        }
        for protocol in ["HTTP\nglobal", "http", "HTTP ", "${X}"] {
            assert!(
                check_health_check_protocol(protocol).is_err(),
                "{protocol:?}"
            );
        }
    }

    #[test]
    fn warnings_show_values_on_one_line_and_bounded() {
        assert_eq!(shown("a\nb"), r#""a\nb""#);
        assert_eq!(shown("a\u{2028}b"), r#""a\u{2028}b""#);
        assert_eq!(escaped("/a\rb"), r"/a\rb");
        assert_eq!(escaped("/prod/web"), "/prod/web");
        let long = "x".repeat(10_000);
        assert!(shown(&long).len() < 200, "{}", shown(&long));
        assert!(shown(&long).ends_with("(10000 characters)"));
    }
}
