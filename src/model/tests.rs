//! Behaviour of [`build`], one test per marathon-lb rule, on small inline Marathon documents.

use super::*;
use crate::marathon::{AppList, TaskList};

fn config() -> ModelConfig {
    ModelConfig {
        strict_mode: false,
        health_check: false,
        min_serv_port_ip_per_task: 10050,
        max_serv_port_ip_per_task: 10100,
        framework_name: None,
        protect_shared_listeners: false,
    }
}

fn no_resolution(host: &str) -> Option<IpAddr> {
    panic!("{host} should not need resolving")
}

fn build_with(apps: &str, tasks: &str, config: &ModelConfig) -> (Model, Vec<Warning>) {
    let apps: AppList = serde_json::from_str(&format!(r#"{{"apps": {apps}}}"#)).unwrap();
    let tasks: TaskList = serde_json::from_str(&format!(r#"{{"tasks": {tasks}}}"#)).unwrap();
    build(&apps.apps, &tasks.tasks, config, &no_resolution)
}

fn build_json(apps: &str, tasks: &str) -> (Model, Vec<Warning>) {
    build_with(apps, tasks, &config())
}

/// A host-networking app with one service port per entry of `ports` and the given labels.
fn host_app(id: &str, ports: &[u32], labels: &str) -> String {
    let definitions: Vec<String> = ports
        .iter()
        .map(|p| format!(r#"{{"port": {p}}}"#))
        .collect();
    format!(
        r#"{{"id": "{id}", "labels": {labels}, "portDefinitions": [{}]}}"#,
        definitions.join(",")
    )
}

fn task(app_id: &str, id: &str, host: &str, ports: &[u32]) -> String {
    format!(
        r#"{{"id": "{id}", "appId": "{app_id}", "host": "{host}", "ports": {ports:?}, "state": "TASK_RUNNING"}}"#
    )
}

fn servers(service: &Service) -> Vec<String> {
    service
        .backends
        .iter()
        .map(|b| {
            format!(
                "{}:{}{}",
                b.ip,
                b.port,
                if b.draining { " draining" } else { "" }
            )
        })
        .collect()
}

fn only_service(model: &Model) -> &Service {
    assert_eq!(model.services.len(), 1, "{:#?}", model.services);
    &model.services[0]
}

#[test]
fn semantic_labels_set_their_fields() {
    let labels = r#"{
        "HAPROXY_GROUP": "external,internal",
        "HAPROXY_0_VHOST": "Web.Example.COM,b.example.com",
        "HAPROXY_0_PATH": "/api",
        "HAPROXY_0_AUTH": "realm:user:$6$hash",
        "HAPROXY_0_STICKY": "Yes",
        "HAPROXY_0_ENABLED": "false",
        "HAPROXY_0_REDIRECT_TO_HTTPS": "t",
        "HAPROXY_0_USE_HSTS": "y",
        "HAPROXY_0_SSL_CERT": "/etc/ssl/a.pem",
        "HAPROXY_0_BIND_OPTIONS": "ciphers X",
        "HAPROXY_0_BIND_ADDR": "10.0.0.42",
        "HAPROXY_0_PORT": " 8080 ",
        "HAPROXY_0_MODE": "HTTP",
        "HAPROXY_0_BALANCE": "leastconn",
        "HAPROXY_0_HTTP_BACKEND_PROXYPASS_PATH": "/pp",
        "HAPROXY_0_HTTP_BACKEND_REVPROXY_PATH": "/rp",
        "HAPROXY_0_HTTP_BACKEND_REDIR": "/home",
        "HAPROXY_0_BACKEND_NETWORK_ALLOWED_ACL": "10.0.0.0/8 192.168.0.1",
        "HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX": "+1",
        "HAPROXY_0_GROUP": "edge"
    }"#;
    let (model, warnings) = build_json(
        &format!("[{}]", host_app("/web", &[10000, 10001], labels)),
        "[]",
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let service = &model.services[0];
    assert_eq!(service.app_id, "/web");
    assert_eq!(service.service_port, 8080);
    assert_eq!(
        service.hostname.as_deref(),
        Some("web.example.com,b.example.com")
    );
    assert_eq!(service.path.as_deref(), Some("/api"));
    assert_eq!(service.backend_weight, 1);
    let auth = service.extras().auth.as_ref().unwrap();
    assert_eq!(
        (
            auth.realm.as_str(),
            auth.user.as_str(),
            auth.password.as_str()
        ),
        ("realm", "user", "$6$hash")
    );
    assert!(
        service.sticky && !service.enabled && service.redirect_http_to_https && service.use_hsts
    );
    assert_eq!(service.extras().ssl_cert.as_deref(), Some("/etc/ssl/a.pem"));
    assert_eq!(service.extras().bind_options.as_deref(), Some("ciphers X"));
    assert_eq!(service.bind_addr, "10.0.0.42");
    assert_eq!(service.mode.as_deref(), Some("http"));
    assert_eq!(service.balance, "leastconn");
    assert_eq!(service.extras().proxypath.as_deref(), Some("/pp"));
    assert_eq!(service.extras().revproxypath.as_deref(), Some("/rp"));
    assert_eq!(service.extras().redirpath.as_deref(), Some("/home"));
    assert_eq!(
        service.extras().network_allowed.as_deref(),
        Some("10.0.0.0/8 192.168.0.1")
    );
    assert_eq!(service.extras().healthcheck_port_index, Some(1));
    assert_eq!(service.groups, ["external", "internal"]);
    assert_eq!(service.haproxy_groups, ["edge"]);
    // Port 1 has no labels of its own: every default.
    let other = &model.services[1];
    assert_eq!(other.service_port, 10001);
    assert_eq!(
        (
            other.hostname.as_ref(),
            other.mode.as_ref(),
            &*other.bind_addr
        ),
        (None, None, "*")
    );
    assert_eq!(
        (&*other.balance, other.backend_weight, other.enabled),
        ("roundrobin", 0, true)
    );
    assert_eq!(other.groups, ["external", "internal"]);
    assert!(other.haproxy_groups.is_empty());
    // Nor any of the labels few services set: none of their room is taken.
    assert!(other.extras.is_none());
    assert!(service.extras.is_some());
}

#[test]
fn labels_that_do_not_parse_leave_the_app_out_with_a_warning() {
    for (label, value) in [
        ("HAPROXY_0_PORT", "http"),
        ("HAPROXY_0_PORT", "-1"),
        ("HAPROXY_0_PORT", "80.0"),
        ("HAPROXY_0_AUTH", "realm:user"),
        ("HAPROXY_0_AUTH", "realm:user:pass:word"),
        ("HAPROXY_0_BACKEND_WEIGHT", "heavy"),
        ("HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX", "1_"),
    ] {
        let bad = host_app("/bad", &[10000], &format!(r#"{{"{label}": "{value}"}}"#));
        let good = host_app("/good", &[10001], "{}");
        let tasks = format!(
            "[{}, {}]",
            task("/bad", "b1", "10.0.0.1", &[31000]),
            task("/good", "g1", "10.0.0.2", &[31001])
        );
        let (model, warnings) = build_json(&format!("[{bad}, {good}]"), &tasks);
        let ids: Vec<&str> = model.services.iter().map(|s| s.app_id.as_str()).collect();
        assert_eq!(ids, ["/good"], "{label}={value}");
        assert_eq!(servers(&model.services[0]), ["10.0.0.2:31001"]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].app_id, "/bad");
        assert_eq!(warnings[0].label.as_deref(), Some(label));
        assert!(warnings[0].message.contains("left out"), "{}", warnings[0]);
    }
}

#[test]
fn every_bad_label_of_an_app_is_named() {
    let bad = host_app(
        "/bad",
        &[10000, 10001],
        r#"{"HAPROXY_0_PORT": "x", "HAPROXY_1_AUTH": "y"}"#,
    );
    let (model, warnings) = build_json(&format!("[{bad}]"), "[]");
    assert!(model.services.is_empty());
    let labels: Vec<_> = warnings.iter().map(|w| w.label.clone().unwrap()).collect();
    assert_eq!(labels, ["HAPROXY_0_PORT", "HAPROXY_1_AUTH"]);
}

#[test]
fn labels_beyond_the_apps_ports_are_never_read() {
    let app = host_app(
        "/a",
        &[10000],
        r#"{"HAPROXY_1_PORT": "http", "HAPROXY_1_VHOST": "x", "HAPROXY_00_VHOST": "y"}"#,
    );
    let (model, warnings) = build_json(&format!("[{app}]"), "[]");
    assert!(warnings.is_empty());
    assert_eq!(only_service(&model).hostname, None);
}

#[test]
fn path_raises_only_a_zero_weight() {
    let app = |labels: &str| {
        let (model, _) = build_json(&format!("[{}]", host_app("/a", &[1], labels)), "[]");
        only_service(&model).backend_weight
    };
    assert_eq!(app(r#"{"HAPROXY_0_PATH": "/p"}"#), 1);
    assert_eq!(
        app(r#"{"HAPROXY_0_PATH": "/p", "HAPROXY_0_BACKEND_WEIGHT": "0"}"#),
        1
    );
    assert_eq!(
        app(r#"{"HAPROXY_0_PATH": "/p", "HAPROXY_0_BACKEND_WEIGHT": "-5"}"#),
        -5
    );
    assert_eq!(app(r#"{"HAPROXY_0_BACKEND_WEIGHT": "007"}"#), 7);
}

#[test]
fn empty_labels_stay_present_but_empty() {
    let app = host_app(
        "/a",
        &[1],
        r#"{"HAPROXY_0_VHOST": "", "HAPROXY_GROUP": "", "HAPROXY_0_SSL_CERT": ""}"#,
    );
    let (model, _) = build_json(&format!("[{app}]"), "[]");
    let service = only_service(&model);
    assert_eq!(service.hostname.as_deref(), Some(""));
    assert_eq!(service.extras().ssl_cert.as_deref(), Some(""));
    assert_eq!(service.groups, [""]);
}

#[test]
fn template_labels_are_keyed_by_template_name_with_lf_endings() {
    let app = host_app(
        "/a",
        &[1, 2],
        r#"{"HAPROXY_0_BACKEND_HEAD": "backend {backend}\r\n  balance {balance}\r\n",
            "HAPROXY_1_FRONTEND_HEAD": "a\rb", "HAPROXY_0_MAP_HTTP_FRONTEND_ACL": "m"}"#,
    );
    let (model, _) = build_json(&format!("[{app}]"), "[]");
    let first = &model.services[0].extras().template_labels;
    assert_eq!(
        first["BACKEND_HEAD"],
        "backend {backend}\n  balance {balance}\n"
    );
    assert_eq!(first["MAP_HTTP_FRONTEND_ACL"], "m");
    assert_eq!(first.len(), 2);
    assert_eq!(
        model.services[1].extras().template_labels["FRONTEND_HEAD"],
        "a\rb"
    );
}

#[test]
fn strict_mode_disables_unless_enabled() {
    let strict = ModelConfig {
        strict_mode: true,
        ..config()
    };
    let apps = format!(
        "[{}, {}]",
        host_app("/off", &[1], "{}"),
        host_app("/on", &[2], r#"{"HAPROXY_0_ENABLED": "True"}"#)
    );
    let (model, _) = build_with(&apps, "[]", &strict);
    let enabled: Vec<bool> = model.services.iter().map(|s| s.enabled).collect();
    assert_eq!(enabled, [false, true]);
}

#[test]
fn framework_name_skips_the_load_balancer_itself() {
    let with_name = ModelConfig {
        framework_name: Some("marathon-lb".into()),
        ..config()
    };
    let apps = format!(
        "[{}, {}]",
        host_app("/marathon-lb", &[1], "{}"),
        host_app("/web", &[2], "{}")
    );
    let (model, _) = build_with(&apps, "[]", &with_name);
    assert_eq!(only_service(&model).app_id, "/web");
}

#[test]
fn services_follow_app_order_and_port_index_order() {
    let apps = format!(
        "[{}, {}]",
        host_app("/z", &[3, 1], "{}"),
        host_app("/a", &[2], "{}")
    );
    let (model, _) = build_json(&apps, "[]");
    let order: Vec<(&str, u32)> = model
        .services
        .iter()
        .map(|s| (s.app_id.as_str(), s.service_port))
        .collect();
    assert_eq!(order, [("/z", 3), ("/z", 1), ("/a", 2)]);
}

#[test]
fn a_repeated_service_port_replaces_the_earlier_one_in_place() {
    let app = host_app(
        "/a",
        &[5, 6, 5],
        r#"{"HAPROXY_0_VHOST": "first", "HAPROXY_2_VHOST": "third"}"#,
    );
    let tasks = format!("[{}]", task("/a", "t1", "10.0.0.1", &[31000, 31001, 31002]));
    let (model, _) = build_json(&format!("[{app}]"), &tasks);
    let summary: Vec<(u32, Option<&str>, Vec<String>)> = model
        .services
        .iter()
        .map(|s| (s.service_port, s.hostname.as_deref(), servers(s)))
        .collect();
    assert_eq!(
        summary,
        [
            (
                5,
                Some("third"),
                vec!["10.0.0.1:31000".to_string(), "10.0.0.1:31002".to_string()]
            ),
            (6, None, vec!["10.0.0.1:31001".to_string()]),
        ]
    );
}

#[test]
fn task_states_marathon_lb_routes() {
    let states = [
        ("TASK_RUNNING", true),
        ("TASK_LOST", true),
        ("TASK_UNREACHABLE", true),
        ("TASK_STAGING", false),
        ("TASK_STARTING", false),
        ("TASK_KILLING", false),
        ("TASK_FINISHED", false),
        ("TASK_FAILED", false),
        ("TASK_KILLED", false),
        ("TASK_ERROR", false),
        ("TASK_DROPPED", false),
        ("TASK_GONE", false),
        ("TASK_GONE_BY_OPERATOR", false),
        ("TASK_UNKNOWN", false),
    ];
    let mut tasks: Vec<String> = states
        .iter()
        .enumerate()
        .map(|(i, (state, _))| {
            format!(r#"{{"id": "t{i}", "appId": "/a", "host": "10.0.0.{i}", "ports": [31000], "state": "{state}"}}"#)
        })
        .collect();
    tasks
        .push(r#"{"id": "stateless", "appId": "/a", "host": "10.0.1.1", "ports": [31000]}"#.into());
    tasks.push(r#"{"id": "hostless", "appId": "/a", "host": "", "ports": [31000]}"#.into());
    let (model, _) = build_json(
        &format!("[{}]", host_app("/a", &[1], "{}")),
        &format!("[{}]", tasks.join(",")),
    );
    let mut expected: Vec<String> = states
        .iter()
        .enumerate()
        .filter(|(_, (_, kept))| *kept)
        .map(|(i, _)| format!("10.0.0.{i}:31000"))
        .collect();
    expected.push("10.0.1.1:31000".into());
    assert_eq!(servers(only_service(&model)), expected);
}

#[test]
fn health_check_flag_keeps_only_tasks_with_an_alive_result() {
    let checked = r#"{"id": "/hc", "portDefinitions": [{"port": 1}],
        "healthChecks": [{"protocol": "HTTP", "portIndex": 0, "path": "/"}]}"#;
    let unchecked = host_app("/plain", &[2], "{}");
    let with_results = |id: &str, host: &str, results: &str| {
        format!(r#"{{"id": "{id}", "appId": "/hc", "host": "{host}", "ports": [31000]{results}}}"#)
    };
    let tasks = format!(
        "[{}, {}, {}, {}, {}, {}]",
        with_results(
            "alive",
            "10.0.0.1",
            r#", "healthCheckResults": [{"alive": false}, {"alive": true}]"#
        ),
        with_results(
            "dead",
            "10.0.0.2",
            r#", "healthCheckResults": [{"alive": false}]"#
        ),
        with_results("unchecked", "10.0.0.3", ""),
        with_results("empty", "10.0.0.4", r#", "healthCheckResults": []"#),
        with_results(
            "nulls",
            "10.0.0.5",
            r#", "healthCheckResults": [{"alive": null}]"#
        ),
        task("/plain", "p", "10.0.0.6", &[31001]),
    );
    let apps = format!("[{checked}, {unchecked}]");
    let flagged = ModelConfig {
        health_check: true,
        ..config()
    };
    let (model, _) = build_with(&apps, &tasks, &flagged);
    assert_eq!(servers(&model.services[0]), ["10.0.0.1:31000"]);
    assert_eq!(servers(&model.services[1]), ["10.0.0.6:31001"]);
    // Without the flag results are ignored.
    let (model, _) = build_with(&apps, &tasks, &config());
    assert_eq!(model.services[0].backends.len(), 5);
}

#[test]
fn health_check_selection_and_http_mode() {
    let app = r#"{"id": "/a", "portDefinitions": [{"port": 1}, {"port": 2}, {"port": 3}],
        "labels": {"HAPROXY_2_MODE": "TCP"},
        "healthChecks": [{"protocol": "TCP", "portIndex": 1}, {"protocol": "HTTP", "portIndex": 2},
                         {"protocol": "HTTP", "portIndex": 0}]}"#;
    let (model, _) = build_json(&format!("[{app}]"), "[]");
    let protocols: Vec<(Option<&str>, Option<&str>)> = model
        .services
        .iter()
        .map(|s| {
            (
                s.health_check.as_ref().map(|c| c.protocol.as_str()),
                s.mode.as_deref(),
            )
        })
        .collect();
    // The HTTP check makes port 0 http; port 2's label wins over its own HTTP check.
    assert_eq!(
        protocols,
        [
            (Some("HTTP"), Some("http")),
            (Some("TCP"), None),
            (Some("HTTP"), Some("tcp"))
        ]
    );
}

#[test]
fn a_health_check_with_a_port_applies_to_every_port() {
    let app = r#"{"id": "/a", "portDefinitions": [{"port": 1}, {"port": 2}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 1}, {"protocol": "HTTP", "port": 8081}]}"#;
    let (model, _) = build_json(&format!("[{app}]"), "[]");
    let ports: Vec<Option<i64>> = model
        .services
        .iter()
        .map(|s| s.health_check.as_ref().unwrap().port)
        .collect();
    // Port 1 takes the TCP check: it comes first and matches its index.
    assert_eq!(ports, [Some(8081), None]);
}

#[test]
fn health_check_port_index_label_borrows_a_check_and_forces_http() {
    let app = r#"{"id": "/a", "portDefinitions": [{"port": 1}, {"port": 2}],
        "labels": {"HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX": "1", "HAPROXY_0_MODE": "tcp"},
        "healthChecks": [{"protocol": "MESOS_HTTPS", "portIndex": 1, "path": "/admin"}]}"#;
    let (model, _) = build_json(&format!("[{app}]"), "[]");
    let first = &model.services[0];
    assert_eq!(
        first.health_check.as_ref().unwrap().path.as_deref(),
        Some("/admin")
    );
    assert_eq!(first.mode.as_deref(), Some("http"));
    // Port 1's own MESOS_HTTPS check does not force http (only HTTP does, for a port's own).
    assert_eq!(model.services[1].mode, None);
}

#[test]
fn a_selected_health_check_without_protocol_leaves_the_app_out() {
    let app =
        r#"{"id": "/a", "portDefinitions": [{"port": 1}], "healthChecks": [{"portIndex": 0}]}"#;
    let (model, warnings) = build_json(&format!("[{app}]"), "[]");
    assert!(model.services.is_empty());
    assert_eq!(warnings[0].app_id, "/a");
    // Unselected, it is harmless.
    let app =
        r#"{"id": "/a", "portDefinitions": [{"port": 1}], "healthChecks": [{"portIndex": 3}]}"#;
    assert!(build_json(&format!("[{app}]"), "[]").1.is_empty());
}

#[test]
fn networking_variants_pick_address_and_port() {
    let apps = r#"[
        {"id": "/host", "portDefinitions": [{"port": 10000}]},
        {"id": "/bridge15", "networks": [{"mode": "container/bridge"}],
         "container": {"portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10001}]}},
        {"id": "/bridge14", "container": {"docker": {"network": "BRIDGE",
         "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10002}]}},
         "portDefinitions": [{"port": 10002}]},
        {"id": "/user14", "ipAddress": {"networkName": "dcos"},
         "container": {"docker": {"network": "USER",
         "portMappings": [{"containerPort": 8080, "servicePort": 10003}]}}},
        {"id": "/container15", "networks": [{"mode": "container", "name": "dcos"}],
         "container": {"portMappings": [{"containerPort": 9090, "servicePort": 10004}]}}
    ]"#;
    let with_ip = |app: &str, host_port: u32| {
        format!(
            r#"{{"id": "{app}.1", "appId": "{app}", "host": "10.0.0.1", "ports": [{host_port}],
                   "ipAddresses": [{{"ipAddress": "9.0.0.1", "protocol": "IPv4"}}]}}"#
        )
    };
    let tasks = format!(
        "[{}, {}, {}, {}, {}]",
        with_ip("/host", 31000),
        with_ip("/bridge15", 31001),
        with_ip("/bridge14", 31002),
        with_ip("/user14", 31003),
        with_ip("/container15", 31004)
    );
    let (model, _) = build_json(apps, &tasks);
    let summary: Vec<(u32, Vec<String>)> = model
        .services
        .iter()
        .map(|s| (s.service_port, servers(s)))
        .collect();
    let expect = |port: u32, server: &str| (port, vec![server.to_string()]);
    assert_eq!(
        summary,
        [
            expect(10000, "10.0.0.1:31000"),
            expect(10001, "10.0.0.1:31001"),
            expect(10002, "10.0.0.1:31002"),
            expect(10003, "9.0.0.1:8080"),
            expect(10004, "9.0.0.1:9090"),
        ]
    );
}

#[test]
fn ip_per_task_without_an_address_yet_is_skipped_quietly() {
    let app = r#"{"id": "/c", "networks": [{"mode": "container"}],
        "container": {"portMappings": [{"containerPort": 80, "servicePort": 10000}]}}"#;
    let tasks = r#"[{"id": "1", "appId": "/c", "host": "10.0.0.1", "ipAddresses": []},
                    {"id": "2", "appId": "/c", "host": "10.0.0.1", "ipAddresses": [{"ipAddress": ""}]},
                    {"id": "3", "appId": "/c", "host": "10.0.0.1", "ipAddresses": [{"ipAddress": "9.0.0.3"}]}]"#;
    let (model, warnings) = build_json(&format!("[{app}]"), tasks);
    assert_eq!(servers(only_service(&model)), ["9.0.0.3:80"]);
    assert!(warnings.is_empty());
}

#[test]
fn legacy_ip_per_task_gets_auto_assigned_service_ports() {
    let app = |id: &str| {
        format!(
            r#"{{"id": "{id}", "ipAddress": {{"discovery": {{"ports": [{{"number": 8080}}]}}}}}}"#
        )
    };
    let tasks = r#"[{"id": "a1", "appId": "/a", "host": "h", "ipAddresses": [{"ipAddress": "9.0.0.1"}]},
                    {"id": "b1", "appId": "/b", "host": "h", "ipAddresses": [{"ipAddress": "9.0.0.2"}]}]"#;
    let apps = format!("[{}, {}, {}]", app("/a"), app("/b"), app("/no-tasks"));
    let (model, _) = build_json(&apps, tasks);
    assert_eq!(
        model.services.len(),
        2,
        "an app without tasks has nothing to hash"
    );
    for service in &model.services {
        assert!(
            (10050..=10100).contains(&service.service_port),
            "{}",
            service.service_port
        );
    }
    assert_ne!(
        model.services[0].service_port,
        model.services[1].service_port
    );
    assert_eq!(servers(&model.services[0]), ["9.0.0.1:8080"]);
    // `0 0` disables the assignment: no service port, no service.
    let disabled = ModelConfig {
        min_serv_port_ip_per_task: 0,
        max_serv_port_ip_per_task: 0,
        ..config()
    };
    assert!(build_with(&apps, tasks, &disabled).0.services.is_empty());
}

#[test]
fn an_excluded_app_does_not_take_an_auto_assigned_port() {
    let app = |id: &str, labels: &str| {
        format!(
            r#"{{"id": "{id}", "labels": {labels}, "ipAddress": {{"discovery": {{"ports": [{{"number": 8080}}]}}}}}}"#
        )
    };
    let tasks = r#"[{"id": "a1", "appId": "/a", "host": "h", "ipAddresses": [{"ipAddress": "9.0.0.1"}]},
                    {"id": "b1", "appId": "/b", "host": "h", "ipAddresses": [{"ipAddress": "9.0.0.2"}]}]"#;
    // A one-port range: whoever asks first gets it.
    let narrow = ModelConfig {
        min_serv_port_ip_per_task: 20000,
        max_serv_port_ip_per_task: 20000,
        ..config()
    };
    let apps = format!(
        "[{}, {}]",
        app("/a", r#"{"HAPROXY_0_PORT": "bad"}"#),
        app("/b", "{}")
    );
    let (model, warnings) = build_with(&apps, tasks, &narrow);
    assert_eq!(warnings.len(), 1);
    let service = only_service(&model);
    assert_eq!(
        (service.app_id.as_str(), service.service_port),
        ("/b", 20000)
    );
}

#[test]
fn agent_names_are_resolved_once_and_unresolvable_ones_skipped() {
    let apps: AppList =
        serde_json::from_str(&format!(r#"{{"apps": [{}]}}"#, host_app("/a", &[1], "{}"))).unwrap();
    let tasks: TaskList = serde_json::from_str(&format!(
        "{{\"tasks\": [{}, {}, {}, {}]}}",
        task("/a", "1", "agent-1", &[31000]),
        task("/a", "2", "agent-1", &[31001]),
        task("/a", "3", "gone", &[31002]),
        task("/a", "4", "10.9.9.9", &[31003])
    ))
    .unwrap();
    let calls = std::sync::Mutex::new(Vec::new());
    let resolve = |host: &str| {
        calls.lock().unwrap().push(host.to_string());
        (host == "agent-1").then(|| "10.0.0.7".parse().unwrap())
    };
    let (model, warnings) = build(&apps.apps, &tasks.tasks, &config(), &resolve);
    assert_eq!(
        servers(only_service(&model)),
        ["10.0.0.7:31000", "10.0.0.7:31001", "10.9.9.9:31003"]
    );
    assert_eq!(model.services[0].backends[0].host.as_ref(), "agent-1");
    assert_eq!(*calls.lock().unwrap(), ["agent-1", "gone"]);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].message.contains("gone"), "{}", warnings[0]);
}

#[test]
fn tasks_join_by_app_id_in_task_order_and_duplicates_stay() {
    let apps = format!("[{}]", host_app("/a", &[1, 2], "{}"));
    let tasks = format!(
        "[{}, {}, {}, {}]",
        task("/a", "2", "10.0.0.2", &[31002]),
        task("/orphan", "x", "10.0.0.9", &[31009]),
        task("/a", "1", "10.0.0.1", &[31001, 31011, 31021]),
        task("/a", "1-again", "10.0.0.1", &[31001, 31011]),
    );
    let (model, _) = build_json(&apps, &tasks);
    assert_eq!(
        servers(&model.services[0]),
        ["10.0.0.2:31002", "10.0.0.1:31001", "10.0.0.1:31001"]
    );
    // The first task has fewer ports than the app: it serves only port 0.
    assert_eq!(
        servers(&model.services[1]),
        ["10.0.0.1:31011", "10.0.0.1:31011"]
    );
}

#[test]
fn apps_sharing_an_id_each_get_every_task_of_it_in_task_order() {
    let apps = format!(
        "[{}, {}, {}]",
        host_app("/b", &[1], "{}"),
        host_app("/a", &[2], "{}"),
        host_app("/b", &[3], "{}"),
    );
    // Listed out of app order, and /b's tasks in two runs.
    let tasks = format!(
        "[{}, {}, {}, {}]",
        task("/b", "b1", "10.0.0.1", &[31001]),
        task("/a", "a1", "10.0.0.2", &[31002]),
        task("/b", "b2", "10.0.0.3", &[31003]),
        task("/b", "b3", "10.0.0.4", &[31004]),
    );
    let (model, _) = build_json(&apps, &tasks);
    let all: Vec<(u32, Vec<String>)> = model
        .services
        .iter()
        .map(|service| (service.service_port, servers(service)))
        .collect();
    let b = ["10.0.0.1:31001", "10.0.0.3:31003", "10.0.0.4:31004"].map(String::from);
    let a = vec!["10.0.0.2:31002".to_string()];
    assert_eq!(all, [(1, b.to_vec()), (2, a), (3, b.to_vec())]);
}

#[test]
fn legacy_ports_list_with_an_undefined_port() {
    let apps = r#"[{"id": "/old", "ports": [null, 10007]}]"#;
    let tasks = format!("[{}]", task("/old", "1", "10.0.0.1", &[31000, 31001]));
    let (model, _) = build_json(apps, &tasks);
    let service = only_service(&model);
    assert_eq!(
        (service.service_port, servers(service)),
        (10007, vec!["10.0.0.1:31001".to_string()])
    );
}

/// Two apps of one deployment group in zdd.py's style.
fn blue_green(blue_labels: &str, green_labels: &str, health_checks: &str) -> String {
    format!(
        r#"[
        {{"id": "/shop-blue", "instances": 3, "portDefinitions": [{{"port": 10600}}],
          "versionInfo": {{"lastScalingAt": "2019-06-03T10:00:00.000Z"}},
          "healthChecks": {health_checks},
          "labels": {{"HAPROXY_DEPLOYMENT_GROUP": "shop", "HAPROXY_0_VHOST": "blue"{blue_labels}}}}},
        {{"id": "/shop-green", "instances": 2, "portDefinitions": [{{"port": 10601}}],
          "versionInfo": {{"lastScalingAt": "2019-06-03T10:30:00.000Z"}},
          "healthChecks": {health_checks},
          "labels": {{"HAPROXY_DEPLOYMENT_GROUP": "shop", "HAPROXY_0_VHOST": "green"{green_labels}}}}}
    ]"#
    )
}

fn blue_green_tasks() -> String {
    let alive = r#", "healthCheckResults": [{"alive": true}]"#;
    let tasks = [
        ("/shop-blue", "b3", "10.0.0.3", ""),
        ("/shop-blue", "b1", "10.0.0.1", ""),
        ("/shop-blue", "b2", "10.0.0.2", ""),
        ("/shop-green", "g1", "10.0.1.1", alive),
        ("/shop-green", "g2", "10.0.1.2", ""),
    ];
    let tasks: Vec<String> = tasks
        .iter()
        .map(|(app, id, host, results)| {
            format!(
                r#"{{"id": "{id}", "appId": "{app}", "host": "{host}", "ports": [31000]{results}}}"#
            )
        })
        .collect();
    format!("[{}]", tasks.join(","))
}

#[test]
fn deployment_group_merges_into_the_old_app_and_drains_old_tasks() {
    let apps = blue_green(
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T09:00:00""#,
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T10:00:00.5",
            "HAPROXY_DEPLOYMENT_NEW_INSTANCES": "2", "HAPROXY_DEPLOYMENT_TARGET_INSTANCES": "3""#,
        r#"[{"protocol": "HTTP", "portIndex": 0}]"#,
    );
    let (model, warnings) = build_json(&apps, &blue_green_tasks());
    assert!(warnings.is_empty(), "{warnings:?}");
    let service = only_service(&model);
    // Named after the group, with the old (blue) app's ports and labels.
    assert_eq!(
        (service.app_id.as_str(), service.service_port),
        ("/shop", 10600)
    );
    assert_eq!(service.hostname.as_deref(), Some("blue"));
    // One healthy green task, so one old task (the first by id) drains.
    assert_eq!(
        servers(service),
        [
            "10.0.0.1:31000 draining",
            "10.0.0.2:31000",
            "10.0.0.3:31000",
            "10.0.1.1:31000",
            "10.0.1.2:31000"
        ]
    );
}

#[test]
fn deployment_without_health_checks_counts_every_new_instance() {
    // Green listed first this time; it is still the newer one by date.
    let apps = blue_green(
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T09:00:00""#,
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T10:00:00",
            "HAPROXY_DEPLOYMENT_NEW_INSTANCES": "0", "HAPROXY_DEPLOYMENT_TARGET_INSTANCES": "3""#,
        "[]",
    );
    let mut parsed: Vec<serde_json::Value> = serde_json::from_str(&apps).unwrap();
    parsed.reverse();
    let (model, _) = build_json(
        &serde_json::to_string(&parsed).unwrap(),
        &blue_green_tasks(),
    );
    let service = only_service(&model);
    assert_eq!(service.app_id, "/shop");
    // healthy = green's 2 instances; drainable = 2 + 3 - 3 = 2.
    let draining = service.backends.iter().filter(|b| b.draining).count();
    assert_eq!(draining, 2);
    assert_eq!(service.hostname.as_deref(), Some("blue"));
}

#[test]
fn deployment_without_new_instances_targets_one() {
    // No dates: the later app counts as old, and the target falls back to 1.
    let apps = blue_green("", "", "[]");
    let (model, _) = build_json(&apps, &blue_green_tasks());
    let service = only_service(&model);
    assert_eq!(service.hostname.as_deref(), Some("green"));
    // healthy = blue's 3 instances, drainable = 3 + 2 - 1 = 4, old tasks = 2: both drain.
    assert_eq!(
        servers(service),
        [
            "10.0.1.1:31000 draining",
            "10.0.1.2:31000 draining",
            "10.0.0.3:31000",
            "10.0.0.1:31000",
            "10.0.0.2:31000"
        ]
    );
}

#[test]
fn lone_deployment_group_app_is_renamed() {
    let app = host_app(
        "/reports-blue",
        &[1],
        r#"{"HAPROXY_DEPLOYMENT_GROUP": "reports"}"#,
    );
    let (model, _) = build_json(
        &format!("[{}, {}]", app, host_app("/plain", &[2], "{}")),
        "[]",
    );
    let ids: Vec<&str> = model.services.iter().map(|s| s.app_id.as_str()).collect();
    // Deployment groups come after the plain apps.
    assert_eq!(ids, ["/plain", "/reports"]);
}

#[test]
fn bad_deployment_labels_leave_that_app_out() {
    let empty_group = host_app("/x", &[1], r#"{"HAPROXY_DEPLOYMENT_GROUP": ""}"#);
    let (model, warnings) = build_json(&format!("[{empty_group}]"), "[]");
    assert!(model.services.is_empty());
    assert_eq!(
        warnings[0].label.as_deref(),
        Some("HAPROXY_DEPLOYMENT_GROUP")
    );

    let bad_target = blue_green(
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T09:00:00""#,
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T10:00:00",
            "HAPROXY_DEPLOYMENT_NEW_INSTANCES": "1", "HAPROXY_DEPLOYMENT_TARGET_INSTANCES": "three""#,
        "[]",
    );
    let (model, warnings) = build_json(&bad_target, &blue_green_tasks());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].app_id, "/shop-green");
    assert_eq!(
        warnings[0].label.as_deref(),
        Some("HAPROXY_DEPLOYMENT_TARGET_INSTANCES")
    );
    // Blue alone: renamed, nothing drained.
    let service = only_service(&model);
    assert_eq!(service.app_id, "/shop");
    assert_eq!(service.backends.len(), 3);
    assert!(service.backends.iter().all(|b| !b.draining));

    let bad_date = blue_green("", r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "soon""#, "[]");
    let (_, warnings) = build_json(&bad_date, &blue_green_tasks());
    assert_eq!(
        warnings[0].label.as_deref(),
        Some("HAPROXY_DEPLOYMENT_STARTED_AT")
    );
}

#[test]
fn deployment_dates_with_and_without_zone_do_not_compare() {
    let apps = blue_green(
        "",
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T10:00:00Z""#,
        "[]",
    );
    let (model, warnings) = build_json(&apps, &blue_green_tasks());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].app_id, "/shop-green");
    assert_eq!(only_service(&model).hostname.as_deref(), Some("blue"));
}

#[test]
fn new_instances_counts_by_presence_only() {
    // marathon-lb evaluates `int(label != 0)`: any value, even "0" or "none", takes the branch
    // that reads TARGET_INSTANCES and may swap old and new by lastScalingAt.
    let apps = blue_green(
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T11:00:00""#,
        r#", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T09:00:00",
            "HAPROXY_DEPLOYMENT_TARGET_INSTANCES": "3""#,
        "[]",
    );
    // Blue is newer by date but carries no NEW_INSTANCES: target 1.
    let (model, _) = build_json(&apps, &blue_green_tasks());
    assert_eq!(only_service(&model).hostname.as_deref(), Some("green"));
    let apps = apps.replace(
        r#""HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T11:00:00""#,
        r#""HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T11:00:00", "HAPROXY_DEPLOYMENT_NEW_INSTANCES": "none""#,
    );
    // Now blue (newer by date) has the label, but green scaled later: they swap, blue is old,
    // and green's TARGET_INSTANCES (3) applies.
    let (model, warnings) = build_json(&apps, &blue_green_tasks());
    assert!(warnings.is_empty(), "{warnings:?}");
    let service = only_service(&model);
    assert_eq!(service.hostname.as_deref(), Some("blue"));
    // healthy = green's 2 instances; drainable = 2 + 3 - 3 = 2.
    assert_eq!(service.backends.iter().filter(|b| b.draining).count(), 2);
}

#[test]
fn odd_values_never_panic() {
    let apps = r#"[
        {"id": "", "portDefinitions": [{"port": -1}],
         "labels": {"HAPROXY_0_PORT": "99999999999", "HAPROXY_0_BACKEND_WEIGHT": "-9223372036854775808"}},
        {"id": "/big", "ports": [4294967296]},
        {"id": "/é", "portDefinitions": [{"port": 1}],
         "labels": {"HAPROXY_0_VHOST": "ÉCOLE.fr", "HAPROXY_0_AUTH": "::", "HAPROXY_0_PORT": "٣"}},
        {"id": "/g1", "instances": 9223372036854775807,
         "labels": {"HAPROXY_DEPLOYMENT_GROUP": "g", "HAPROXY_DEPLOYMENT_STARTED_AT": "2019-06-03T10:00:00.é"}},
        {"id": "/g2", "instances": 9223372036854775807,
         "versionInfo": {"lastScalingAt": "2019-06-03T10:00:00+99:99"},
         "labels": {"HAPROXY_DEPLOYMENT_GROUP": "g", "HAPROXY_DEPLOYMENT_NEW_INSTANCES": "1",
                    "HAPROXY_DEPLOYMENT_TARGET_INSTANCES": "-9223372036854775808"}},
        {"id": "/g3", "instances": -9223372036854775808, "portDefinitions": [{"port": 2}],
         "labels": {"HAPROXY_DEPLOYMENT_GROUP": "/g"}},
        {"id": "/g4", "portDefinitions": [{"port": 2}], "labels": {"HAPROXY_DEPLOYMENT_GROUP": "/g"}},
        {"id": "/hc", "portDefinitions": [{"port": 3}],
         "labels": {"HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX": "-9223372036854775808"},
         "healthChecks": [{"protocol": "TCP", "portIndex": -9223372036854775808}]}
    ]"#;
    let tasks = r#"[
        {"id": "x", "appId": "/é", "host": "10.0.0.1", "ports": [-5]},
        {"id": "y", "appId": "/é", "host": "10.0.0.1", "ports": [70000, 1]},
        {"id": "z", "appId": "/g3", "host": "10.0.0.1", "ports": [null]},
        {"id": "w", "appId": "/hc", "host": "10.0.0.1", "ports": [4294967296]}
    ]"#;
    let (model, warnings) = build_json(apps, tasks);
    assert!(!warnings.is_empty());
    for warning in &warnings {
        assert!(!warning.message.is_empty());
    }
    let _ = model;
}

#[test]
fn build_without_drops_apps_by_id_or_by_their_deployment_group() {
    let apps: AppList = serde_json::from_str(&format!(
        r#"{{"apps": [{}, {}, {}]}}"#,
        host_app("/web", &[10000], "{}"),
        host_app(
            "/shop-blue",
            &[10001],
            r#"{"HAPROXY_DEPLOYMENT_GROUP": "shop"}"#
        ),
        host_app("/api", &[10002], "{}"),
    ))
    .unwrap();
    let tasks: TaskList = serde_json::from_str(&format!(
        r#"{{"tasks": [{}, {}, {}]}}"#,
        task("/web", "w.1", "10.0.0.1", &[31000]),
        task("/shop-blue", "s.1", "10.0.0.1", &[31001]),
        task("/api", "a.1", "10.0.0.1", &[31002]),
    ))
    .unwrap();
    let left_out: HashSet<String> = ["/web".to_string(), "/shop".to_string()].into();
    let (model, warnings) = build_without(
        &apps.apps,
        &tasks.tasks,
        &config(),
        &no_resolution,
        &left_out,
    );
    let ids: Vec<&str> = model.services.iter().map(|s| s.app_id.as_str()).collect();
    assert_eq!(ids, ["/api"]);
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn weights_beyond_64_bits_keep_pythons_order() {
    let apps = format!(
        "[{}, {}, {}, {}, {}, {}]",
        host_app(
            "/huge",
            &[1],
            r#"{"HAPROXY_0_BACKEND_WEIGHT": "100000000000000000001"}"#
        ),
        host_app(
            "/big",
            &[2],
            r#"{"HAPROXY_0_BACKEND_WEIGHT": "100000000000000000000"}"#
        ),
        host_app("/five", &[3], r#"{"HAPROXY_0_BACKEND_WEIGHT": "5"}"#),
        host_app("/path", &[4], r#"{"HAPROXY_0_PATH": "/x"}"#),
        host_app("/plain", &[5], "{}"),
        host_app(
            "/negative",
            &[6],
            r#"{"HAPROXY_0_BACKEND_WEIGHT": "-100000000000000000000"}"#
        ),
    );
    let (model, warnings) = build_json(&apps, "[]");
    assert!(warnings.is_empty(), "{warnings:?}");
    let weight = |id: &str| {
        model
            .services
            .iter()
            .find(|s| s.app_id == id)
            .unwrap()
            .backend_weight
    };
    assert!(weight("/huge") > weight("/big"));
    assert!(weight("/big") > weight("/five"));
    assert!(weight("/five") > weight("/path"));
    assert!(weight("/path") > weight("/plain"));
    // render's -1 (a shared map rule) stays between 0 and the negative weights.
    assert!(weight("/plain") > -1 && -1 > weight("/negative"));
    // Without a big weight, weights are the labels' values.
    let (model, _) = build_json(
        &format!(
            "[{}]",
            host_app("/five", &[3], r#"{"HAPROXY_0_BACKEND_WEIGHT": "5"}"#)
        ),
        "[]",
    );
    assert_eq!(only_service(&model).backend_weight, 5);
}

#[test]
fn other_integer_labels_beyond_64_bits_stay_integers() {
    let apps = format!(
        "[{}, {}]",
        host_app(
            "/index",
            &[1],
            r#"{"HAPROXY_0_BACKEND_HEALTHCHECK_PORT_INDEX": "-100000000000000000000"}"#
        ),
        host_app(
            "/port",
            &[2],
            r#"{"HAPROXY_0_PORT": "100000000000000000000"}"#
        ),
    );
    let (model, warnings) = build_json(&apps, "[]");
    assert_eq!(
        model.services[0].extras().healthcheck_port_index,
        Some(i64::MIN),
        "an index far out of range falls back like any out-of-range index"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].to_string(),
        "app /port: label HAPROXY_0_PORT: port 100000000000000000000 is out of range; app left out"
    );
}

#[test]
fn app_ids_and_deployment_groups_outside_marathons_grammar_leave_the_app_out() {
    let apps = format!(
        "[{}, {}, {}]",
        host_app("/web\\nglobal", &[1], "{}"),
        host_app(
            "/blue",
            &[2],
            r#"{"HAPROXY_DEPLOYMENT_GROUP": "shop\n  program evil"}"#
        ),
        host_app("/fine", &[3], "{}"),
    );
    let tasks = format!(
        "[{}, {}]",
        task("/blue", "b.1", "10.0.0.1", &[31000]),
        task("/fine", "f.1", "10.0.0.1", &[31001])
    );
    let (model, warnings) = build_json(&apps, &tasks);
    let ids: Vec<&str> = model.services.iter().map(|s| s.app_id.as_str()).collect();
    assert_eq!(ids, ["/fine"]);
    let texts: Vec<String> = warnings.iter().map(Warning::to_string).collect();
    assert_eq!(
        texts,
        [
            r#"app /web\nglobal: id: "/web\nglobal" is not a Marathon app id (path segments of lowercase letters, digits, '-' and '.'); app left out"#,
            r#"app /blue: label HAPROXY_DEPLOYMENT_GROUP: the deployment group becomes the app id: "/shop\n  program evil" is not a Marathon app id (path segments of lowercase letters, digits, '-' and '.'); app left out"#,
        ]
    );
    assert!(warnings.iter().all(|w| w.app_left_out));
    assert_eq!(
        warnings[0].reason,
        Reason::Field {
            field: fields::Field::AppId,
            value: "/web\nglobal".to_string()
        }
    );
    assert_eq!(warnings[1].reason, Reason::Label);
}

#[test]
fn a_task_with_a_hostile_host_or_address_is_skipped_and_named() {
    let apps = format!(
        r#"[{}, {{"id": "/ipt", "ipAddress": {{"discovery": {{"ports": [{{"number": 80}}]}}}},
            "portDefinitions": [{{"port": 10010}}]}}]"#,
        host_app("/web", &[10000], "{}"),
    );
    let tasks = r#"[
        {"id": "w.1", "appId": "/web", "host": "10.0.0.1\n  server evil 203.0.113.9:80", "ports": [31000]},
        {"id": "w.2", "appId": "/web", "host": "10.0.0.2", "ports": [31001]},
        {"id": "i.1", "appId": "/ipt", "host": "10.0.0.3",
         "ipAddresses": [{"ipAddress": "9.0.0.1\n  server evil 203.0.113.9:80"}]},
        {"id": "i.2", "appId": "/ipt", "host": "10.0.0.4", "ipAddresses": [{"ipAddress": "9.0.0.2"}]}
    ]"#;
    let (model, warnings) = build_json(&apps, tasks);
    let all: Vec<String> = model.services.iter().flat_map(servers).collect();
    assert_eq!(all, ["10.0.0.2:31001", "9.0.0.2:80"]);
    let texts: Vec<String> = warnings.iter().map(Warning::to_string).collect();
    assert_eq!(
        texts,
        [
            r#"app /web: task w.1: host: "10.0.0.1\n  server evil 203.0.113.9:80" is neither an IP address nor a host name; the task is skipped"#,
            r#"app /ipt: task i.1: ipAddresses[0].ipAddress: "9.0.0.1\n  server evil 203.0.113.9:80" is not an IP address; the task is skipped"#,
        ]
    );
    assert!(warnings.iter().all(|w| !w.app_left_out));
}

#[test]
fn a_hostile_health_check_is_left_out_of_haproxys_checks_only() {
    let apps = r#"[{"id": "/web", "portDefinitions": [{"port": 10000}],
        "healthChecks": [{"protocol": "HTTP", "portIndex": 0,
                          "path": "/\nglobal\n  master-worker", "command": {"value": "x\ny"}}]},
        {"id": "/ok", "portDefinitions": [{"port": 10001}],
         "healthChecks": [{"protocol": "COMMAND", "command": {"value": "curl -f $HOST\n"}}]}]"#;
    let (model, warnings) = build_json(apps, "[]");
    let web = &model.services[0];
    assert_eq!(web.health_check, None);
    assert_eq!(
        web.mode.as_deref(),
        Some("http"),
        "the check still sets the mode"
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        warnings[0].to_string(),
        r#"app /web: healthChecks[0].path: "/\nglobal\n  master-worker" holds '\n'; a health-check path is one word of printable ASCII; the health check is left out of HAProxy's checks"#
    );
    assert!(!warnings[0].app_left_out);
}

#[test]
fn a_repeated_service_port_replaces_the_earlier_ones_big_weight_too() {
    let apps = format!(
        "[{}, {}]",
        host_app(
            "/a",
            &[5, 5],
            r#"{"HAPROXY_0_BACKEND_WEIGHT": "100000000000000000000",
                "HAPROXY_1_BACKEND_WEIGHT": "7"}"#
        ),
        host_app("/b", &[6], r#"{"HAPROXY_0_BACKEND_WEIGHT": "9"}"#),
    );
    let (model, warnings) = build_json(&apps, "[]");
    assert!(warnings.is_empty(), "{warnings:?}");
    let weights: Vec<(&str, i64)> = model
        .services
        .iter()
        .map(|s| (s.app_id.as_str(), s.backend_weight))
        .collect();
    // No weight beyond 64 bits is left, so the labels' own values stand.
    assert_eq!(weights, [("/a", 7), ("/b", 9)]);
}

/// A cluster large enough to be built in two parts, with what crosses from one app to the
/// next: auto-assigned service ports, the health-result cache (an id remembered and recalled,
/// and one forgotten), an unresolvable agent named once for an id both parts build, and apps
/// left out by a second pass.
#[test]
fn a_pass_built_in_two_parts_is_the_pass_built_whole() {
    const APPS: usize = 600;
    let mut apps = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..APPS {
        let id = match i {
            3 | 590 => "/dup".to_string(),
            _ => format!("/app-{i}"),
        };
        let checks = match i % 3 {
            0 => r#", "healthChecks": [{"protocol": "HTTP", "portIndex": 0, "path": "/"}]"#,
            _ => "",
        };
        let labels = match i {
            100 | 450 => r#"{"HAPROXY_0_PORT": "not a port"}"#,
            _ => "{}",
        };
        let alive = match checks.is_empty() {
            true => "",
            false => r#", "healthCheckResults": [{"alive": true}]"#,
        };
        if i % 50 == 7 {
            apps.push(format!(
                r#"{{"id": "{id}", "labels": {labels}{checks},
                    "ipAddress": {{"discovery": {{"ports": [{{"number": 8080}}]}}}}}}"#
            ));
            tasks.push(format!(
                r#"{{"id": "t{i}", "appId": "{id}", "host": "10.2.0.1"{alive},
                    "ipAddresses": [{{"ipAddress": "9.0.{}.{}"}}]}}"#,
                i / 256,
                i % 256
            ));
            continue;
        }
        apps.push(format!(
            r#"{{"id": "{id}", "labels": {labels}{checks}, "portDefinitions": [{{"port": {}}}]}}"#,
            10000 + i
        ));
        let host = format!("10.0.{}.{}", i / 256, i % 256);
        let agent = format!("agent-{}", i % 4);
        for (task, host) in [("a", host.as_str()), ("b", agent.as_str())] {
            tasks.push(format!(
                r#"{{"id": "t{i}-{task}", "appId": "{id}", "host": "{host}", "ports": [{}]{alive}}}"#,
                31000 + i
            ));
        }
    }
    // Without results of its own, a task the cache remembers serves; one it forgot does not.
    let recalled = |id: &str, app: usize| {
        format!(r#"{{"id": "{id}", "appId": "/app-{app}", "host": "10.3.0.1", "ports": [1]}}"#)
    };
    tasks.push(recalled("t288-a", 312));
    tasks.push(recalled("t6-a", 597));
    let apps: AppList =
        serde_json::from_str(&format!(r#"{{"apps": [{}]}}"#, apps.join(","))).unwrap();
    let tasks: TaskList =
        serde_json::from_str(&format!(r#"{{"tasks": [{}]}}"#, tasks.join(","))).unwrap();
    let resolve = |host: &str| match host {
        "agent-3" => None,
        _ => Some(IpAddr::from([10, 9, 0, host.len() as u8])),
    };
    let flagged = ModelConfig {
        health_check: true,
        ..config()
    };
    let build = |parts_from| {
        let left_out = HashSet::new();
        build_in_parts(
            &apps.apps,
            &tasks.tasks,
            &flagged,
            &resolve,
            &left_out,
            parts_from,
        )
    };
    let (whole, whole_warnings) = build(usize::MAX);
    let (split, split_warnings) = build(1);
    assert_eq!(
        format!("{:?}", split.services),
        format!("{:?}", whole.services)
    );
    assert_eq!(format!("{split_warnings:?}"), format!("{whole_warnings:?}"));
    // The cases are there to be compared.
    let service = |app_id: &str| {
        let found = whole.services.iter().find(|s| s.app_id == app_id);
        found.unwrap_or_else(|| panic!("no service for {app_id}"))
    };
    assert!(servers(service("/app-312")).contains(&"10.3.0.1:1".to_string()));
    assert!(!servers(service("/app-597")).contains(&"10.3.0.1:1".to_string()));
    assert!(service("/app-57").service_port >= 10050);
    let named = |app_id: &str| {
        let about_agent = |w: &&Warning| w.app_id == app_id && w.message.contains("agent-3");
        whole_warnings.iter().filter(about_agent).count()
    };
    assert_eq!(
        (named("/dup"), named("/app-7"), named("/app-11")),
        (1, 0, 1)
    );
    let left_out: Vec<&str> = whole_warnings
        .iter()
        .filter(|w| w.app_left_out)
        .map(|w| w.app_id.as_str())
        .collect();
    assert_eq!(left_out, ["/app-100", "/app-450"]);
}
