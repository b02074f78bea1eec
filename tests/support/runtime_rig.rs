//! A rig for runtime-update tests through the binary: a workspace, a stand-in Marathon running
//! one app `/web`, and a real master-worker HAProxy the binary reaches with
//! `--haproxy-master-socket`; with bounded waits for what HAProxy serves and its worker PID.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fs;

use super::backend::{http_get, Backend};
use super::haproxy::{assert_valid, free_port, http_config, wait_for, Haproxy, HAPROXY_DEADLINE};
use super::marathon::FakeMarathon;
use super::sync::Run;
use super::workspace::{web_app, Workspace};

use haproxy_marathon_sync::apply::ProcessTable;

/// A workspace, a stand-in Marathon and a HAProxy started on a placeholder config, before the
/// tool's first run (which reloads it onto the rendered config).
pub struct Rig {
    pub workspace: Workspace,
    pub marathon: FakeMarathon,
    pub haproxy: Haproxy,
    pub service_port: u16,
}

impl Rig {
    pub fn start() -> Rig {
        Rig::start_in(Workspace::new())
    }

    /// A rig in `workspace` (e.g. one with another head).
    pub fn start_in(workspace: Workspace) -> Rig {
        let marathon = FakeMarathon::start();
        let placeholder_port = free_port();
        fs::write(
            workspace.config(),
            http_config(placeholder_port, "placeholder", &[]),
        )
        .unwrap();
        let haproxy = Haproxy::start(
            &workspace.config(),
            &workspace.path("run"),
            placeholder_port,
        );
        Rig {
            workspace,
            marathon,
            haproxy,
            service_port: free_port(),
        }
    }

    /// Marathon now runs `/web` with one task on each of `ports`.
    pub fn marathon_runs_ports(&self, ports: &[u16]) {
        let (apps, tasks) = web_app(self.service_port, ports);
        self.marathon.set_state(apps, tasks);
    }

    /// Marathon now runs `/web` with one task on each of `backends`.
    pub fn marathon_runs(&self, backends: &[&Backend]) {
        let ports: Vec<u16> = backends.iter().map(|b| b.port).collect();
        self.marathon_runs_ports(&ports);
    }

    /// One cron-style run of the binary through the master socket, with `extra` flags.
    pub fn run(&self, extra: &[&str]) -> Run {
        let socket = self.haproxy.master_socket.to_str().unwrap().to_string();
        let mut flags = vec![
            "--haproxy-master-socket",
            socket.as_str(),
            "--max-server-loss",
            "100",
        ];
        flags.extend_from_slice(extra);
        self.workspace.run(&self.marathon.url(), "false", &flags)
    }

    /// The one summary line, from a run that applied a change.
    pub fn applied(&self, extra: &[&str]) -> String {
        let run = self.run(extra);
        run.assert_success();
        run.stderr
            .lines()
            .find(|line| line.contains("applied "))
            .unwrap_or_else(|| panic!("no summary line:\n{}", run.stderr))
            .to_string()
    }

    /// Waits (bounded) until HAProxy's master has made `count` reloads, and fails with its
    /// process table if it does not.
    pub fn assert_reloaded(&self, count: u32) {
        assert!(
            self.haproxy.wait_for_reloads(count),
            "{}",
            self.haproxy.show_proc()
        );
    }

    /// The PID of HAProxy's current worker (there must be exactly one).
    pub fn worker(&self) -> u32 {
        let table = ProcessTable::parse(&self.haproxy.show_proc()).expect("a master line");
        let current: Vec<u32> = table
            .workers
            .iter()
            .filter(|(_, outlived)| *outlived == 0)
            .map(|(pid, _)| *pid)
            .collect();
        assert_eq!(current.len(), 1, "{table:?}");
        current[0]
    }

    /// Waits (bounded) until requests to the app reach every one of `names`, and asserts that
    /// none reached another.
    pub fn serves_exactly(&self, names: &[&str]) {
        let wanted: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        let mut seen = BTreeSet::new();
        let mut stray = Vec::new();
        let all_seen = wait_for(HAPROXY_DEADLINE, || {
            if let Ok((200, body)) = http_get(self.service_port, "/") {
                if !wanted.contains(&body) {
                    stray.push(body.clone());
                }
                seen.insert(body);
            }
            seen.is_superset(&wanted)
        });
        assert!(all_seen, "only {seen:?} of {wanted:?} answered");
        assert!(
            stray.is_empty(),
            "answered by servers Marathon no longer runs: {stray:?}"
        );
    }

    /// The file on disk is what a fresh render gives (a dry run finds nothing to change) and
    /// passes `haproxy -c`.
    pub fn file_matches_a_fresh_render(&self) {
        let run = self.run(&["--dry-run", "--diff"]);
        run.assert_success();
        assert_eq!(run.stdout, "", "the dry run found a difference");
        assert_valid(&self.workspace.config());
    }
}
