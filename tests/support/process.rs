//! A child process that cannot outlive its test: [`Guarded`] sends SIGTERM when dropped (a test
//! that panics included), waits a bounded time, then SIGKILLs, always by the PID it started.
#![allow(dead_code)]

use std::io::Read;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long a guarded child gets to end after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A started child, stopped on drop.
pub struct Guarded {
    child: Option<Child>,
}

impl Guarded {
    pub fn new(child: Child) -> Guarded {
        Guarded { child: Some(child) }
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the child is still held")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the child is still held").id()
    }

    /// Sends `signal` to the child (by the PID this guard holds).
    pub fn signal(&mut self, signal: libc::c_int) {
        if matches!(self.child().try_wait(), Ok(None)) {
            // SAFETY: a plain syscall on the PID of the child this guard started and has not
            // reaped (try_wait just saw it running), so the PID cannot have been reused.
            unsafe {
                libc::kill(self.pid() as libc::pid_t, signal);
            }
        }
    }

    /// The exit status, once it has ended; `None` while it runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child().try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the child to end by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then up to [`STOP_GRACE`]; SIGKILL if it did not end. Returns the status and
    /// whether it ended on SIGTERM alone.
    pub fn stop(&mut self) -> (ExitStatus, bool) {
        self.signal(libc::SIGTERM);
        match self.wait_timeout(STOP_GRACE) {
            Some(status) => (status, true),
            None => {
                let _ = self.child().kill();
                (self.child().wait().expect("reaping the child"), false)
            }
        }
    }

    /// Stops the child as [`Guarded::stop`] does and returns what it wrote to a piped stderr.
    pub fn stop_and_read_stderr(&mut self) -> (ExitStatus, bool, String) {
        let (status, on_term) = self.stop();
        let mut stderr = String::new();
        if let Some(pipe) = self.child().stderr.as_mut() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        (status, on_term, stderr)
    }

    /// The child itself, for what this guard does not offer; it is still stopped on drop.
    pub fn inner(&mut self) -> &mut Child {
        self.child()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = self.stop();
            }
        }
    }
}
