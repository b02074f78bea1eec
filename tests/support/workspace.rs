//! A work directory for running the binary against a stand-in Marathon: template overrides
//! that keep HAProxy on 127.0.0.1 and away from system paths (no /dev/log, no /run/haproxy, a
//! small maxconn under the test machine's open-file cap), the config path, a throwaway
//! certificate for `--ssl-certs`, and a reload command that logs each reload before running the
//! test's own. Plus builders for the Marathon apps and tasks the tests serve.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
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

/// One Marathon app `id` in group `external`, in http mode on 127.0.0.1:`service_port`, with
/// `labels` after those three, at `version` (as both `version` and
/// `versionInfo.lastConfigChangeAt`, the one that names a last good definition). For
/// [`FakeMarathon::set_apps`](super::marathon::FakeMarathon::set_apps).
pub fn http_app(id: &str, service_port: u16, labels: &[(&str, &str)], version: &str) -> String {
    let labels: String = labels
        .iter()
        .map(|(name, value)| format!(",{}:{}", json_string(name), json_string(value)))
        .collect();
    format!(
        r#"{{"id":"{id}","version":"{version}","versionInfo":{{"lastConfigChangeAt":"{version}"}},"labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"{labels}}},"portDefinitions":[{{"port":{service_port}}}],"healthChecks":[]}}"#
    )
}

/// One running task of app `app_id` on 127.0.0.1:`port`, with an id of its own per port.
pub fn running_task(app_id: &str, port: u16) -> String {
    let name = app_id.trim_start_matches('/');
    format!(
        r#"{{"id":"{name}.{port}","appId":"{app_id}","host":"127.0.0.1","ports":[{port}],"state":"TASK_RUNNING"}}"#
    )
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap()
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

    /// A workspace whose `HAPROXY_HEAD` is `head` instead of [`TEST_HEAD`].
    pub fn with_head(head: &str) -> Workspace {
        let workspace = Workspace::new();
        workspace.set_template("HAPROXY_HEAD", head);
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

    /// `cert.pem` in the workspace, a self-signed certificate and key made on first use, for
    /// `--ssl-certs` (so the `:443` frontend passes `haproxy -c`).
    pub fn cert(&self) -> PathBuf {
        let path = self.path("cert.pem");
        if !path.exists() {
            assert_eq!(super::cert::self_signed_pem(self.dir.path()), path);
        }
        path
    }

    /// Writes an executable `sh` script `name` in the workspace and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// `metrics.prom` in the workspace, for `--metrics-file`.
    pub fn metrics(&self) -> PathBuf {
        self.path("metrics.prom")
    }

    /// `<config>.last-good`, where the binary keeps each app's last good definition.
    pub fn last_good(&self) -> PathBuf {
        self.path("haproxy.cfg.last-good")
    }

    /// `status` on this workspace's config, run to the end; the caller judges its exit.
    pub fn status(&self) -> Run {
        Sync::new().arg("status").config(self.config()).run()
    }

    pub fn reload_log(&self) -> PathBuf {
        self.path("reloads.log")
    }

    pub fn reload_count(&self) -> usize {
        fs::read_to_string(self.reload_log())
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// The binary against `marathon` with this workspace's config and templates, validating
    /// with the real HAProxy, and no other flag: the test chooses the group, the binds and the
    /// reload command.
    pub fn bare(&self, marathon: impl AsRef<OsStr>) -> Sync {
        Sync::new()
            .marathon(marathon)
            .config(self.config())
            .templates(self.templates())
            .args(["--haproxy-bin", HAPROXY_BIN])
    }

    /// The binary against `marathon`, validating with the real HAProxy, with `reload` as the
    /// reload command (after a line in the reload log); add flags and `.run()` or `.spawn()`.
    pub fn sync(&self, marathon: &str, reload: &str) -> Sync {
        let reload = format!(
            "echo reload >> '{}' && {reload}",
            self.reload_log().display()
        );
        self.sync_without_reload(marathon).reload_command(&reload)
    }

    /// The binary as [`Workspace::sync`] sets it up but with no reload flag, for a test that
    /// reloads through the master CLI ([`Sync::master_socket`]); nothing goes in the reload log.
    pub fn sync_without_reload(&self, marathon: &str) -> Sync {
        self.bare(marathon)
            .group("external")
            .arg("--dont-bind-http-https")
            .args(["--timeout", "2", "--command-timeout", "10"])
    }

    /// Runs the binary once against `marathon` with `reload` and the `extra` flags.
    pub fn run(&self, marathon: &str, reload: &str, extra: &[&str]) -> Run {
        self.sync(marathon, reload).args(extra).run()
    }
}
