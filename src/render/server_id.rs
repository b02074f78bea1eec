//! Stable HAProxy server ids and sticky-cookie values, derived from server names exactly as
//! marathon-lb derives them, so server-state files and sticky cookies survive the switch.

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// HAProxy reads `id` with `atol` into an `int`; marathon-lb keeps ids within a positive
/// 16-bit range to stay clear of platform-dependent truncation.
const ID_MODULUS: u32 = 32767;

/// The ids a backend can hand out: 1 to 32,766 (0 is never used).
pub const ID_SPACE: usize = ID_MODULUS as usize - 1;

/// How many rehashes one server may take before its search is given up. With one id left in
/// the space a search takes 32,766 tries on average; 32 times that fails with a probability
/// of about e^-32, so in practice only a full space ends a search.
const MAX_REHASHES: usize = 32 * ID_MODULUS as usize;

/// No free id was found for a server: the backend's id space is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdSpaceExhausted {
    pub taken: usize,
}

impl std::fmt::Display for IdSpaceExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no free server id after {} were taken: a backend has room for {ID_SPACE} servers \
             (marathon-lb's id space, 1 to 32766)",
            self.taken
        )
    }
}

/// The ids taken in one backend, as a bit per id: the renderer keeps one and clears it between
/// backends, which costs only the ids that were taken (a hashed set cost more than the hash of
/// the name at every server line).
#[derive(Debug, Clone)]
pub struct TakenIds {
    bits: Vec<u64>,
    taken: Vec<u32>,
}

impl Default for TakenIds {
    fn default() -> TakenIds {
        TakenIds {
            bits: vec![0; (ID_MODULUS as usize).div_ceil(64)],
            taken: Vec::new(),
        }
    }
}

impl TakenIds {
    /// Takes `id` (below [`ID_MODULUS`]); `false` when it was taken already.
    pub fn insert(&mut self, id: u32) -> bool {
        let (word, bit) = (id as usize / 64, 1u64 << (id % 64));
        if self.bits[word] & bit != 0 {
            return false;
        }
        self.bits[word] |= bit;
        self.taken.push(id);
        true
    }

    pub fn len(&self) -> usize {
        self.taken.len()
    }

    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }

    /// Frees every id, for the next backend.
    pub fn clear(&mut self) {
        for id in self.taken.drain(..) {
            self.bits[id as usize / 64] = 0;
        }
    }
}

impl FromIterator<u32> for TakenIds {
    fn from_iter<I: IntoIterator<Item = u32>>(ids: I) -> TakenIds {
        let mut taken = TakenIds::default();
        for id in ids {
            taken.insert(id);
        }
        taken
    }
}

/// The digest read as one big-endian number, modulo [`ID_MODULUS`]. Since 2^15 ≡ 1 modulo
/// 2^15 − 1, byte `i` from the end weighs 2^(8·i mod 15): a sum of 32 independent products
/// and one remainder, where folding byte by byte chained 32 remainders.
fn digest_mod(digest: &[u8; 32]) -> u32 {
    const WEIGHTS: [u32; 32] = {
        let mut weights = [0; 32];
        let mut at = 0;
        while at < 32 {
            weights[at] = 1 << ((8 * (31 - at)) % 15);
            at += 1;
        }
        weights
    };
    // Each product is below 2^23, the sum of 32 below 2^28.
    let sum: u32 = digest
        .iter()
        .zip(WEIGHTS)
        .map(|(&byte, weight)| u32::from(byte) * weight)
        .sum();
    sum % ID_MODULUS
}

/// The id of `server_name` within one backend: `sha256(name) mod 32767`. When that id is 0 or
/// already taken, the name is extended with its own hex digest and hashed again, until a free
/// id comes out. Deterministic as long as servers are visited in the same (sorted) order.
///
/// Each extended name starts with the previous one, so the hash state is carried forward
/// instead of hashing the ever longer name again: every try costs the same. The search ends
/// at once when the space is full and after [`MAX_REHASHES`] tries otherwise.
pub fn server_id(server_name: &str, taken: &mut TakenIds) -> Result<u32, IdSpaceExhausted> {
    let exhausted = IdSpaceExhausted { taken: taken.len() };
    if taken.len() >= ID_SPACE {
        return Err(exhausted);
    }
    let mut hasher = Sha256::new();
    hasher.update(server_name.as_bytes());
    for _ in 0..=MAX_REHASHES {
        let digest: [u8; 32] = hasher.clone().finalize().into();
        let id = digest_mod(&digest);
        if id > 0 && taken.insert(id) {
            return Ok(id);
        }
        hasher.update(b" ");
        hasher.update(hex(&digest).as_bytes());
    }
    Err(exhausted)
}

/// The sticky-session cookie value: the first 10 hex digits of `sha1(server name)`.
pub fn cookie_value(server_name: &str) -> String {
    let mut digest = hex(&Sha1::digest(server_name.as_bytes()));
    digest.truncate(10);
    digest
}

/// marathon-lb's server name: `host_ip_port` (or `ip_port` when host and ip are the same),
/// with every character outside `[a-zA-Z0-9-]` replaced by `_`. Built in one string, since it
/// is built once per server line.
pub fn server_name(host: &str, ip: &str, port: u32) -> String {
    let mut name = String::with_capacity(host.len() + ip.len() + 8);
    server_name_into(&mut name, host, ip, port);
    name
}

