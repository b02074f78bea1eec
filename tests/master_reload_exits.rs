//! The Faults table's master-CLI reload rows through the built binary and a real master-worker
//! HAProxy (`haproxy -W -S`, `--haproxy-master-socket`): a reload HAProxy refuses and a reload
//! never confirmed within `--command-timeout` both exit 8 with the live config byte for byte as
//! it was, and say why. tests/reload.rs proves the details on the library.

mod support;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::backend::{http_get, Backend};
use support::haproxy::Haproxy;
use support::marathon::FakeMarathon;
use support::ports::Port;
use support::sync::Run;
use support::workspace::{web_app, Workspace};

/// A workspace whose first run wrote the live config that a real HAProxy now serves, with its
/// master socket to reload through.
struct Served {
    workspace: Workspace,
    marathon: FakeMarathon,
    backend: Backend,
    service_port: Port,
    live: Vec<u8>,
}

impl Served {
    fn new() -> Served {
        let workspace = Workspace::new();
        let marathon = FakeMarathon::start();
        let backend = Backend::start("A");
        let service_port = Port::reserve();
        let (apps, tasks) = web_app(service_port.number(), &[backend.port]);
        marathon.set_state(apps, tasks);
        workspace.run(&marathon.url(), "true", &[]).assert_success();
        let live = workspace.read_config().unwrap();
        Served {
            workspace,
            marathon,
            backend,
            service_port,
            live,
        }
    }

    fn run_dir(&self) -> PathBuf {
        let dir = self.workspace.path("run");
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A run reloading through `haproxy`'s master socket with `extra` flags; the reload
    /// command (`false`) must not be used.
    fn run_through(&self, haproxy: &Haproxy, extra: &[&str]) -> Run {
        let socket = haproxy.master_socket.to_str().unwrap();
        let run = self
            .workspace
            .sync(&self.marathon.url(), "false")
            .args(["--haproxy-master-socket", socket, "--no-runtime-api"])
            .args(extra)
            .run();
        assert_eq!(
            self.workspace.reload_count(),
            1,
            "only the first run used the reload command: it is not used with a master socket"
        );
        run
    }

    fn assert_live_untouched(&self) {
        assert_eq!(
            self.workspace.read_config().as_deref(),
            Some(self.live.as_slice()),
            "the live config changed"
        );
    }

    fn assert_still_serving(&self) {
        assert!(
            matches!(http_get(self.service_port.number(), "/"), Ok((200, body)) if body == "A"),
            "HAProxy no longer serves the app from the previous config"
        );
    }
}

/// Two apps: `/web` as before and `/second` whose service port is `second_port`.
fn two_apps(web_port: u16, second_port: u16, task_port: u16) -> (String, String) {
    let app = |id: &str, port: u16| {
        format!(
            r#"{{"id":"{id}","instances":1,"labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.1"}},"networks":[{{"mode":"host"}}],"portDefinitions":[{{"port":{port},"protocol":"tcp"}}],"healthChecks":[]}}"#
        )
    };
    let task = |id: &str, app: &str| {
        format!(
            r#"{{"id":"{id}","appId":"{app}","host":"127.0.0.1","ports":[{task_port}],"state":"TASK_RUNNING"}}"#
        )
    };
    (
        format!(
            r#"{{"apps":[{},{}]}}"#,
            app("/web", web_port),
            app("/second", second_port)
        ),
        format!(
            r#"{{"tasks":[{},{}]}}"#,
            task("web.0", "/web"),
            task("second.0", "/second")
        ),
    )
}

#[test]
fn haproxy_refusing_the_reload_through_the_master_cli_exits_8_and_keeps_the_live_config() {
    let served = Served::new();
    let run_dir = served.run_dir();
    let haproxy = Haproxy::start(
        &served.workspace.config(),
        &run_dir,
        served.service_port.number(),
    );

    // The new app's frontend passes `haproxy -c`, which binds nothing, but the reload cannot
    // bind an address this host does not have (192.0.2.1, TEST-NET-1). apply's own check of new
    // listeners leaves such addresses to HAProxy (a VIP may be added later), so it is HAProxy
    // that refuses the reload.
    let port = TcpListener::bind("127.0.0.1:0").unwrap();
    let (apps, tasks) = two_apps(
        served.service_port.number(),
        port.local_addr().unwrap().port(),
        served.backend.port,
    );
    let (web, second) = apps.split_at(apps.find(r#""id":"/second""#).unwrap());
    let apps = format!(
        "{web}{}",
        second.replacen(
            r#""HAPROXY_0_BIND_ADDR":"127.0.0.1""#,
            r#""HAPROXY_0_BIND_ADDR":"192.0.2.1""#,
            1
        )
    );
    served.marathon.set_state(apps, tasks);

    served
        .run_through(&haproxy, &[])
        .assert_exit(8)
        .assert_stderr_contains("reload failed")
        .assert_stderr_contains("HAProxy reports the reload failed")
        .assert_stderr_contains("the previous configuration was put back");
    served.assert_live_untouched();
    // HAProxy took the rollback: two reloads, the last one good, still serving.
    assert!(
        haproxy.wait_for_reloads(2),
        "reload, then the rollback's:\n{}",
        haproxy.show_proc()
    );
    assert!(
        haproxy.show_proc().contains("[failed: 0]"),
        "{}",
        haproxy.show_proc()
    );
    served.assert_still_serving();
}

/// A config file HAProxy reads at every reload, replaced by a FIFO so that the next reload
/// blocks opening it until [`ReloadBlocker::release`] (or drop) opens the other end: the
/// master has then been asked to reload and never reports a new worker.
struct ReloadBlocker {
    path: PathBuf,
}

impl ReloadBlocker {
    /// A regular (empty) file for HAProxy's start.
    fn new(path: &Path) -> ReloadBlocker {
        fs::write(path, "").unwrap();
        ReloadBlocker {
            path: path.to_path_buf(),
        }
    }

    /// From now on, a reload blocks reading this file.
    fn arm(&self) {
        let fifo = self.path.with_extension("fifo");
        let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success(), "mkfifo {}", fifo.display());
        fs::rename(&fifo, &self.path).unwrap();
    }

    /// Lets a reload blocked on the FIFO read it (empty) and go on.
    fn release(&self) {
        // Non-blocking: opening succeeds only while a reader waits, and never hangs the test.
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path);
    }
}

impl Drop for ReloadBlocker {
    fn drop(&mut self) {
        self.release();
    }
}

#[test]
fn a_reload_never_confirmed_through_the_master_cli_exits_8_and_keeps_the_live_config() {
    let served = Served::new();
    let run_dir = served.run_dir();
    let blocker = ReloadBlocker::new(&run_dir.join("blocker.cfg"));
    let haproxy = Haproxy::start_files(
        &[&served.workspace.config(), &blocker.path],
        &run_dir,
        served.service_port.number(),
    );
    blocker.arm();
    let (apps, tasks) = web_app(
        served.service_port.number(),
        &[served.backend.port, Port::reserve().leak()],
    );
    served.marathon.set_state(apps, tasks);

    served
        .run_through(&haproxy, &["--command-timeout", "1"])
        .assert_exit(8)
        .assert_stderr_contains("reloading haproxy failed")
        .assert_stderr_contains("no new worker was reported within 1s")
        // The master is still mid-reload, so the rollback's reload is not confirmed either;
        // the file is put back all the same.
        .assert_stderr_contains("then rolling back failed too");
    served.assert_live_untouched();
    // The old worker kept serving the previous config all along.
    served.assert_still_serving();
    blocker.release();
}
