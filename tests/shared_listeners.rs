//! With `--protect-shared-listeners`, an app's listener never takes over a shared one, through
//! the binary with a real HAProxy running the result: an app whose service port is the :80
//! frontend's (moved to a reserved port by its template, as an operator may) or a head
//! template's listener is left out, named with the port and the section, exit 10, and every
//! request to the shared listener still reaches it; without it, such an app is rendered as
//! marathon-lb renders it and named in a warning; an app on another specific address than the
//! shared listener's is no conflict.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::backend::{http_get, traffic_reaches, Backend};
use support::haproxy::Haproxy;
use support::marathon::FakeMarathon;
use support::ports::Port;
use support::workspace::{http_app, running_task, Workspace, TEST_HEAD};

/// Requests sent to a shared listener: with the hijacker bound beside it, the kernel would
/// hand it about half of them, so all of them reaching the shared section is no accident.
const REQUESTS: usize = 200;

#[test]
fn an_app_on_the_http_frontends_port_is_left_out_and_the_vhost_app_keeps_all_of_it() {
    let workspace = Workspace::new();
    let (http, https) = (Port::reserve(), Port::reserve());
    workspace.set_template(
        "HAPROXY_HTTP_FRONTEND_HEAD",
        &format!(
            "\nfrontend marathon_http_in\n  bind 127.0.0.1:{}\n  mode http\n",
            http.number()
        ),
    );
    workspace.set_template(
        "HAPROXY_HTTPS_FRONTEND_HEAD",
        &format!(
            "\nfrontend marathon_https_in\n  bind 127.0.0.1:{} ssl {{sslCerts}}\n  mode http\n",
            https.number()
        ),
    );
    let marathon = FakeMarathon::start();
    let (web_service, web_task, hijack_task) = (
        Port::reserve(),
        Backend::start("web-1"),
        Backend::start("hijack-1"),
    );
    marathon.set_apps(
        &[
            http_app(
                "/web",
                web_service.number(),
                &[("HAPROXY_0_VHOST", "test.localhost")],
                "v1",
            ),
            http_app("/hijack", http.number(), &[], "v1"),
        ],
        &[
            running_task("/web", web_task.port),
            running_task("/hijack", hijack_task.port),
        ],
    );
    let cert = workspace.cert();
    let output = workspace
        .bare(marathon.url())
        .group("external")
        .arg("--ssl-certs")
        .arg(&cert)
        .arg("--protect-shared-listeners")
        .reload_command("true")
        .run();
    output.assert_exit(10);
    output.assert_stderr_contains(&format!(
        "app /hijack: service port {port} (bind 127.0.0.1:{port}) is a port of the shared \
         listener frontend marathon_http_in (bind 127.0.0.1:{port}), whose new connections \
         HAProxy would split with this app; app left out",
        port = http.number()
    ));
    output.assert_stderr_lacks("app /web");
    let config = String::from_utf8(workspace.read_config().unwrap()).unwrap();
    assert!(!config.contains("frontend hijack_"), "{config}");
    assert!(config.contains("backend web_"), "{config}");

    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), http.number());
    for request in 0..REQUESTS {
        let answer = http_get(http.number(), "/");
        assert!(
            matches!(&answer, Ok((200, body)) if body == "web-1"),
            "request {request} to the shared listener: {answer:?}\n{}",
            haproxy.log_text()
        );
    }
    assert_eq!(hijack_task.served(), 0);
    assert_eq!(web_task.served(), REQUESTS);
}

/// A head that adds a stats listener on `address:port`, answering every path.
fn head_with_stats(address: &str, port: u16) -> String {
    format!(
        "{TEST_HEAD}\nlisten stats\n  bind {address}:{port}\n  mode http\n  stats enable\n  \
         stats uri /\n"
    )
}

fn is_stats_page(answer: &std::io::Result<(u16, String)>) -> bool {
    matches!(answer, Ok((200, body)) if body.contains("Statistics Report"))
}

