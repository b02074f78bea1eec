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

/// A socket bound to `127.0.0.1:0` without `SO_REUSEADDR`, neither listening nor connected:
/// it holds its port against HAProxy's bind, and only a kernel that lists bound-only sockets
/// shows it in its socket table.
fn bound_only_socket() -> (std::os::fd::OwnedFd, u16) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor owned from its creation; the address is
    // initialised in full before it is passed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let socket = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut address: libc::sockaddr_in = std::mem::zeroed();
        address.sin_family = libc::AF_INET as libc::sa_family_t;
        address.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut length = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, (&raw const address).cast(), length), 0);
        assert_eq!(
            libc::getsockname(fd, (&raw mut address).cast(), &mut length),
            0
        );
        (socket, u16::from_be(address.sin_port))
    }
}

#[test]
fn among_hundreds_of_new_listeners_each_port_another_socket_holds_is_found() {
    // From 256 new listeners on, only the ports some socket of the host holds are tried with a
    // bind (the kernel lists them): a listener's, a bound-only socket's and a connection's end
    // must still each leave their app out, and the 300 others land.
    let workspace = Workspace::new();
    let marathon = FakeMarathon::start();
    let free: Vec<Port> = (0..300).map(|_| Port::reserve()).collect();
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let (_bound_only, bound_only_port) = bound_only_socket();
    let connection = std::net::TcpStream::connect(listening.local_addr().unwrap()).unwrap();
    let held = [
        ("/held-listening", listening.local_addr().unwrap().port()),
        ("/held-bound", bound_only_port),
        ("/held-connection", connection.local_addr().unwrap().port()),
    ];
    let backend = Backend::start("web-1");
    let mut apps: Vec<(String, u16)> = free
        .iter()
        .enumerate()
        .map(|(n, port)| (format!("/free{n}"), port.number()))
        .collect();
    apps.extend(held.iter().map(|(id, port)| (id.to_string(), *port)));
    let definitions: Vec<String> = apps
        .iter()
        .map(|(id, port)| http_app(id, *port, &[], "v1"))
        .collect();
    let tasks: Vec<String> = apps
        .iter()
        .map(|(id, _)| running_task(id, backend.port))
        .collect();
    marathon.set_apps(&definitions, &tasks);
    let output = workspace.run(&marathon.url(), "true", &[]);
    output.assert_exit(10);
    for (id, port) in held {
        assert!(
            output.stderr.contains(&format!(
                "app {id}: service port {port}: cannot listen on 127.0.0.1:{port}"
            )),
            "{id}: {}",
            output.stderr
        );
    }
    let config = String::from_utf8(workspace.read_config().unwrap()).unwrap();
    for (id, port) in &apps {
        let backend = format!("{}_{port}", id.trim_start_matches('/'));
        let landed = config.contains(&format!("backend {backend}\n"));
        assert_eq!(landed, id.starts_with("/free"), "{backend}");
    }
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
