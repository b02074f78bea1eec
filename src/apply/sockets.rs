//! The local ports of every TCP socket in this network namespace, read from the kernel's
//! socket diagnostics (`NETLINK_SOCK_DIAG`, what `ss` reads): listening, connected, closing and
//! bound-only sockets alike. Only reads; nothing is bound, sent anywhere or changed.
//!
//! A bind can only be refused as "in use" by a socket holding the same port, so a port no
//! socket holds needs no bind attempt to know it is free (`refusal.rs` tries only the others).
//! That holds only when the list is complete: the kernel lists bound-only sockets (bound, never
//! listening or connected) since Linux 6.9, and silently leaves them out before. So the list is
//! trusted only when a bound-only socket made for the purpose shows up in it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A set of TCP ports, one bit each.
pub struct Ports(Box<[u64; 1024]>);

impl Ports {
    fn new() -> Ports {
        Ports(Box::new([0; 1024]))
    }

    fn insert(&mut self, port: u16) {
        self.0[usize::from(port / 64)] |= 1 << (port % 64);
    }

    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }
}

/// The local ports of every TCP socket of this network namespace, IPv4 and IPv6; `None` when
/// they cannot all be known: a kernel that does not list bound-only sockets, socket
/// diagnostics that are not available (a container without them), or any error.
pub fn tcp_ports_in_use() -> Option<Ports> {
    let probe = bound_only_socket().ok()?;
    let mut ports = Ports::new();
    let mut probe_seen = false;
    for family in [libc::AF_INET, libc::AF_INET6] {
        each_local_port(family, |port, state| {
            ports.insert(port);
            probe_seen |= family == libc::AF_INET && port == probe.port && state != TCP_LISTEN;
        })
        .ok()?;
    }
    probe_seen.then_some(ports)
}

/// A TCP socket bound to a port of the kernel's choosing on `0.0.0.0`, neither listening nor
/// connected: what a kernel that lists bound-only sockets must list.
pub(super) struct BoundOnly {
    _socket: OwnedFd,
    pub(super) port: u16,
}

pub(super) fn bound_only_socket() -> io::Result<BoundOnly> {
    // SAFETY: plain socket calls on a descriptor owned from its creation (closed by `OwnedFd`
    // on every path); the address structures are initialised in full before they are passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = OwnedFd::from_raw_fd(fd);
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&raw const address).cast(), length) != 0
            || libc::getsockname(fd, (&raw mut address).cast(), &mut length) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(BoundOnly {
            _socket: socket,
            port: u16::from_be(address.sin_port),
        })
    }
}

/// `SOCK_DIAG_BY_FAMILY`, the request type of `<linux/sock_diag.h>`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// Every TCP state of `<net/tcp_states.h>`, 1 (`ESTABLISHED`) to 12 (`NEW_SYN_RECV`), and the
/// pseudo-state 13 (`BOUND_INACTIVE`, Linux 6.9+) that asks for bound-only sockets too; older
/// kernels ignore the bits they do not know.
const ALL_TCP_STATES: u32 = (1 << 14) - 2;
const TCP_LISTEN: u8 = 10;
/// A dump bigger than this many sockets is not read to its end: the caller tries the binds.
const MAX_SOCKETS: usize = 4 << 20;
/// How long the kernel may take to send one part of the dump.
const RECEIVE_TIMEOUT: libc::timeval = libc::timeval {
    tv_sec: 2,
    tv_usec: 0,
};

