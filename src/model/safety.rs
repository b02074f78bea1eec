//! The grammar of each semantic label's value. A label value is pasted into the configuration,
//! so one with a newline could add a line of its choosing; every semantic label is checked here
//! before it is applied, and a value outside its grammar leaves the app out with a warning.
//! Raw template labels are configuration text by design; `confine.rs` keeps them inside their
//! own section (operators turn them off with `--no-label-templates`).
//!
//! The grammars are as loose as marathon-lb's users need (realms with spaces, `-i` flags in
//! paths, IPv6 bind addresses, free-form bind options) and as tight as the line they land in.

use std::net::IpAddr;

use super::labels::LabelKind;

/// Checks `value` against the grammar of a label of `kind`; `Err` says what is wrong.
pub fn check(kind: LabelKind, value: &str) -> Result<(), String> {
    if kind == LabelKind::Template {
        return super::confine::check(value, super::confine::Heading::AnyHead);
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "contains the control character {:?}; a label value must stay on its line",
            c
        ));
    }
    match kind {
        LabelKind::Vhost => check_vhosts(value),
        LabelKind::Mode => match value.trim().to_ascii_lowercase().as_str() {
            "http" | "tcp" => Ok(()),
            other => Err(format!("mode must be http or tcp, not {other:?}")),
        },
        LabelKind::Balance => check_balance(value),
        LabelKind::BindAddr => no_whitespace_and(value, "a bind address", |c| {
            c.is_ascii_alphanumeric() || ".:*_-[]".contains(c)
        }),
        LabelKind::NetworkAllowed => check_networks(value),
        LabelKind::Auth => check_auth(value),
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

/// Comma-separated host names; an empty value means no vhost, as in marathon-lb.
fn check_vhosts(value: &str) -> Result<(), String> {
    for host in value.split(',') {
        let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_*:".contains(c);
        if let Some(c) = host.chars().find(|&c| !allowed(c)) {
            return Err(format!("{c:?} is not allowed in the host name {host:?}"));
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
            "{first:?} is not a balance algorithm (one of {})",
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
            .map_err(|_| format!("{network:?} is not an address or CIDR network"))?;
        if let Some(prefix) = prefix {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            match prefix.parse::<u8>() {
                Ok(bits) if bits <= max => {}
                _ => return Err(format!("{network:?} has a bad prefix length")),
            }
        }
    }
    Ok(())
}

/// `realm:user:crypted-password`: the realm may hold spaces (it is quoted), the others not.
/// The field count itself is the setter's to check.
fn check_auth(value: &str) -> Result<(), String> {
    let mut fields = value.split(':');
    if fields.next().is_some_and(|realm| realm.contains('"')) {
        return Err("the realm may not contain '\"'".to_string());
    }
    if fields.any(|field| field.chars().any(char::is_whitespace)) {
        return Err("the user and password may not contain whitespace".to_string());
    }
    Ok(())
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
