//! The grammar of each semantic label's value. A label value is pasted into the configuration,
//! so one with a newline could add a line of its choosing; every semantic label is checked here
//! before it is applied, and a value outside its grammar leaves the app out with a warning.
//! Raw template labels are configuration text by design; `confine.rs` keeps them inside their
//! own section (operators turn them off with `--no-label-templates`).
//!
//! The grammars are as loose as marathon-lb's users need (realms with spaces, `-i` flags in
//! paths, IPv6 bind addresses, free-form bind options) and as tight as the line they land in.
//!
//! No semantic label may reach HAProxy's environment or its sample fetches either: HAProxy
//! expands `$NAME` and `${NAME}` inside double quotes (which a value may open itself, or which a
//! template puts around it, as around `{realm}`), and `%[...]` in every log-format argument
//! (`http-request redirect`, `replace-header`, ...). So `$` before a name character or `{`, and
//! `%[`, are refused in every semantic label. One exception, which its meaning needs: the
//! password of `HAPROXY_{n}_AUTH` is a crypt(3) hash (`$6$salt$hash`), so `$` before a name
//! character stays allowed there; it lands unquoted in `user ... password ...`, where HAProxy
//! expands nothing, and quotes, backslashes, `${` and `%[` are refused in it.

use std::net::IpAddr;

use super::fields::shown;
use super::labels::LabelKind;

/// Checks `value` against the grammar of a label of `kind`; `Err` says what is wrong.
pub fn check(kind: LabelKind, value: &str) -> Result<(), String> {
    if kind == LabelKind::Template {
        return super::confine::check(value, super::confine::Heading::AnyHead);
    }
    // Unicode's line and paragraph separators end no line for HAProxy, but do for editors and
    // log readers: refused with the control characters, so a value always reads as one line.
    // Printable ASCII (most values) holds neither: its bytes are not decoded one by one.
    let breaks_line = |c: &char| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
    let printable = value.bytes().all(|b| matches!(b, b' '..=b'~'));
    let found = match printable {
        true => None,
        false => value.chars().find(breaks_line),
    };
    if let Some(c) = found {
        return Err(format!(
            "contains the control character {:?}; a label value must stay on its line",
            c
        ));
    }
    if kind == LabelKind::Auth {
        return check_auth(value);
    }
    no_expansion(value)?;
    match kind {
        LabelKind::Vhost => check_vhosts(value),
        LabelKind::Mode => match value.trim().to_ascii_lowercase().as_str() {
            "http" | "tcp" => Ok(()),
            other => Err(format!("mode must be http or tcp, not {}", shown(other))),
        },
        LabelKind::Balance => check_balance(value),
        LabelKind::BindAddr => no_whitespace_and(value, "a bind address", |c| {
            c.is_ascii_alphanumeric() || ".:*_-[]".contains(c)
        }),
        LabelKind::NetworkAllowed => check_networks(value),
        LabelKind::SslCert
        | LabelKind::ProxyPath
        | LabelKind::RevProxyPath
        | LabelKind::RedirPath => no_whitespace_and(value, "a path", |c| c != '"'),
        // Free text within one line: paths with flags (`-i /a /b`), bind options, group lists,
        // booleans and integers (which their setters parse).
        _ => Ok(()),
    }
}

fn no_whitespace_and(
    value: &str,
    what: &str,
    allowed: impl Fn(char) -> bool,
) -> Result<(), String> {
    match value.chars().find(|&c| c.is_whitespace() || !allowed(c)) {
        Some(c) => Err(format!("{c:?} is not allowed in {what}")),
        None => Ok(()),
    }
}

/// Refuses what HAProxy would expand from its environment (`$NAME`, `${NAME}`, its own rule
/// for a name: ASCII letters, digits and `_`) or evaluate as a sample fetch (`%[`).
pub fn no_expansion(value: &str) -> Result<(), String> {
    // Without a `%` or a `$` (most values) there is neither; one search finds either.
    if memchr::memchr2(b'%', b'$', value.as_bytes()).is_none() {
        return Ok(());
    }
    if let Some(at) = value.find("%[") {
        return Err(format!(
            "{:?} at byte {at} is a sample fetch HAProxy would evaluate",
            "%["
        ));
    }
    no_environment(value, |next| {
        next == '{' || next.is_ascii_alphanumeric() || next == '_'
    })
}

/// Refuses `$` followed by a character for which `expands` holds.
fn no_environment(value: &str, expands: impl Fn(char) -> bool) -> Result<(), String> {
    let mut chars = value.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '$' {
            continue;
        }
        if let Some(&(_, next)) = chars.peek() {
            if expands(next) {
                return Err(format!(
                    "\"${next}\" at byte {at} is an environment reference HAProxy would expand"
                ));
            }
        }
    }
    Ok(())
}

