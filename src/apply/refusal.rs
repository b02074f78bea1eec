//! What stops a candidate before it is put in place, as types a caller branches on (never on
//! message text): HAProxy's own rejection (`haproxy -c` ran and said no), and listeners the
//! candidate adds that this host cannot give it (another process holds the address).
//!
//! `haproxy -c` never binds, so a port another process holds passes the check and only fails
//! the reload, which then rolls back every app's change, run after run. The candidate's new
//! listeners (those the live config does not have: HAProxy holds its own already) are tried
//! here with a plain bind, released at once, before anything is written.

use std::collections::BTreeSet;
use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::command::CommandError;
use crate::error::{self, Failure};

/// Whether `error` is `haproxy -c` rejecting a candidate (it ran and said no), as opposed to a
/// check that could not run, a write, a reload or anything else.
pub fn rejected_by_haproxy(error: &anyhow::Error) -> bool {
    error::classify(error) == Some(Failure::ValidationFailed)
        && error.chain().any(|cause| {
            cause
                .downcast_ref::<CommandError>()
                .is_some_and(CommandError::ran_and_failed)
        })
}

/// A listener of the candidate that another process on this host holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusyListener {
    pub address: SocketAddr,
}

impl fmt::Display for BusyListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot listen on {}: the address is in use on this host (another process listens \
             there)",
            self.address
        )
    }
}

/// The candidate's new listeners this host cannot give it; the error a caller downcasts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenersUnavailable(pub Vec<BusyListener>);

impl fmt::Display for ListenersUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let each: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(
            f,
            "{}; HAProxy's reload would fail on it, so nothing was changed",
            each.join("; ")
        )
    }
}

impl std::error::Error for ListenersUnavailable {}

/// The listeners `candidate` has and `live` does not, that a bind attempt here refuses.
pub fn unavailable_new_listeners(live: &str, candidate: &str) -> Vec<BusyListener> {
    let live = listeners(live);
    listeners(candidate)
        .difference(&live)
        .filter(|address| {
            // Only "in use" is a verdict: an address that is not (yet) this host's may be
            // bindable for HAProxy (`transparent`, `freebind`, a VIP that moves here), and
            // other errors (a port below 1024 for a user who is not root) are for HAProxy to
            // judge.
            matches!(listen_as_haproxy(address), Err(error) if error.kind() == ErrorKind::AddrInUse)
            // An `Ok` listener is dropped, and so closed, at once.
        })
        .map(|address| BusyListener { address: *address })
        .collect()
}

/// The TCP addresses of every `bind` line of a config, in the plain `address:port` forms
/// (`*:80`, `127.0.0.1:10000`, `:::80`, `[::1]:80`, `ipv4@`/`ipv6@` prefixed, comma lists).
/// Sockets, ranges, names and other families are left to HAProxy.
pub fn listeners(config: &str) -> BTreeSet<SocketAddr> {
    config
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("bind "))
        .filter_map(|rest| rest.split_whitespace().next())
        .flat_map(|addresses| addresses.split(','))
        .filter_map(socket_address)
        .collect()
}

/// Listens on `address` as HAProxy does on Linux (`SO_REUSEADDR` and `SO_REUSEPORT`): a port
/// another process listens on without `SO_REUSEPORT` refuses both, while one another HAProxy
/// shares with `SO_REUSEPORT` would take HAProxy's bind too, and is no reason to stop.
fn listen_as_haproxy(address: &SocketAddr) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let family = match address {
        SocketAddr::V4(_) => libc::AF_INET,
        SocketAddr::V6(_) => libc::AF_INET6,
    };
    // SAFETY: plain socket calls on a descriptor this function owns (closed by `OwnedFd` on
    // every path); the address structures are initialised in full before they are passed.
    unsafe {
        let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            let set = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if set != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let bound = match address {
            SocketAddr::V4(v4) => {
                let mut raw: libc::sockaddr_in = std::mem::zeroed();
                raw.sin_family = libc::AF_INET as libc::sa_family_t;
                raw.sin_port = v4.port().to_be();
                raw.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
                let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                libc::bind(fd, (&raw as *const libc::sockaddr_in).cast(), length)
            }
            SocketAddr::V6(v6) => {
                let mut raw: libc::sockaddr_in6 = std::mem::zeroed();
                raw.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                raw.sin6_port = v6.port().to_be();
                raw.sin6_addr.s6_addr = v6.ip().octets();
                let length = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
                libc::bind(fd, (&raw as *const libc::sockaddr_in6).cast(), length)
            }
        };
        if bound != 0 || libc::listen(fd, 1) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(owned)
    }
}

fn socket_address(written: &str) -> Option<SocketAddr> {
    let (written, ipv6_only) = match written.split_once('@') {
        None => (written, false),
        Some(("ipv4", rest)) => (rest, false),
        Some(("ipv6", rest)) => (rest, true),
        Some(_) => return None,
    };
    let (host, port) = written.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = match host {
        "" | "*" if ipv6_only => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        "" | "*" => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => host.parse().ok()?,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_lines_are_read_in_their_plain_forms() {
        let config = "frontend a\n  bind *:80\n  bind 127.0.0.1:10000 ssl crt /x\n\
                      frontend b\n  bind :::8080 v4v6\n  bind [::1]:9000,127.0.0.2:9001\n\
                      \x20 bind unix@/run/x.sock\n  bind 127.0.0.1:1000-1010\n  bind ipv4@:81\n";
        let found: Vec<String> = listeners(config).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "0.0.0.0:80",
                "0.0.0.0:81",
                "127.0.0.1:10000",
                "127.0.0.2:9001",
                "[::]:8080",
                "[::1]:9000"
            ]
        );
    }

    use std::net::TcpListener;

    #[test]
    fn only_new_listeners_are_tried_and_a_held_one_is_named() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let free = TcpListener::bind("127.0.0.1:0").unwrap();
        let free_port = free.local_addr().unwrap().port();
        drop(free);
        let live = format!("frontend old\n  bind 127.0.0.1:{port}\n");
        let candidate = format!("{live}frontend new\n  bind 127.0.0.1:{free_port}\n");
        // The live config's own listener is HAProxy's already: not tried.
        assert_eq!(unavailable_new_listeners(&live, &candidate), []);
        let candidate = format!("frontend new\n  bind 127.0.0.1:{port}\n");
        let busy = unavailable_new_listeners("", &candidate);
        assert_eq!(
            busy,
            [BusyListener {
                address: SocketAddr::from(([127, 0, 0, 1], port)),
            }]
        );
        assert!(busy[0].to_string().contains(&format!("127.0.0.1:{port}")));
    }

    #[test]
    fn a_port_shared_with_so_reuseport_is_no_reason_to_stop() {
        // Another HAProxy of ours listening with SO_REUSEPORT: HAProxy's own bind would share it.
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let _shared = listen_as_haproxy(&address).unwrap();
        let candidate = format!("frontend new\n  bind 127.0.0.1:{port}\n");
        assert_eq!(unavailable_new_listeners("", &candidate), []);
    }
}
