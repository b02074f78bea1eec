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
pub struct CachingResolver {
    /// Locked across a lookup, so that two threads building one model ask once between them.
    answers: Mutex<HashMap<String, Option<IpAddr>>>,
    /// The system resolver, except in tests: a made-up name must never reach it.
    lookup: fn(&str) -> Option<IpAddr>,
}

impl Default for CachingResolver {
    fn default() -> CachingResolver {
        CachingResolver {
            answers: Mutex::default(),
            lookup: system_lookup,
        }
    }
}

impl CachingResolver {
    /// The first IPv4 address of `host`, or `None` when it does not resolve.
    pub fn resolve(&self, host: &str) -> Option<IpAddr> {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(answer) = answers.get(host) {
            return *answer;
        }
        let answer = (self.lookup)(host);
        answers.insert(host.to_string(), answer);
        answer
    }
}

/// The first IPv4 address the system resolver gives for `host`.
fn system_lookup(host: &str) -> Option<IpAddr> {
    (host, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.find(|addr| addr.is_ipv4()))
        .map(|addr| addr.ip())
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Address literals only: the system resolver answers them without asking any server.
    #[test]
    fn the_system_lookup_gives_an_ipv4_literal_itself_and_no_ipv6_literal() {
        assert_eq!(
            system_lookup("127.0.0.1"),
            Some(IpAddr::from([127, 0, 0, 1]))
        );
        assert_eq!(system_lookup("fd00::1"), None);
    }

    static LOOKUPS: AtomicUsize = AtomicUsize::new(0);

    /// Knows one agent; counts every question.
    fn one_agent_lookup(host: &str) -> Option<IpAddr> {
        LOOKUPS.fetch_add(1, Ordering::SeqCst);
        (host == "agent-1").then(|| IpAddr::from([10, 0, 0, 1]))
    }

    #[test]
    fn each_host_is_asked_once_whether_or_not_it_resolves() {
        let resolver = CachingResolver {
            answers: Mutex::default(),
            lookup: one_agent_lookup,
        };
        for _ in 0..3 {
            assert_eq!(
                resolver.resolve("agent-1"),
                Some(IpAddr::from([10, 0, 0, 1]))
            );
            assert_eq!(resolver.resolve("agent-unknown"), None);
        }
        assert_eq!(LOOKUPS.load(Ordering::SeqCst), 2);
        assert_eq!(resolver.answers.lock().unwrap().len(), 2);
    }

    #[test]
    fn an_ipv6_agent_is_said_to_be_ipv6_not_unresolvable() {
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
