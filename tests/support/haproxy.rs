//! A real HAProxy for tests: master-worker mode (`-W -S <dir>/master.sock`) on 127.0.0.1 ports
//! the test chooses, reloaded and queried through the master CLI, stopped by PID on drop.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The HAProxy the tests run (Debian's package puts it here).
pub const HAPROXY_BIN: &str = "/usr/sbin/haproxy";

/// Longest a test waits for HAProxy to start, reload or stop.
pub const HAPROXY_DEADLINE: Duration = Duration::from_secs(15);

/// Polls `condition` until it holds or `timeout` passes; true when it held.
pub fn wait_for(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if condition() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A port on 127.0.0.1 reserved for the rest of the test process (see [`super::ports`]): no
/// other test can take it, HAProxy can bind it, and a connection to it is refused until
/// something listens. Prefer [`super::ports::Port::reserve`], which releases it with the test.
pub fn free_port() -> u16 {
    super::ports::Port::reserve().leak()
}

/// A minimal HTTP config: one frontend on `127.0.0.1:port` sending everything to one backend.
pub fn http_config(frontend_port: u16, backend: &str, servers: &[(&str, String)]) -> String {
    let mut text = format!(
        "global\n  hard-stop-after 5s\n\ndefaults\n  mode http\n  timeout connect 2s\n  \
         timeout client 5s\n  timeout server 5s\n\nfrontend http_in\n  bind 127.0.0.1:{frontend_port}\n  \
         default_backend {backend}\n\nbackend {backend}\n  balance roundrobin\n"
    );
    for (name, address) in servers {
        text.push_str(&format!("  server {name} {address}\n"));
    }
    text
}

/// A running HAProxy master (and its workers).
pub struct Haproxy {
    child: Child,
    pub dir: PathBuf,
    pub master_socket: PathBuf,
    pub pid_file: PathBuf,
    pub log: PathBuf,
}

impl Haproxy {
    /// Starts `haproxy -W -S <dir>/master.sock -f config -p <dir>/haproxy.pid` and waits (bounded)
    /// until `port` on 127.0.0.1 accepts connections and the master socket answers.
    pub fn start(config: &Path, dir: &Path, port: u16) -> Haproxy {
        std::fs::create_dir_all(dir).expect("creating haproxy's run directory");
        let master_socket = dir.join("master.sock");
        let pid_file = dir.join("haproxy.pid");
        let log = dir.join("haproxy.log");
        let output = File::create(&log).expect("creating the haproxy log");
        let child = Command::new(HAPROXY_BIN)
            .arg("-W")
            .arg("-S")
            .arg(&master_socket)
            .arg("-f")
            .arg(config)
            .arg("-p")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("starting haproxy");
        let mut haproxy = Haproxy {
            child,
            dir: dir.to_path_buf(),
            master_socket,
            pid_file,
            log,
        };
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let up = wait_for(HAPROXY_DEADLINE, || {
            matches!(haproxy.child.try_wait(), Ok(None))
                && TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
                && haproxy.try_command("show proc").is_some()
        });
        assert!(
            up,
            "haproxy did not come up on {address}:\n{}",
            haproxy.log_text()
        );
        haproxy
    }

    /// The master's PID (the process this helper started).
    pub fn master_pid(&self) -> u32 {
        self.child.id()
    }

    /// A shell command that reloads this HAProxy (for `reload_command`).
    pub fn reload_shell_command(&self) -> String {
        format!("kill -USR2 {}", self.master_pid())
    }

    /// Sends one command to the master CLI and returns the answer (bounded in time).
    pub fn try_command(&self, command: &str) -> Option<String> {
        let mut stream = UnixStream::connect(&self.master_socket).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
        stream
            .set_write_timeout(Some(Duration::from_secs(3)))
            .ok()?;
        // The master CLI keeps the connection open after a command unless told to quit.
        stream
            .write_all(format!("{command}; quit\n").as_bytes())
            .ok()?;
        let mut answer = String::new();
        stream.take(1024 * 1024).read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    pub fn command(&self, command: &str) -> String {
        self.try_command(command).unwrap_or_else(|| {
            panic!(
                "master CLI did not answer {command:?}:\n{}",
                self.log_text()
            )
        })
    }

    /// Asks the master to reload (the master CLI's `reload`).
    pub fn reload(&self) {
        let _ = self.try_command("reload");
    }

    /// `show proc` on the master CLI.
    pub fn show_proc(&self) -> String {
        self.command("show proc")
    }

    /// The master's reload counter, from `show proc` (`<pid> master <reloads> ...`).
    pub fn reloads(&self) -> Option<u32> {
        let processes = self.try_command("show proc")?;
        processes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, "master", reloads, ..] => reloads.parse().ok(),
                _ => None,
            }
        })
    }

    /// Waits (bounded) until the master reports `count` reloads.
    pub fn wait_for_reloads(&self, count: u32) -> bool {
        wait_for(HAPROXY_DEADLINE, || self.reloads() == Some(count))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // SIGTERM to the master stops its workers too; SIGKILL if it does not end in time.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: a plain syscall on the PID of the child this helper started and has not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let ended = wait_for(HAPROXY_DEADLINE, || {
            !matches!(self.child.try_wait(), Ok(None))
        });
        if !ended {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
