//! Agent host names → addresses for host and bridge networking, through the system resolver
//! (marathon-lb uses `gethostbyname`, so IPv4 only), asked once per name and run.
//!
//! An agent registered by an IPv6 literal is left out as marathon-lb leaves it out (its
//! `gethostbyname` fails on one), and the warning says so (issue 12): rendering `[addr]:port`
//! would be a difference from marathon-lb's output that no user of it has relied on.

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Mutex, PoisonError};

/// Remembers each answer (including "unresolvable") for the life of one run, so a cluster of
/// thousands of tasks on a few dozen agents costs a few dozen lookups.
#[derive(Default)]
pub struct CachingResolver {
    /// Locked across a lookup, so that two threads building one model ask once between them.
    answers: Mutex<HashMap<String, Option<IpAddr>>>,
}

impl CachingResolver {
    /// The first IPv4 address of `host`, or `None` when it does not resolve.
    pub fn resolve(&self, host: &str) -> Option<IpAddr> {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = answers.get(host) {
            return *answer;
        }
        let answer = (host, 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.find(|addr| addr.is_ipv4()))
            .map(|addr| addr.ip());
        answers.insert(host.to_string(), answer);
        answer
    }
}

/// The warning for an agent whose tasks are skipped because it has no IPv4 address.
pub fn unresolvable_message(host: &str) -> String {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if literal.parse::<std::net::Ipv6Addr>().is_ok() {
        format!(
            "agent {host:?} is an IPv6 address; its tasks are skipped, as in marathon-lb, which \
             reaches agents over IPv4 only"
        )
    } else {
        format!("agent {host:?} does not resolve; its tasks are skipped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_resolve_to_themselves_and_answers_are_remembered() {
        let resolver = CachingResolver::default();
        assert_eq!(
            resolver.resolve("127.0.0.1"),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(resolver.resolve("no-such-host.invalid"), None);
        assert_eq!(resolver.answers.lock().unwrap().len(), 2);
        assert_eq!(resolver.resolve("no-such-host.invalid"), None);
    }

    #[test]
    fn an_ipv6_agent_is_said_to_be_ipv6_not_unresolvable() {
        let resolver = CachingResolver::default();
        assert_eq!(resolver.resolve("fd00::1"), None);
        assert_eq!(
            unresolvable_message("fd00::1"),
            "agent \"fd00::1\" is an IPv6 address; its tasks are skipped, as in marathon-lb, \
             which reaches agents over IPv4 only"
        );
        assert_eq!(
            unresolvable_message("no-such-host.invalid"),
            "agent \"no-such-host.invalid\" does not resolve; its tasks are skipped"
        );
    }
}
