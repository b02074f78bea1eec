//! Ports on 127.0.0.1 that no other test can take. A [`Port`] is a TCP socket bound with
//! `SO_REUSEADDR` and never listening: while the test holds it, the kernel hands the port to no
//! one else (`bind(0)` skips it, a plain `bind` to it fails), a connection to it is refused at
//! once, and HAProxy, which binds with `SO_REUSEADDR` too, can still listen on it. So the same
//! value serves as "a port for HAProxy to bind" and as "an address that truly refuses", with
//! no window between choosing the port and using it.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};

/// A reserved port; released when dropped.
#[derive(Debug)]
pub struct Port {
    socket: OwnedFd,
    number: u16,
}

impl Port {
    /// Reserves a port the kernel picks (bound to `127.0.0.1:0`, never listening).
    pub fn reserve() -> Port {
        // SAFETY: plain socket syscalls on a descriptor this function owns; every result is
        // checked, and the descriptor is handed to `OwnedFd`, which closes it exactly once.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let socket = OwnedFd::from_raw_fd(fd);
            let one: libc::c_int = 1;
            let set = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            assert_eq!(set, 0, "SO_REUSEADDR: {}", std::io::Error::last_os_error());
            let mut address: libc::sockaddr_in = std::mem::zeroed();
            address.sin_family = libc::AF_INET as libc::sa_family_t;
            address.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            address.sin_port = 0;
            let length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let bound = libc::bind(fd, (&address as *const libc::sockaddr_in).cast(), length);
            assert_eq!(bound, 0, "bind: {}", std::io::Error::last_os_error());
            let mut length = length;
            let named = libc::getsockname(
                fd,
                (&mut address as *mut libc::sockaddr_in).cast(),
                &mut length,
            );
            assert_eq!(named, 0, "getsockname: {}", std::io::Error::last_os_error());
            Port {
                number: u16::from_be(address.sin_port),
                socket,
            }
        }
    }

    pub fn number(&self) -> u16 {
        self.number
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.number))
    }

    /// `http://127.0.0.1:PORT`: nothing listens there while this is held, so a request is
    /// refused (not left hanging in a backlog).
    pub fn refused_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Keeps the port reserved for the rest of the test process and returns its number.
    pub fn leak(self) -> u16 {
        let number = self.number;
        // The descriptor stays open until the process ends: the port stays reserved.
        std::mem::forget(self.socket);
        number
    }

    /// Keeps the port reserved for the rest of the test process and returns its refused URL.
    pub fn leak_refused_url(self) -> String {
        let url = self.refused_url();
        self.leak();
        url
    }
}
