//! What stops a candidate before it is put in place, as types a caller branches on (never on
//! message text): HAProxy's own rejection (`haproxy -c` ran and said no), and listeners the
//! candidate adds that this host cannot give it (another process holds the address).
//!
//! `haproxy -c` never binds, so a port another process holds passes the check and only fails
//! the reload, which then rolls back every app's change, run after run. The candidate's new
//! listeners (those the live config does not have: HAProxy holds its own already) are tried
//! here with a plain bind, released at once, before anything is written: ~9 µs of kernel work
//! each, so on one thread per core (at most 8), and from as soon as the candidate is known,
//! alongside the rest of the checks and `haproxy -c` (which binds nothing, so that changes no
//! verdict; every earlier verdict is still judged first). Many at once (a host's first run, a
//! mass deployment) are first narrowed to the ports some socket of the host holds, from the
//! kernel's list of them (`sockets.rs`): a port no socket holds refuses no bind.

use std::fmt;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::ScopedJoinHandle;

use super::command::CommandError;
use super::sockets;
use super::summary::sorted_difference;
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

/// The listeners `candidate` has and `live` does not, that a bind attempt here refuses, in
/// address order: what [`while_trying_new_listeners`] answers, tried before returning.
#[cfg(test)]
fn unavailable_new_listeners(live: &str, candidate: &str) -> Vec<BusyListener> {
    while_trying_new_listeners(true, live, candidate, |trying| trying.busy())
}

/// The listeners `candidate` has and `live` does not, in address order.
fn new_listeners(live: &str, candidate: &str) -> Vec<SocketAddr> {
    new_of(&listeners(live), listeners(candidate))
}

/// Of the `candidate`'s listeners, those not in `live` (both sorted, as [`listeners`] reads
/// them): one walk along both, where a search per address was 7 M instructions at 10,000 apps.
fn new_of(live: &[SocketAddr], candidate: Vec<SocketAddr>) -> Vec<SocketAddr> {
    sorted_difference(&candidate, live).copied().collect()
}

