//! A temp directory for `apply::apply` tests: `etc/haproxy.cfg` as the live path, a validation
//! script that accepts everything and a reload command that records each run.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use haproxy_marathon_sync::apply::{self, Candidate, Outcome};
use haproxy_marathon_sync::config::{ApplyConfig, Config};
use haproxy_marathon_sync::error::{classify, Failure};
use tempfile::TempDir;

use super::haproxy::wait_for;

pub struct Fixture {
    pub dir: TempDir,
    pub config: ApplyConfig,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        let live = dir.path().join("etc/haproxy.cfg");
        let mut config = Config::new(Vec::new(), live).apply;
        config.lock_timeout = Duration::from_secs(10);
        config.command_timeout = Duration::from_secs(10);
        let mut fixture = Fixture { dir, config };
        fixture.config.haproxy_bin = fixture.script("haproxy-ok", "exit 0");
        fixture.config.reload_command =
            format!("echo reload >> {}", fixture.reload_log().display());
        fixture
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn live(&self) -> &Path {
        &self.config.haproxy_config
    }

    pub fn reload_log(&self) -> PathBuf {
        self.path("reloads.log")
    }

    /// How many times the reload command ran.
    pub fn reloads(&self) -> usize {
        fs::read_to_string(self.reload_log()).map_or(0, |log| log.lines().count())
    }

    /// An executable `sh` script; `--probe` makes it exit at once, and running it once here
    /// makes sure no forked process still holds it open for writing ("text file busy").
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(
            &path,
            format!("#!/bin/sh\n[ \"$1\" = --probe ] && exit 0\n{body}\n"),
        )
        .unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let ready = wait_for(Duration::from_secs(5), || {
            Command::new(&path).arg("--probe").status().is_ok()
        });
        assert!(ready, "could not run {}", path.display());
        path
    }

    pub fn write_live(&self, content: &str) {
        fs::write(self.live(), content).unwrap();
    }

    pub fn read_live(&self) -> String {
        fs::read_to_string(self.live()).unwrap()
    }

    pub fn apply(&self, candidate: &Candidate) -> anyhow::Result<Outcome> {
        self.apply_with(&self.config, candidate)
    }

    /// Applies with `config`; nothing may be printed without `--diff` or `--dry-run`.
    pub fn apply_with(
        &self,
        config: &ApplyConfig,
        candidate: &Candidate,
    ) -> anyhow::Result<Outcome> {
        let mut out = Vec::new();
        let outcome = apply::apply(candidate, config, &mut out);
        assert!(
            out.is_empty(),
            "printed without --diff or --dry-run: {out:?}"
        );
        outcome
    }

    /// File names in the config's directory, sorted: proves no temp file was left behind.
    pub fn etc_files(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.path("etc"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

pub fn candidate(config: &str) -> Candidate {
    Candidate {
        config: config.to_string(),
        companions: Vec::new(),
    }
}

pub fn failure_of(result: anyhow::Result<Outcome>) -> (Option<Failure>, String) {
    let error = result.expect_err("the apply should have failed");
    (classify(&error), format!("{error:#}"))
}
