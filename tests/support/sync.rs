//! Drives the built binary in tests, in the style of just's and ripgrep's test helpers:
//! `Sync::new().marathon(&url).config(&path).arg("--dry-run").run()` runs it once with a clean
//! environment (only `PATH`) and returns a [`Run`] to assert on; `.spawn()` starts a
//! long-running one (`--interval`, `--sse`) behind a guard that stops it when the test ends,
//! passed or failed. Every test that runs the binary goes through here.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

use super::process::Guarded;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

/// `PATH` for the binary: the system directories, `/usr/sbin` (haproxy) included.
pub const TEST_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/// One invocation of the binary, built up flag by flag.
pub struct Sync {
    command: Command,
}

impl Default for Sync {
    fn default() -> Sync {
        Sync::new()
    }
}

impl Sync {
    /// The binary with an empty environment but `PATH`, and stdin closed.
    pub fn new() -> Sync {
        Sync::wrapped(Command::new(BIN))
    }

    /// `command` is a wrapper (e.g. `unshare ... sh -c '... exec "$@"' sh BIN`) that ends by
    /// running the binary; the flags added later go after it.
    pub fn wrapped(mut command: Command) -> Sync {
        command
            .env_clear()
            .env("PATH", TEST_PATH)
            .stdin(Stdio::null());
        Sync { command }
    }

    /// `--marathon URL` (or a snapshot directory).
    pub fn marathon(self, source: impl AsRef<OsStr>) -> Sync {
        self.arg("--marathon").arg(source)
    }

    /// `--group GROUP`.
    pub fn group(self, group: &str) -> Sync {
        self.args(["--group", group])
    }

    /// `--haproxy-config PATH`.
    pub fn config(self, path: impl AsRef<Path>) -> Sync {
        self.arg("--haproxy-config").arg(path.as_ref())
    }

    /// `--templates DIR`.
    pub fn templates(self, dir: impl AsRef<Path>) -> Sync {
        self.arg("--templates").arg(dir.as_ref())
    }

    /// `--reload-command COMMAND`.
    pub fn reload_command(self, command: &str) -> Sync {
        self.args(["--reload-command", command])
    }

    /// `--haproxy-master-socket PATH`: reload through HAProxy's master CLI.
    pub fn master_socket(self, path: impl AsRef<Path>) -> Sync {
        self.arg("--haproxy-master-socket").arg(path.as_ref())
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Sync {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Sync
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Sync {
        self.command.env(key, value);
        self
    }

    pub fn envs<I, K, V>(mut self, vars: I) -> Sync
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.command.envs(vars);
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Sync {
        self.command.current_dir(dir);
        self
    }

    /// Runs it to the end and captures stdout and stderr.
    pub fn run(mut self) -> Run {
        let output = self
            .command
            .output()
            .unwrap_or_else(|err| panic!("running {:?}: {err}", self.command));
        Run {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs it as [`Sync::run`] does, but gives up past `limit`: the child is killed (by its
    /// PID) and the test fails, so a run that hangs cannot hang the suite.
    pub fn run_within(mut self, limit: Duration) -> Run {
        let child = self
            .command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {:?}: {err}", self.command));
        let mut child = Guarded::new(child);
        // Read both pipes while it runs, so a large output cannot block it.
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = drain(child.inner().stdout.take().map(|p| Box::new(p) as _));
        let stderr = drain(child.inner().stderr.take().map(|p| Box::new(p) as _));
        let Some(status) = child.wait_timeout(limit) else {
            panic!("{:?} did not finish within {limit:?}", self.command);
        };
        Run {
            status,
            stdout: stdout.join().expect("reading stdout"),
            stderr: stderr.join().expect("reading stderr"),
        }
    }

    /// Runs it to the end with stdout discarded and stderr written to `file` (for tests of what
    /// the binary does when stderr is a particular file, such as the journal stream).
    pub fn run_with_stderr(mut self, file: std::fs::File) -> ExitStatus {
        self.command
            .stdout(Stdio::null())
            .stderr(file)
            .status()
            .unwrap_or_else(|err| panic!("running {:?}: {err}", self.command))
    }

    /// Starts it as [`Sync::spawn`] does, with stderr written to `file` instead of a pipe (so
    /// a test can read what a long-running one said so far).
    pub fn spawn_with_stderr(mut self, file: std::fs::File) -> Guarded {
        let child = self
            .command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {:?}: {err}", self.command));
        Guarded::new(child)
    }

    /// Starts it with stdout discarded and stderr piped, behind a guard that stops it (SIGTERM,
    /// then SIGKILL) when dropped.
    pub fn spawn(mut self) -> Guarded {
        let child = self
            .command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {:?}: {err}", self.command));
        Guarded::new(child)
    }
}

/// What one run did.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics, showing both streams, unless the run exited with `code`.
    #[track_caller]
    pub fn assert_exit(&self, code: i32) -> &Run {
        assert_eq!(
            self.code(),
            Some(code),
            "exit status\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Run {
        self.assert_exit(0)
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Run {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_lacks(&self, needle: &str) -> &Run {
        assert!(
            !self.stderr.contains(needle),
            "stderr has {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Run {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }

    /// Nothing on stdout or stderr.
    #[track_caller]
    pub fn assert_silent(&self) -> &Run {
        assert_eq!(
            (self.stdout.as_str(), self.stderr.as_str()),
            ("", ""),
            "the run printed something"
        );
        self
    }
}