#[test]
fn an_app_on_a_head_templates_listener_is_left_out_and_the_listener_keeps_all_of_it() {
    let stats = Port::reserve();
    let workspace = Workspace::with_head(&head_with_stats("127.0.0.1", stats.number()));
    let marathon = FakeMarathon::start();
    let (web_service, web_task, thief_task) = (
        Port::reserve(),
        Backend::start("web-1"),
        Backend::start("thief-1"),
    );
    marathon.set_apps(
        &[
            http_app("/web", web_service.number(), &[], "v1"),
            http_app("/thief", stats.number(), &[], "v1"),
        ],
        &[
            running_task("/web", web_task.port),
            running_task("/thief", thief_task.port),
        ],
    );
    // By default as marathon-lb renders it, and said: the corpus holds such a case.
    let output = workspace.run(&marathon.url(), "true", &[]);
    output.assert_exit(0);
    output.assert_stderr_contains(&format!(
        "app /thief: service port {port} (bind 127.0.0.1:{port}) is a port of the shared \
         listener listen stats (bind 127.0.0.1:{port}), whose new connections HAProxy would \
         split with this app; rendered as marathon-lb renders it (--protect-shared-listeners \
         leaves the app out)",
        port = stats.number()
    ));
    let config = String::from_utf8(workspace.read_config().unwrap()).unwrap();
    assert!(config.contains("frontend thief_"), "{config}");

    let output = workspace.run(&marathon.url(), "true", &["--protect-shared-listeners"]);
    output.assert_exit(10);
    output.assert_stderr_contains(&format!(
        "app /thief: service port {port} (bind 127.0.0.1:{port}) is a port of the shared \
         listener listen stats (bind 127.0.0.1:{port})",
        port = stats.number()
    ));
    let config = String::from_utf8(workspace.read_config().unwrap()).unwrap();
    assert!(!config.contains("thief_"), "{config}");

    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), stats.number());
    assert!(traffic_reaches(web_service.number(), "web-1"));
    for request in 0..REQUESTS {
        let answer = http_get(stats.number(), "/");
        assert!(
            is_stats_page(&answer),
            "request {request} to the stats listener: {answer:?}\n{}",
            haproxy.log_text()
        );
    }
    assert_eq!(thief_task.served(), 0);
}

/// `GET /` to `address`, every step bounded; the body of a 200 answer.
fn body_from(address: SocketAddr) -> Option<String> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test.localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = Vec::new();
    stream.take(1024 * 1024).read_to_end(&mut response).ok()?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

#[test]
fn an_app_on_another_specific_address_than_the_shared_listener_is_no_conflict() {
    let stats = Port::reserve();
    let workspace = Workspace::with_head(&head_with_stats("127.0.0.1", stats.number()));
    let marathon = FakeMarathon::start();
    let task = Backend::start("beside-1");
    let app = format!(
        r#"{{"id":"/beside","version":"v1","labels":{{"HAPROXY_GROUP":"external","HAPROXY_0_MODE":"http","HAPROXY_0_BIND_ADDR":"127.0.0.2"}},"portDefinitions":[{{"port":{}}}],"healthChecks":[]}}"#,
        stats.number()
    );
    marathon.set_apps(&[app], &[running_task("/beside", task.port)]);
    let output = workspace.run(&marathon.url(), "true", &[]);
    output.assert_exit(0);
    output.assert_stderr_lacks("shared listener");
    let config = String::from_utf8(workspace.read_config().unwrap()).unwrap();
    assert!(
        config.contains(&format!("bind 127.0.0.2:{}", stats.number())),
        "{config}"
    );

    let haproxy = Haproxy::start(&workspace.config(), &workspace.path("run"), stats.number());
    let beside = SocketAddr::from(([127, 0, 0, 2], stats.number()));
    assert_eq!(
        body_from(beside).as_deref(),
        Some("beside-1"),
        "{}",
        haproxy.log_text()
    );
    assert!(is_stats_page(&http_get(stats.number(), "/")));
}
