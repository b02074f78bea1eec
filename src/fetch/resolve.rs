//! Agent host names → addresses for host and bridge networking, through the system resolver
//! (marathon-lb uses `gethostbyname`, so IPv4 only), asked once per name and run.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};

/// Remembers each answer (including "unresolvable") for the life of one run, so a cluster of
/// thousands of tasks on a few dozen agents costs a few dozen lookups.
#[derive(Default)]
pub struct CachingResolver {
    answers: RefCell<HashMap<String, Option<IpAddr>>>,
}

impl CachingResolver {
    /// The first IPv4 address of `host`, or `None` when it does not resolve.
    pub fn resolve(&self, host: &str) -> Option<IpAddr> {
        if let Some(answer) = self.answers.borrow().get(host) {
            return *answer;
        }
        let answer = (host, 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.find(|addr| addr.is_ipv4()))
            .map(|addr| addr.ip());
        self.answers.borrow_mut().insert(host.to_string(), answer);
        answer
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
        assert_eq!(resolver.answers.borrow().len(), 2);
        assert_eq!(resolver.resolve("no-such-host.invalid"), None);
    }
}