/// Runs `work` while the new listeners of `candidate` are tried on other threads, when
/// `try_listeners`; `work` takes their answer from the [`Trying`] it is given, where it needs it.
///
/// The tries start as soon as the candidate and the live config are both known, before the
/// caller knows whether it will want the answer (the guard may refuse the change, the reload
/// interval defer it, `haproxy -c` reject it), so they overlap everything the caller does
/// before its verdict on them: ~110 ms of kernel work at a 10,000-app first run. That is safe
/// because a bind attempt writes nothing and is released at once: an answer the caller does not
/// ask for is discarded, and those tries are stopped. Nothing else this tool does binds, so
/// the ports are as free or as busy as they would be when tried at the point of the verdict.
pub fn while_trying_new_listeners<T>(
    try_listeners: bool,
    live: &str,
    candidate: &str,
    work: impl FnOnce(Trying<'_>) -> T,
) -> T {
    // Read on the caller's thread, and the binds started from it: only they overlap its work.
    let new = match try_listeners {
        true => new_listeners(live, candidate),
        false => Vec::new(),
    };
    while_trying(new, work)
}

/// [`while_trying_new_listeners`] from the listeners of both sides, read already with
/// [`listeners`] (the dry run reads them beside each side's inventory).
pub fn while_trying_listeners_of<T>(
    live: &[SocketAddr],
    candidate: Vec<SocketAddr>,
    work: impl FnOnce(Trying<'_>) -> T,
) -> T {
    while_trying(new_of(live, candidate), work)
}

/// Runs `work` while `new` is tried on other threads.
fn while_trying<T>(new: Vec<SocketAddr>, work: impl FnOnce(Trying<'_>) -> T) -> T {
    let stop = AtomicBool::new(false);
    // Shared with the threads (a chunk without a thread is tried from it later), and so freed
    // once the answer is taken rather than when `work` ends.
    let new: Arc<[SocketAddr]> = worth_trying(new).into();
    std::thread::scope(|scope| {
        let threads = bind_threads(new.len());
        let tries = start_tries(scope, new, threads, &stop);
        work(Trying { tries, stop: &stop })
    })
}

/// Of `new`, those a bind might refuse: from `ATTEMPTS_PER_THREAD` addresses on, when the
/// kernel can list every TCP socket of this host, only those on a port some socket holds (a
/// port no socket holds refuses no bind: ~9 µs of kernel work saved per address, ~110 ms at a
/// 10,000-app first run, for one listing of the host's sockets); otherwise all of them.
fn worth_trying(mut new: Vec<SocketAddr>) -> Vec<SocketAddr> {
    if new.len() < ATTEMPTS_PER_THREAD {
        return new;
    }
    if let Some(in_use) = sockets::tcp_ports_in_use() {
        new.retain(|address| in_use.contains(address.port()));
    }
    new
}

/// One consecutive chunk of the addresses being tried: its thread, or the chunk itself when no
/// thread was to be had (a limit on threads), to be tried when the answer is asked for.
type Tries<'scope> = Vec<Result<ScopedJoinHandle<'scope, Vec<SocketAddr>>, Chunk>>;

/// A consecutive part of the addresses being tried.
type Chunk = (Arc<[SocketAddr]>, Range<usize>);

/// The new listeners being tried for [`while_trying_new_listeners`]: [`Trying::busy`] waits for
/// the answer; dropped unasked, the tries stop (the scope still waits for the threads to end).
pub struct Trying<'scope> {
    tries: Tries<'scope>,
    stop: &'scope AtomicBool,
}

impl Trying<'_> {
    /// The candidate's new listeners this host refuses, in address order; none when not asked
    /// to try them.
    pub fn busy(mut self) -> Vec<BusyListener> {
        answers(std::mem::take(&mut self.tries))
            .into_iter()
            .map(|address| BusyListener { address })
            .collect()
    }
}

impl Drop for Trying<'_> {
    fn drop(&mut self) {
        if !self.tries.is_empty() {
            // Unasked: the answer is discarded, so the binds left need not be tried.
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Each bind attempt is ~9 µs of kernel work (socket, two `setsockopt`, `bind`, `listen`,
/// `close`): ~110 ms for the ~12,000 new listeners of a 10,000-app first run. A thread costs
/// tens of µs to start, so below this many attempts per thread one thread is cheaper.
const ATTEMPTS_PER_THREAD: usize = 256;

/// A bound on what a big host gives one check: the threads share the process's descriptor
/// table and the kernel's port hash, both behind locks, and only up to 2 cores were measured
/// (2 threads there: 110 → 61 ms for ~12,000 binds with a core free; 3 or 4 no faster).
const MAX_BIND_THREADS: usize = 8;

/// How many threads try `attempts` binds: one per core, at most `MAX_BIND_THREADS`, and none
/// with fewer than `ATTEMPTS_PER_THREAD` attempts each.
fn bind_threads(attempts: usize) -> usize {
    let wanted = attempts / ATTEMPTS_PER_THREAD;
    if wanted <= 1 {
        // The usual run (a few new listeners, if any) does not read the cgroup's CPU limit.
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores.min(MAX_BIND_THREADS).min(wanted).max(1)
}

/// The `addresses` another process holds (a bind attempt says "in use"), in their order, tried
/// on `threads` threads, each on its own consecutive chunk, until `stop` is set (the answer is
/// then partial: only for a caller that discards it).
#[cfg(test)]
fn refused_by_this_host(
    addresses: &[SocketAddr],
    threads: usize,
    stop: &AtomicBool,
) -> Vec<SocketAddr> {
    std::thread::scope(|scope| answers(start_tries(scope, addresses.into(), threads, stop)))
}

/// Starts trying `addresses` on `threads` threads, each on its own consecutive chunk (none for
/// no addresses).
fn start_tries<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    addresses: Arc<[SocketAddr]>,
    threads: usize,
    stop: &'scope AtomicBool,
) -> Tries<'scope> {
    let chunk_length = addresses.len().div_ceil(threads.max(1)).max(1);
    (0..addresses.len())
        .step_by(chunk_length)
        .map(|start| {
            let chunk = (
                Arc::clone(&addresses),
                start..(start + chunk_length).min(addresses.len()),
            );
            let (on_thread, range) = chunk.clone();
            std::thread::Builder::new()
                .name("bind-check".into())
                .spawn_scoped(scope, move || refused_in(&on_thread[range], stop))
                .map_err(|_| chunk)
        })
        .collect()
}

/// What `tries` found, in their order: each thread joined, each chunk left without one tried
/// here.
fn answers(tries: Tries) -> Vec<SocketAddr> {
    let mut refused = Vec::new();
    for tried in tries {
        refused.extend(match tried {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err((addresses, range)) => refused_in(&addresses[range], &AtomicBool::new(false)),
        });
    }
    refused
}

/// The addresses of `chunk` another process holds, until `stop` is set.
fn refused_in(chunk: &[SocketAddr], stop: &AtomicBool) -> Vec<SocketAddr> {
    chunk
        .iter()
        .take_while(|_| !stop.load(Ordering::Relaxed))
        .filter(|address| {
            // Only "in use" is a verdict: an address that is not (yet) this host's may be
            // bindable for HAProxy (`transparent`, `freebind`, a VIP that moves here), and
            // other errors (a port below 1024 for a user who is not root) are for HAProxy to
            // judge.
            let tried = listen_as_haproxy(address);
            // An `Ok` listener is dropped, and so closed, at once.
            matches!(tried, Err(error) if error.kind() == ErrorKind::AddrInUse)
        })
        .copied()
        .collect()
}

/// The TCP addresses of every `bind` line of a config, in the plain `address:port` forms
/// (`*:80`, `127.0.0.1:10000`, `:::80`, `[::1]:80`, `ipv4@`/`ipv6@` prefixed, comma lists),
/// sorted, each once. Sockets, ranges, names and other families are left to HAProxy.
pub fn listeners(config: &str) -> Vec<SocketAddr> {
    // A bind line is a line that starts with `bind ` after its whitespace. Searching the text
    // for `bind ` and checking what precedes it on its line is ~40% cheaper than splitting an
    // 8.6 MB config (10,000 apps) into its ~230,000 lines, the same lines found; memchr's
    // vectorised search halves it again against `str::match_indices` (110 M → 51 M
    // instructions for the live config and the candidate of a 10,000-app run).
    const KEYWORD: &str = "bind ";
    let mut found: Vec<SocketAddr> = memchr::memmem::find_iter(config.as_bytes(), KEYWORD)
        .filter(|at| {
            let before = config[..*at].trim_end_matches(|c: char| c != '\n' && c.is_whitespace());
            before.is_empty() || before.ends_with('\n')
        })
        .filter_map(|at| {
            let rest = &config[at + KEYWORD.len()..];
            let line = rest.split_once('\n').map_or(rest, |(line, _)| line);
            line.split_whitespace().next()
        })
        .flat_map(|addresses| addresses.split(','))
        .filter_map(socket_address)
        .collect();
    found.sort_unstable();
    found.dedup();
    found
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
    fn bind_lines_are_found_as_a_line_by_line_reading_finds_them() {
        // What `listeners` replaced: every line, trimmed at its start, that begins `bind `.
        let line_by_line = |config: &str| -> Vec<SocketAddr> {
            let mut found: Vec<SocketAddr> = config
                .lines()
                .filter_map(|line| line.trim_start().strip_prefix("bind "))
                .filter_map(|rest| rest.split_whitespace().next())
                .flat_map(|addresses| addresses.split(','))
                .filter_map(socket_address)
                .collect();
            found.sort_unstable();
            found.dedup();
            found
        };
        let config = "bind 127.0.0.1:1\n\tbind 127.0.0.1:2\r\n  xbind 127.0.0.1:3\n\
                      # bind 127.0.0.1:4\n  bind\t127.0.0.1:5\n\u{a0}bind 127.0.0.1:6\n\
                      \r bind 127.0.0.1:7\nfoo bind 127.0.0.1:8\n  bind  127.0.0.1:9\n\
                      bind bind 127.0.0.1:10\n  bind \n127.0.0.1:11\n  bind 127.0.0.1:12\r\n\
                      \x20 bind 127.0.0.1:1 v4v6\n  bind 127.0.0.1:13";
        assert_eq!(listeners(config), line_by_line(config));
        let found: Vec<String> = listeners(config).iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "127.0.0.1:1",
                "127.0.0.1:2",
                "127.0.0.1:6",
                "127.0.0.1:7",
                "127.0.0.1:9",
                "127.0.0.1:12",
                "127.0.0.1:13"
            ]
        );
    }

    #[test]
    fn held_addresses_in_every_chunk_are_named_in_order_by_several_threads() {
        let first_held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first_held.local_addr().unwrap().port();
        // The same port on 1,000 loopback addresses from 127.0.0.1 up, in address order: the
        // kernel gave `port` to 127.0.0.1 with nothing on its wildcard, so only those held here
        // are in use.
        let addresses: Vec<SocketAddr> = (0..1000u32)
            .map(|n| SocketAddr::from((Ipv4Addr::from(0x7f00_0001 + n), port)))
            .collect();
        // 4 threads take 250 each: held at both ends of the first chunk, the start of the
        // second and third and the end of the last.
        let held_at = [0, 249, 250, 500, 999];
        let _held: Vec<TcpListener> = held_at[1..]
            .iter()
            .map(|&at| TcpListener::bind(addresses[at]).unwrap())
            .collect();
        let expected = held_at.map(|at| addresses[at]);
        let go = AtomicBool::new(false);
        assert_eq!(refused_by_this_host(&addresses, 4, &go), expected);
        assert_eq!(refused_by_this_host(&addresses, 3, &go), expected);
        assert_eq!(refused_by_this_host(&addresses, 1, &go), expected);
        // More threads than addresses: one each at most.
        assert_eq!(
            refused_by_this_host(&addresses[249..251], 8, &go),
            expected[1..3]
        );
    }

    #[test]
    fn listeners_tried_alongside_other_work_are_those_tried_after_it() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let candidate = format!("frontend new\n  bind 127.0.0.1:{port}\n");
        let (worked, busy) =
            while_trying_new_listeners(true, "", &candidate, |trying| ("worked", trying.busy()));
        assert_eq!(worked, "worked");
        assert_eq!(busy, unavailable_new_listeners("", &candidate));
        assert_eq!(busy.len(), 1);
        // Not asked to (a runtime-only change): nothing is tried.
        let busy = while_trying_new_listeners(false, "", &candidate, |trying| trying.busy());
        assert_eq!(busy, []);
        // An answer not asked for is discarded, and the work's result is still returned.
        assert_eq!(while_trying_new_listeners(true, "", &candidate, |_| 7), 7);
    }

    #[test]
    fn stopped_tries_try_nothing_more() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = held.local_addr().unwrap();
        assert_eq!(
            refused_by_this_host(&[address], 1, &AtomicBool::new(true)),
            []
        );
        assert_eq!(
            refused_by_this_host(&[address], 1, &AtomicBool::new(false)),
            [address]
        );
    }

    #[test]
    fn listing_the_hosts_sockets_first_changes_no_verdict() {
        // Enough new listeners for the listing to be asked: 300 ports just freed, and the
        // ports of a listener, of a socket bound but not listening, and of a connection's end.
        let mut addresses: Vec<SocketAddr> = (0..300)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect::<Vec<_>>()
            .iter()
            .map(|freed| freed.local_addr().unwrap())
            .collect();
        let listening = TcpListener::bind("127.0.0.1:0").unwrap();
        let bound_only = sockets::bound_only_socket().unwrap();
        let connection = std::net::TcpStream::connect(listening.local_addr().unwrap()).unwrap();
        let held = [
            listening.local_addr().unwrap(),
            SocketAddr::from(([127, 0, 0, 1], bound_only.port)),
        ];
        addresses.extend(held);
        addresses.push(connection.local_addr().unwrap());
        addresses.sort_unstable();
        let filtered = worth_trying(addresses.clone());
        if sockets::tcp_ports_in_use().is_some() {
            assert!(filtered.len() < addresses.len(), "free ports are not tried");
        }
        let go = AtomicBool::new(false);
        let busy_filtered = refused_by_this_host(&filtered, 2, &go);
        let busy_all = refused_by_this_host(&addresses, 2, &go);
        assert_eq!(busy_filtered, busy_all);
        for held in held {
            assert!(busy_all.contains(&held), "{held} is named");
        }
    }

    #[test]
    fn a_few_binds_take_one_thread() {
        assert_eq!(bind_threads(0), 1);
        assert_eq!(bind_threads(ATTEMPTS_PER_THREAD - 1), 1);
        assert!(bind_threads(1_000_000) <= MAX_BIND_THREADS);
    }

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
