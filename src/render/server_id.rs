//! Stable HAProxy server ids and sticky-cookie values, derived from server names exactly as
//! marathon-lb derives them, so server-state files and sticky cookies survive the switch.

use std::collections::HashSet;

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// HAProxy reads `id` with `atol` into an `int`; marathon-lb keeps ids within a positive
/// 16-bit range to stay clear of platform-dependent truncation.
const ID_MODULUS: u32 = 32767;

/// The id of `server_name` within one backend: `sha256(name) mod 32767`. When that id is 0 or
/// already taken, the name is extended with its own hex digest and hashed again, until a free
/// id comes out. Deterministic as long as servers are visited in the same (sorted) order.
pub fn server_id(server_name: &str, taken: &mut HashSet<u32>) -> u32 {
    let mut name = server_name.to_string();
    loop {
        let digest = Sha256::digest(name.as_bytes());
        let id = digest.iter().fold(0u32, |rest, &byte| {
            (rest * 256 + u32::from(byte)) % ID_MODULUS
        });
        if id > 0 && taken.insert(id) {
            return id;
        }
        name = format!("{name} {}", hex(&digest));
    }
}

/// The sticky-session cookie value: the first 10 hex digits of `sha1(server name)`.
pub fn cookie_value(server_name: &str) -> String {
    let mut digest = hex(&Sha1::digest(server_name.as_bytes()));
    digest.truncate(10);
    digest
}

/// marathon-lb's server name: `host_ip_port` (or `ip_port` when host and ip are the same),
/// with every character outside `[a-zA-Z0-9-]` replaced by `_`.
pub fn server_name(host: &str, ip: &str, port: u32) -> String {
    let raw = if host != ip {
        format!("{host}_{ip}_{port}")
    } else {
        format!("{ip}_{port}")
    };
    sanitize(&raw)
}

/// `re.sub(r'[^a-zA-Z0-9\-]', '_', text)`: one `_` per offending character.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids as marathon-lb assigned them in the corpus case `server-id-collisions`, in backend
    /// order: two pairs of colliding names and one name whose first id is 0.
    #[test]
    fn collisions_and_zero_are_rehashed_as_marathon_lb_does() {
        let mut taken = HashSet::new();
        let ids: Vec<u32> = [
            "10_0_4_21_31250",
            "10_0_4_21_31273",
            "10_0_4_21_31377",
            "10_0_4_21_31389",
            "10_0_4_30_31980",
            "10_0_4_9_31000",
        ]
        .iter()
        .map(|name| server_id(name, &mut taken))
        .collect();
        assert_eq!(ids, [119, 18616, 32101, 14290, 24108, 25739]);
    }

    #[test]
    fn a_free_id_is_the_plain_hash() {
        let mut taken = HashSet::new();
        let first = server_id("10_0_4_21_31273", &mut taken);
        let mut fresh = HashSet::new();
        assert_eq!(server_id("10_0_4_21_31273", &mut fresh), first);
        // The same name again in the same backend collides with itself and moves on.
        assert_ne!(server_id("10_0_4_21_31273", &mut taken), first);
    }

    #[test]
    fn names_and_cookies() {
        assert_eq!(
            server_name("agent-1.example", "10.0.0.1", 31000),
            "agent-1_example_10_0_0_1_31000"
        );
        assert_eq!(server_name("10.0.0.1", "10.0.0.1", 31000), "10_0_0_1_31000");
        assert_eq!(cookie_value("10_0_0_1_31000").len(), 10);
    }
}