/// Calls `each` with the local port and state of every TCP socket of `family`, from one dump.
fn each_local_port(family: libc::c_int, mut each: impl FnMut(u16, u8)) -> io::Result<()> {
    let socket = diagnostics_socket()?;
    let request = dump_request(family);
    // SAFETY: `request` is a whole netlink message the kernel reads and does not keep.
    let sent = unsafe {
        libc::send(
            socket.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent != request.len() as isize {
        return Err(io::Error::last_os_error());
    }
    let mut buffer = vec![0u8; 64 << 10];
    let mut sockets = 0usize;
    loop {
        // SAFETY: the kernel writes at most `buffer.len()` bytes into `buffer`.
        let received = unsafe {
            libc::recv(
                socket.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        let received = match received {
            n if n > 0 => n as usize,
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => match io::Error::last_os_error() {
                error if error.kind() == io::ErrorKind::Interrupted => continue,
                error => return Err(error),
            },
        };
        match read_messages(&buffer[..received], &mut each)? {
            Messages::Done => return Ok(()),
            Messages::More(count) => sockets += count,
        }
        if sockets > MAX_SOCKETS {
            return Err(io::Error::other("too many sockets to list"));
        }
    }
}

fn diagnostics_socket() -> io::Result<OwnedFd> {
    // SAFETY: a descriptor owned from its creation; the option is a whole `timeval`.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let socket = OwnedFd::from_raw_fd(fd);
        let timeout = RECEIVE_TIMEOUT;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        if set != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(socket)
    }
}

/// A netlink header (16 bytes) and an `inet_diag_req_v2` (56 bytes) asking for every TCP
/// socket of `family`, in the host's byte order as netlink wants.
fn dump_request(family: libc::c_int) -> [u8; 72] {
    let mut request = [0u8; 72];
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    request[0..4].copy_from_slice(&72u32.to_ne_bytes());
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request[6..8].copy_from_slice(&flags.to_ne_bytes());
    request[8..12].copy_from_slice(&1u32.to_ne_bytes());
    request[16] = family as u8;
    request[17] = libc::IPPROTO_TCP as u8;
    request[20..24].copy_from_slice(&ALL_TCP_STATES.to_ne_bytes());
    request
}

enum Messages {
    Done,
    /// This many sockets were read, and more are to come.
    More(usize),
}

/// Reads one datagram of the dump: netlink messages, each an `inet_diag_msg` (family, state,
/// timer, retransmits, then the socket's identity, its local port first, big-endian).
fn read_messages(mut datagram: &[u8], each: &mut impl FnMut(u16, u8)) -> io::Result<Messages> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message");
    let mut count = 0;
    while datagram.len() >= 16 {
        let length = u32::from_ne_bytes(datagram[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap());
        if length < 16 || length > datagram.len() {
            return Err(malformed());
        }
        match i32::from(kind) {
            libc::NLMSG_DONE => return Ok(Messages::Done),
            libc::NLMSG_ERROR => {
                let code = datagram
                    .get(16..20)
                    .map_or(0, |code| i32::from_ne_bytes(code.try_into().unwrap()));
                return Err(io::Error::from_raw_os_error(code.saturating_neg()));
            }
            _ if kind == SOCK_DIAG_BY_FAMILY => {
                let message = datagram.get(16..length).filter(|m| m.len() >= 6);
                let message = message.ok_or_else(malformed)?;
                each(u16::from_be_bytes([message[4], message[5]]), message[1]);
                count += 1;
            }
            _ => {}
        }
        // Messages are padded to 4 bytes.
        datagram = datagram.get(length.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Ok(Messages::More(count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn every_kind_of_socket_holding_a_port_is_listed() {
        let listening = TcpListener::bind("127.0.0.1:0").unwrap();
        let bound_only = bound_only_socket().unwrap();
        let client = TcpStream::connect(listening.local_addr().unwrap()).unwrap();
        let (accepted, _) = listening.accept().unwrap();
        let listening6 = TcpListener::bind("[::1]:0");
        let Some(ports) = tcp_ports_in_use() else {
            // Only a kernel that cannot list bound-only sockets may give no list.
            assert!(kernel_version() < (6, 9), "Linux 6.9 and later list them");
            return;
        };
        for port in [
            listening.local_addr().unwrap().port(),
            bound_only.port,
            client.local_addr().unwrap().port(),
            accepted.local_addr().unwrap().port(),
        ] {
            assert!(ports.contains(port), "port {port} is listed");
        }
        if let Ok(listening6) = listening6 {
            assert!(ports.contains(listening6.local_addr().unwrap().port()));
        }
        drop(bound_only);
        drop(listening);
        drop(client);
        drop(accepted);
    }

    /// The running kernel's version, as `uname -r` begins.
    fn kernel_version() -> (u32, u32) {
        // SAFETY: `uname` fills the whole structure, whose fields are NUL-terminated.
        let release = unsafe {
            let mut name: libc::utsname = std::mem::zeroed();
            assert_eq!(libc::uname(&mut name), 0);
            std::ffi::CStr::from_ptr(name.release.as_ptr())
                .to_string_lossy()
                .into_owned()
        };
        let mut numbers = release.split(|c: char| !c.is_ascii_digit());
        let mut next = || numbers.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        (next(), next())
    }

    #[test]
    fn a_set_of_ports_holds_what_was_put_in() {
        let mut ports = Ports::new();
        for port in [0, 1, 63, 64, 8080, 65535] {
            ports.insert(port);
        }
        for port in [0, 1, 63, 64, 8080, 65535] {
            assert!(ports.contains(port));
        }
        for port in [2, 62, 65, 8081, 65534] {
            assert!(!ports.contains(port));
        }
    }

    #[test]
    fn a_dump_is_read_message_by_message_to_its_end() {
        let message = |kind: u16, payload: &[u8]| {
            let mut bytes = Vec::new();
            bytes.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
            bytes.extend_from_slice(&kind.to_ne_bytes());
            bytes.extend_from_slice(&[0; 10]);
            bytes.extend_from_slice(payload);
            bytes.resize(bytes.len().next_multiple_of(4), 0);
            bytes
        };
        let mut datagram = message(SOCK_DIAG_BY_FAMILY, &[2, 10, 0, 0, 0x1f, 0x90, 0, 0]);
        datagram.extend(message(SOCK_DIAG_BY_FAMILY, &[2, 7, 0, 0, 0x00, 0x50, 0]));
        let mut seen = Vec::new();
        let read = read_messages(&datagram, &mut |port, state| seen.push((port, state)));
        assert!(matches!(read, Ok(Messages::More(2))));
        assert_eq!(seen, [(8080, 10), (80, 7)]);
        let done = message(libc::NLMSG_DONE as u16, &[0; 4]);
        assert!(matches!(
            read_messages(&done, &mut |_, _| {}),
            Ok(Messages::Done)
        ));
        let refused = message(libc::NLMSG_ERROR as u16, &(-libc::EPERM).to_ne_bytes());
        let error = read_messages(&refused, &mut |_, _| {}).err().unwrap();
        assert_eq!(error.raw_os_error(), Some(libc::EPERM));
        let cut = &datagram[..20];
        assert!(read_messages(cut, &mut |_, _| {}).is_err());
    }
}