/// [`server_name`] in `name`, which is cleared first: the renderer reuses one string for every
/// server line.
pub fn server_name_into(name: &mut String, host: &str, ip: &str, port: u32) {
    use std::fmt::Write as _;
    name.clear();
    if host != ip {
        sanitize_into(name, host);
        name.push('_');
    }
    sanitize_into(name, ip);
    // `_` and the digits of the port are kept by the sanitizing as they are.
    let _ = write!(name, "_{port}");
}

/// `re.sub(r'[^a-zA-Z0-9\-]', '_', text)`: one `_` per offending character.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    sanitize_into(&mut out, text);
    out
}

/// [`sanitize`], appended to `out`.
fn sanitize_into(out: &mut String, text: &str) {
    let keep = |c: char| c.is_ascii_alphanumeric() || c == '-';
    if text.is_ascii() {
        // One byte per character: the common case, without decoding characters.
        out.extend(text.bytes().map(|byte| match keep(char::from(byte)) {
            true => char::from(byte),
            false => '_',
        }));
    } else {
        out.extend(text.chars().map(|c| if keep(c) { c } else { '_' }));
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Ids as marathon-lb assigned them in the corpus case `server-id-collisions`, in backend
    /// order: two pairs of colliding names and one name whose first id is 0.
    #[test]
    fn collisions_and_zero_are_rehashed_as_marathon_lb_does() {
        let mut taken = TakenIds::default();
        let ids: Vec<u32> = [
            "10_0_4_21_31250",
            "10_0_4_21_31273",
            "10_0_4_21_31377",
            "10_0_4_21_31389",
            "10_0_4_30_31980",
            "10_0_4_9_31000",
        ]
        .iter()
        .map(|name| server_id(name, &mut taken).unwrap())
        .collect();
        assert_eq!(ids, [119, 18616, 32101, 14290, 24108, 25739]);
    }

    #[test]
    fn a_free_id_is_the_plain_hash() {
        let mut taken = TakenIds::default();
        let first = server_id("10_0_4_21_31273", &mut taken).unwrap();
        let mut fresh = TakenIds::default();
        assert_eq!(server_id("10_0_4_21_31273", &mut fresh).unwrap(), first);
        // The same name again in the same backend collides with itself and moves on.
        assert_ne!(server_id("10_0_4_21_31273", &mut taken).unwrap(), first);
    }

    /// marathon-lb's recursive rehash written out: hash the whole extended name each time.
    fn rehash_from_scratch(server_name: &str, taken: &mut HashSet<u32>) -> u32 {
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

    #[test]
    fn carried_hash_state_gives_the_ids_of_rehashing_from_scratch() {
        let mut ours = TakenIds::default();
        let mut theirs = HashSet::new();
        for index in 0..3000 {
            let name = format!("10_0_{}_{}_31000", index / 250, index % 250);
            assert_eq!(
                server_id(&name, &mut ours).unwrap(),
                rehash_from_scratch(&name, &mut theirs),
                "{name}"
            );
        }
    }

    #[test]
    fn cleared_ids_are_free_again() {
        let mut taken = TakenIds::default();
        let first = server_id("10_0_4_21_31273", &mut taken).unwrap();
        assert!(!taken.insert(first));
        assert!(taken.insert(ID_MODULUS - 1));
        assert_eq!(taken.len(), 2);
        taken.clear();
        assert!(taken.is_empty());
        assert_eq!(server_id("10_0_4_21_31273", &mut taken), Ok(first));
        assert!(taken.insert(ID_MODULUS - 1));
    }

    /// With one id left the search still finds it (it takes ~32,766 tries); with none left it
    /// ends at once. (`render::tests` fills a real backend of 32,767 servers.)
    #[test]
    fn the_last_free_id_is_found_and_a_full_space_is_an_error() {
        let last = rehash_from_scratch("10_0_0_1_31000", &mut HashSet::new());
        let mut taken: TakenIds = (1..=ID_SPACE as u32).filter(|&id| id != last).collect();
        assert_eq!(server_id("10_0_0_1_31000", &mut taken), Ok(last));
        let mut taken: TakenIds = (1..=ID_SPACE as u32).filter(|&id| id != 77).collect();
        assert_eq!(server_id("10_0_0_2_31000", &mut taken), Ok(77));
        assert_eq!(taken.len(), ID_SPACE);
        let err = server_id("10_9_9_9_31000", &mut taken).unwrap_err();
        assert_eq!(err.taken, ID_SPACE);
        assert!(err.to_string().contains("32766"), "{err}");
    }

    #[test]
    fn names_and_cookies() {
        assert_eq!(
            server_name("agent-1.example", "10.0.0.1", 31000),
            "agent-1_example_10_0_0_1_31000"
        );
        assert_eq!(server_name("10.0.0.1", "10.0.0.1", 31000), "10_0_0_1_31000");
        assert_eq!(cookie_value("10_0_0_1_31000").len(), 10);
        assert_eq!(
            server_name("host.ä", "10.0.0.1", 31000),
            "host___10_0_0_1_31000"
        );
    }

    #[test]
    fn sanitize_replaces_each_character_not_each_byte() {
        assert_eq!(sanitize("a.b-C_9"), "a_b-C_9");
        assert_eq!(sanitize("äö/x"), "___x");
        assert_eq!(sanitize(""), "");
    }
}
