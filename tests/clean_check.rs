//! Our own default sections check clean: `haproxy -c` on a render with every default template
//! (our head included) and a mix of TCP and HTTP apps prints no WARNING line, so the warnings an
//! operator sees are about their cluster, never about us.

mod support;

use std::path::Path;
use std::process::Command;

use support::haproxy::HAPROXY_BIN;
use support::sync::Sync;

/// `count` apps alternating HTTP (a vhost, an HTTP health check) and TCP (two ports, a TCP
/// health check), two tasks each.
fn mixed_cluster(dir: &Path, count: usize) {
    let mut apps = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..count {
        let id = format!("/svc{i}");
        let port = 10000 + 2 * i;
        let (labels, ports, check) = if i % 2 == 0 {
            (
                format!(r#"{{"HAPROXY_GROUP":"external","HAPROXY_0_VHOST":"svc{i}.example.com"}}"#),
                format!(r#"[{{"port":{port}}}]"#),
                r#"{"protocol":"HTTP","path":"/health","portIndex":0}"#,
            )
        } else {
            (
                r#"{"HAPROXY_GROUP":"external"}"#.to_string(),
                format!(r#"[{{"port":{port}}},{{"port":{}}}]"#, port + 1),
                r#"{"protocol":"TCP","portIndex":0}"#,
            )
        };
        apps.push(format!(
            r#"{{"id":"{id}","labels":{labels},"portDefinitions":{ports},"healthChecks":[{check}]}}"#
        ));
        for t in 0..2 {
            tasks.push(format!(
                r#"{{"id":"svc{i}.t{t}","appId":"{id}","host":"10.0.{t}.{}","ports":[{},{}],"healthCheckResults":[{{"alive":true}}]}}"#,
                1 + i % 250,
                31000 + i,
                32000 + i
            ));
        }
    }
    std::fs::write(
        dir.join("apps.json"),
        format!(r#"{{"apps":[{}]}}"#, apps.join(",")),
    )
    .unwrap();
    std::fs::write(
        dir.join("tasks.json"),
        format!(r#"{{"tasks":[{}]}}"#, tasks.join(",")),
    )
    .unwrap();
}

#[test]
fn haproxy_check_of_our_default_sections_prints_no_warning() {
    let dir = tempfile::tempdir().unwrap();
    let snapshot = dir.path().join("marathon");
    std::fs::create_dir(&snapshot).unwrap();
    mixed_cluster(&snapshot, 40);
    let pem = support::cert::self_signed_pem(dir.path());
    let config = dir.path().join("haproxy.cfg");
    let rendered = Sync::new()
        .marathon(&snapshot)
        .group("external")
        .arg("--dry-run")
        .config(&config)
        .arg("--ssl-certs")
        .arg(&pem)
        .run();
    assert_eq!(rendered.status.code(), Some(0), "{}", rendered.stderr);
    let text = rendered.stdout;
    assert_eq!(
        text.matches("\n  mode tcp\n").count(),
        20 * 2 * 2,
        "TCP frontends and backends"
    );
    assert!(text.contains("frontend marathon_http_in\n"), "{text}");
    std::fs::write(&config, &text).unwrap();

    let check = Command::new(HAPROXY_BIN)
        .arg("-c")
        .arg("-f")
        .arg(&config)
        .output()
        .unwrap();
    let output = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{output}");
    let warnings: Vec<&str> = output.lines().filter(|l| l.contains("WARNING")).collect();
    assert!(
        warnings.is_empty(),
        "{} warnings:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    // Kept where it applies: the HTTP `listen stats` of our head.
    assert!(text.contains("  mode http\n  option            idle-close-on-response\n"));
}
