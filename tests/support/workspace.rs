//! A work directory for running the binary against a stand-in Marathon: template overrides
//! that keep HAProxy on 127.0.0.1 and away from system paths (no /dev/log, no /run/haproxy, a
//! small maxconn under the test machine's open-file cap), the config path, and a reload command
//! that logs each reload before running the test's own.
#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;

use super::haproxy::HAPROXY_BIN;
use super::ports::Port;
use super::sync::{Run, Sync};

/// The head the tests render: what a hitless reload needs, nothing from the system.
pub const TEST_HEAD: &str = "global\n  maxconn 1000\n  hard-stop-after 5s\n\ndefaults\n  \
                             mode http\n  timeout connect 2s\n  timeout client 5s\n  \
                             timeout server 5s\n";

/// One app `/web` in group `external` whose service port `service_port` HAProxy serves on
/// 127.0.0.1, with one task per port of `task_ports` on 127.0.0.1.
pub fn web_app(service_port: u16, task_ports: &[u16]) -> (String, String) {
    let apps = format!(
        r#"{{"apps":[{{"id":"/web","instances":{},"labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"}},"networks":[{{"mode":"host"}}],"portDefinitions":[{{"port":{service_port},"protocol":"tcp"}}],"healthChecks":[]}}]}}"#,
        task_ports.len()
    );
    let tasks: Vec<String> = task_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            format!(
                r#"{{"id":"web.{i}","appId":"/web","host":"127.0.0.1","ports":[{port}],"state":"TASK_RUNNING"}}"#
            )
        })
        .collect();
    (apps, format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")))
}

pub struct Workspace {
    pub dir: tempfile::TempDir,
    /// The app-id frontend's port, held for the workspace's life.
    appid_port: Port,
}

impl Default for Workspace {
    fn default() -> Workspace {
        Workspace::new()
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let appid_port = Port::reserve();
        let workspace = Workspace { dir, appid_port };
        fs::create_dir(workspace.templates()).unwrap();
        workspace.set_template("HAPROXY_HEAD", TEST_HEAD);
        workspace.set_template(
            "HAPROXY_HTTP_FRONTEND_APPID_HEAD",
            &format!(
                "\nfrontend marathon_http_appid_in\n  bind 127.0.0.1:{}\n  mode http\n",
                workspace.appid_port.number()
            ),
        );
        workspace
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn templates(&self) -> PathBuf {
        self.path("templates")
    }

    pub fn set_template(&self, name: &str, text: &str) {
        fs::write(self.templates().join(name), text).unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.path("haproxy.cfg")
    }

    pub fn read_config(&self) -> Option<Vec<u8>> {
        fs::read(self.config()).ok()
    }

    pub fn reload_log(&self) -> PathBuf {
        self.path("reloads.log")
    }

    pub fn reload_count(&self) -> usize {
        fs::read_to_string(self.reload_log())
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// The binary against `marathon`, validating with the real HAProxy, with `reload` as the
    /// reload command (after a line in the reload log); add flags and `.run()` or `.spawn()`.
    pub fn sync(&self, marathon: &str, reload: &str) -> Sync {
        let reload = format!(
            "echo reload >> '{}' && {reload}",
            self.reload_log().display()
        );
        Sync::new()
            .marathon(marathon)
            .group("external")
            .arg("--dont-bind-http-https")
            .config(self.config())
            .templates(self.templates())
            .args(["--haproxy-bin", HAPROXY_BIN])
            .reload_command(&reload)
            .args(["--timeout", "2", "--command-timeout", "10"])
    }

    /// Runs the binary once against `marathon` with `reload` and the `extra` flags.
    pub fn run(&self, marathon: &str, reload: &str, extra: &[&str]) -> Run {
        self.sync(marathon, reload).args(extra).run()
    }
}