/// Comma-separated host names; an empty value means no vhost, as in marathon-lb. Spaces
/// around a name are kept as given, as marathon-lb keeps them (`a.example.com, b.example.com`
/// renders `hdr(host) -i  b.example.com`, which HAProxy reads as the name alone); a space
/// inside a name would make it two.
fn check_vhosts(value: &str) -> Result<(), String> {
    // Without a space or another byte outside the names' alphabet (most lists), every name
    // passes as it stands.
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b".-_*:,".contains(b);
    if value.as_bytes().iter().all(plain) {
        return Ok(());
    }
    for host in value.split(',') {
        let name = host.trim_matches(' ');
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_*:".contains(c);
        if let Some(c) = name.chars().find(|&c| !allowed(c)) {
            return Err(format!(
                "{c:?} is not allowed in the host name {}",
                shown(host)
            ));
        }
    }
    Ok(())
}

/// HAProxy's `balance` algorithms, with their arguments.
fn check_balance(value: &str) -> Result<(), String> {
    const ALGORITHMS: &[&str] = &[
        "roundrobin",
        "static-rr",
        "leastconn",
        "first",
        "source",
        "uri",
        "url_param",
        "hdr",
        "random",
        "rdp-cookie",
        "hash",
    ];
    let first = value.split_whitespace().next().unwrap_or("");
    let algorithm = first.split('(').next().unwrap_or("");
    if ALGORITHMS.contains(&algorithm) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a balance algorithm (one of {})",
            shown(first),
            ALGORITHMS.join(", ")
        ))
    }
}

/// Whitespace-separated addresses or CIDR networks.
fn check_networks(value: &str) -> Result<(), String> {
    for network in value.split_whitespace() {
        let (address, prefix) = match network.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (network, None),
        };
        let ip: IpAddr = address
            .parse()
            .map_err(|_| format!("{} is not an address or CIDR network", shown(network)))?;
        if let Some(prefix) = prefix {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match prefix.parse::<u8>() {
                Ok(bits) if bits <= max => {}
                _ => return Err(format!("{} has a bad prefix length", shown(network))),
            }
        }
    }
    Ok(())
}

