//! What is left out, and what is not an app's fault, through the binary with a real
//! master-worker HAProxy: a listener another process holds leaves out only the app that wants
//! it (named with its port, exit 10, the other apps' changes land, later runs not blocked);
//! an operator template HAProxy rejects fails the run (exit 6, nothing changed, no app
//! bisected out, never a hint at `--force`).

mod support;

use std::fs;
use std::net::TcpListener;

use support::backend::{traffic_reaches, Backend};
use support::haproxy::Haproxy;
use support::marathon::FakeMarathon;
use support::ports::Port;
use support::workspace::{http_app, running_task, Workspace};

#[test]
fn a_port_another_process_holds_leaves_out_its_app_and_the_other_changes_land() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let web_service = Port::reserve();
    let web_port = web_service.number();
    let (web_task, moved_task) = (Backend::start("web-1"), Backend::start("web-2"));
    marathon.set_apps(
        &[http_app("/web", web_port, &[], "v1")],
        &[running_task("/web", web_task.port)],
    );
    workspace.run(&marathon.url(), "true", &[]).assert_exit(0);
    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), web_port);
    let by_master = || {
        workspace
            .sync_without_reload(&marathon.url())
            .master_socket(&haproxy.master_socket)
            // Reloads, not runtime updates: what is proven here is what the reload meets.
            .arg("--no-runtime-api")
            .run()
    };
    assert!(traffic_reaches(web_port, "web-1"), "{}", haproxy.log_text());

    // Another process on the host listens where the new app /new wants to; /web moves. The
    // listener shares the reserved port (std's listener sets SO_REUSEADDR, as servers do), so
    // once it closes the port is still this test's, for HAProxy to take.
    let new_service = Port::reserve();
    let taken = new_service.number();
    let squatter = TcpListener::bind(new_service.addr()).unwrap();
    let new_task = Backend::start("new-1");
    marathon.set_apps(
        &[
            http_app("/web", web_port, &[], "v1"),
            http_app("/new", taken, &[], "v1"),
        ],
        &[
            running_task("/web", moved_task.port),
            running_task("/new", new_task.port),
        ],
    );
    let output = by_master();
    output.assert_exit(10);
    assert!(
        output.stderr.contains(&format!(
            "app /new: service port {taken}: cannot listen on 127.0.0.1:{taken}"
        )) && output.stderr.contains("in use"),
        "{}",
        output.stderr
    );
    let live = workspace.read_config().unwrap();
    let config = String::from_utf8_lossy(&live);
    assert!(!config.contains(&format!("new_{taken}")), "{config}");
    assert!(config.contains(&moved_task.address()), "{config}");
    assert!(haproxy.wait_for_reloads(1), "{}", haproxy.show_proc());
    assert!(traffic_reaches(web_port, "web-2"), "{}", haproxy.log_text());

    // The next run is not blocked: the same answer, nothing to change, and (the same app left
    // out for the same reason) nothing to say: exit 10 tells.
    by_master().assert_exit(10).assert_silent();
    assert_eq!(workspace.read_config().unwrap(), live);

    // The port is freed: the app lands.
    drop(squatter);
    by_master().assert_exit(0);
    assert!(haproxy.wait_for_reloads(2), "{}", haproxy.show_proc());
    assert!(traffic_reaches(taken, "new-1"), "{}", haproxy.log_text());
}

#[test]
fn a_live_app_moved_to_a_port_another_process_holds_stays_on_its_last_good_port() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (service, backend) = (Port::reserve(), Backend::start("web-1"));
    let port = service.number();
    marathon.set_apps(
        &[http_app("/web", port, &[], "v1")],
        &[running_task("/web", backend.port)],
    );
    workspace.run(&marathon.url(), "true", &[]).assert_exit(0);
    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), port);
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    marathon.set_apps(
        &[http_app("/web", taken, &[], "v2")],
        &[running_task("/web", backend.port)],
    );
    let live = workspace.read_config().unwrap();
    let output = workspace
        .sync_without_reload(&marathon.url())
        .master_socket(&haproxy.master_socket)
        .arg("--no-runtime-api")
        .run();
    output.assert_exit(10);
    assert!(
        output
            .stderr
            .contains(&format!("app /web: service port {taken}"))
            && output
                .stderr
                .contains("held at its last good definition (version v1)"),
        "{}",
        output.stderr
    );
    assert_eq!(workspace.read_config().unwrap(), live, "v1 is what is live");
    assert!(traffic_reaches(port, "web-1"), "{}", haproxy.log_text());
}

#[test]
fn an_operator_template_haproxy_rejects_exits_6_changes_nothing_and_blames_no_app() {
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let (sticky_service, plain_service) = (Port::reserve(), Port::reserve());
    let (sticky_port, plain_port) = (sticky_service.number(), plain_service.number());
    let (sticky_task, plain_task) = (Backend::start("sticky-1"), Backend::start("plain-1"));
    marathon.set_apps(
        &[
            http_app(
                "/sticky",
                sticky_port,
                &[("HAPROXY_0_STICKY", "true")],
                "v1",
            ),
            http_app("/plain", plain_port, &[], "v1"),
        ],
        &[
            running_task("/sticky", sticky_task.port),
            running_task("/plain", plain_task.port),
        ],
    );
    workspace.run(&marathon.url(), "true", &[]).assert_exit(0);
    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), sticky_port);
    assert!(traffic_reaches(sticky_port, "sticky-1"));
    let live = workspace.read_config().unwrap();
    let reload = haproxy.reload_shell_command();

    // A typo in the operator's sticky options: HAProxy refuses every sticky backend.
    let sticky_file = workspace.templates().join("HAPROXY_BACKEND_STICKY_OPTIONS");
    fs::write(
        &sticky_file,
        "  cookie mesosphere_server_id insert indirect nocahce\n",
    )
    .unwrap();
    let output = workspace.run(&marathon.url(), &reload, &[]);
    output.assert_exit(6);
    let stderr = &output.stderr;
    assert!(
        stderr.contains(&format!(
            "HAProxy rejects the operator's template HAPROXY_BACKEND_STICKY_OPTIONS (from {})",
            sticky_file.display()
        )) && stderr.contains("[ALERT]")
            && stderr.contains("'cookie' supports"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("app left out") && !stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(workspace.read_config().unwrap(), live);
    let rejected = fs::read_to_string(workspace.path("haproxy.cfg.rejected")).unwrap();
    assert!(rejected.contains("nocahce"));
    fs::remove_file(&sticky_file).unwrap();

    // A broken backend head from the environment hits every backend: the operator's too.
    let output = workspace
        .sync(&marathon.url(), &reload)
        .env(
            "HAPROXY_BACKEND_HEAD",
            "\\nbackend {backend}\\n  balance {balance}\\n  mode {mode}\\n  no-such-option on\\n",
        )
        .run();
    output.assert_exit(6);
    let stderr = &output.stderr;
    assert!(
        stderr.contains(
            "HAProxy rejects the operator's template HAPROXY_BACKEND_HEAD (from the environment variable)"
        ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("app left out") && !stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(workspace.read_config().unwrap(), live);
    assert!(traffic_reaches(sticky_port, "sticky-1"));
    assert!(traffic_reaches(plain_port, "plain-1"));
}