/// `realm:user:crypted-password`: the realm may hold spaces (it is quoted), the others not.
/// The field count itself is the setter's to check. The password is a crypt(3) hash, whose
/// `$id$salt$` form needs `$` before name characters (see the module comment).
fn check_auth(value: &str) -> Result<(), String> {
    let mut fields = value.split(':');
    let realm = fields.next().unwrap_or("");
    if realm.contains('"') {
        return Err("the realm may not contain '\"'".to_string());
    }
    no_expansion(realm).map_err(|why| format!("the realm: {why}"))?;
    let user = fields.next().unwrap_or("");
    let password = fields.collect::<Vec<_>>().join(":");
    if user
        .chars()
        .chain(password.chars())
        .any(char::is_whitespace)
    {
        return Err("the user and password may not contain whitespace".to_string());
    }
    no_expansion(user).map_err(|why| format!("the user: {why}"))?;
    if let Some(c) = user
        .chars()
        .chain(password.chars())
        .find(|c| "\"'\\".contains(*c))
    {
        return Err(format!(
            "{c:?} is not allowed in the user or password (HAProxy would read it as quoting)"
        ));
    }
    if password.contains("%[") {
        return Err("the password: \"%[\" is a sample fetch HAProxy would evaluate".to_string());
    }
    no_environment(&password, |next| next == '{').map_err(|why| format!("the password: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_semantic_label_may_hold_a_control_character() {
        for kind in [
            LabelKind::Vhost,
            LabelKind::Path,
            LabelKind::BindOptions,
            LabelKind::Group,
        ] {
            assert!(
                check(kind, "a\n  server evil 10.0.0.1:80").is_err(),
                "{kind:?}"
            );
            assert!(check(kind, "a\rb").is_err(), "{kind:?}");
            assert!(check(kind, "a\tb").is_err(), "{kind:?}");
            assert!(check(kind, "a\u{2028}b").is_err(), "{kind:?}");
            assert!(check(kind, "a\u{85}b").is_err(), "{kind:?}");
        }
        assert!(check(LabelKind::Template, "\nbackend {backend}\n").is_ok());
    }

    #[test]
    fn values_marathon_lb_users_write_are_accepted() {
        let accepted = [
            (
                LabelKind::Vhost,
                "WWW.Example.com,example.com,promo-2019.example.com",
            ),
            (LabelKind::Vhost, ""),
            (LabelKind::Vhost, "*.example.com"),
            (LabelKind::Path, "-i /x /y"),
            (
                LabelKind::Auth,
                "Admin Area:ops:$6$rounds=5000$saltsalt$Dq0Pz1kqBK8u",
            ),
            (
                LabelKind::NetworkAllowed,
                "10.0.0.0/8 192.168.1.0/24 172.16.5.4 ::1 fd00::/8",
            ),
            (LabelKind::BindAddr, "::"),
            (LabelKind::BindAddr, "10.0.0.42"),
            (
                LabelKind::BindOptions,
                "ciphers AES128+EECDH:AES128+EDH force-tlsv12 no-sslv3",
            ),
            (LabelKind::Balance, "leastconn"),
            (LabelKind::Balance, "hdr(host) use_domain_only"),
            (LabelKind::Balance, "url_param userid"),
            (LabelKind::Mode, "TCP"),
            (LabelKind::Group, "external, internal"),
            (LabelKind::SslCert, "/etc/ssl/portal.pem"),
            (LabelKind::ProxyPath, "/app"),
        ];
        for (kind, value) in accepted {
            assert_eq!(check(kind, value), Ok(()), "{kind:?} {value:?}");
        }
    }

    #[test]
    fn no_semantic_label_reaches_the_environment_or_a_sample_fetch() {
        let semantic = super::super::labels::LABELS
            .iter()
            .filter(|label| label.kind != LabelKind::Template);
        for label in semantic {
            for value in ["${X}", "$HOME", "a$_X", "$0", "%[env(X)]", "/a%[path]"] {
                assert!(
                    check(label.kind, value).is_err(),
                    "{} {value:?} should be refused",
                    label.name
                );
            }
        }
        for (kind, value) in [
            (
                LabelKind::Balance,
                "hash \"${HAPROXY_MARATHON_SYNC_AUTH_CREDENTIALS}\"",
            ),
            (LabelKind::RevProxyPath, "%[env(X)]"),
            (LabelKind::Auth, "Realm ${X}:user:pw"),
            (LabelKind::Auth, "realm:$USER:pw"),
            (LabelKind::Auth, "realm:user:${X}"),
            (LabelKind::Auth, "realm:user:\"$X\""),
            (LabelKind::Auth, "realm:user:%[env(X)]"),
            (LabelKind::Auth, "realm:user:a\\b"),
        ] {
            assert!(check(kind, value).is_err(), "{kind:?} {value:?}");
        }
        // A lone `$` or `%` expands nothing; crypt(3) hashes need `$` before name characters.
        for (kind, value) in [
            (LabelKind::Path, "/price$ /100%"),
            (LabelKind::Auth, "realm:user:$6$rounds=5000$salt$hash"),
            (LabelKind::Auth, "realm:user:$2y$10$abcdefghijklmnopqrstuv"),
        ] {
            assert_eq!(check(kind, value), Ok(()), "{kind:?} {value:?}");
        }
    }

    #[test]
    fn vhost_lists_keep_marathon_lbs_spaces_after_commas() {
        assert_eq!(
            check(LabelKind::Vhost, "a.example.com, b.example.com"),
            Ok(())
        );
        assert_eq!(
            check(LabelKind::Vhost, " a.example.com ,b.example.com "),
            Ok(())
        );
        assert!(check(LabelKind::Vhost, "a.example.com, b c.example.com").is_err());
        assert!(check(LabelKind::Vhost, "a.example.com,\tb.example.com").is_err());
        assert!(check(LabelKind::Vhost, "a.example.com,\u{a0}b.example.com").is_err());
    }

    #[test]
    fn values_outside_their_grammar_are_refused() {
        let refused = [
            (LabelKind::Vhost, "a.example.com b.example.com"),
            (LabelKind::Vhost, "a.example.com;x"),
            (LabelKind::Mode, "https"),
            (LabelKind::Balance, "fastest"),
            (LabelKind::BindAddr, "0.0.0.0 ssl"),
            (LabelKind::NetworkAllowed, "10.0.0.0/33"),
            (LabelKind::NetworkAllowed, "everyone"),
            (LabelKind::Auth, "realm\":user:pw"),
            (LabelKind::Auth, "realm:us er:pw"),
            (LabelKind::SslCert, "/etc/ssl/a.pem crt /etc/ssl/b.pem"),
        ];
        for (kind, value) in refused {
            assert!(
                check(kind, value).is_err(),
                "{kind:?} {value:?} should be refused"
            );
        }
    }
}
