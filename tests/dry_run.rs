//! The dry run predicts the real run: it says on stderr what the real run would decide (apply,
//! refuse, reject, leave out), exits with the real run's status, prints the map files, and
//! writes nothing beside the config. Driven through the binary with real `haproxy -c`, reading
//! saved Marathon snapshots.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use support::haproxy::HAPROXY_BIN;
use support::sync::{Run, Sync};

/// A temp directory with a snapshot of Marathon (`marathon/`), a certificate for :443
/// (`cert.pem`) and the config path `etc/haproxy.cfg`.
struct Cluster {
    dir: tempfile::TempDir,
}

/// `(app id, labels JSON, tasks as (host, port))`.
type App<'a> = (&'a str, &'a str, &'a [(&'a str, u16)]);

impl Cluster {
    fn new() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("marathon")).unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let cluster = Cluster { dir };
        support::cert::self_signed_pem(cluster.dir.path());
        cluster
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn config(&self) -> PathBuf {
        self.path("etc/haproxy.cfg")
    }

    /// Marathon's state: each app on service port 10000 + its index.
    fn set(&self, apps: &[App]) {
        let mut app_json = Vec::new();
        let mut task_json = Vec::new();
        for (number, (id, labels, tasks)) in apps.iter().enumerate() {
            app_json.push(format!(
                r#"{{"id":"{id}","labels":{labels},"portDefinitions":[{{"port":{}}}]}}"#,
                10000 + number
            ));
            for (t, (host, port)) in tasks.iter().enumerate() {
                task_json.push(format!(
                    r#"{{"id":"{}.{t}","appId":"{id}","host":"{host}","ports":[{port}]}}"#,
                    id.trim_start_matches('/')
                ));
            }
        }
        let write = |name: &str, text: String| {
            std::fs::write(self.path(&format!("marathon/{name}")), text).unwrap()
        };
        write(
            "apps.json",
            format!(r#"{{"apps":[{}]}}"#, app_json.join(",")),
        );
        write(
            "tasks.json",
            format!(r#"{{"tasks":[{}]}}"#, task_json.join(",")),
        );
    }

    /// The binary on this cluster's snapshot and config, with its certificate for :443.
    fn sync(&self) -> Sync {
        Sync::new()
            .marathon(self.path("marathon"))
            .group("external")
            .config(self.config())
            .arg("--ssl-certs")
            .arg(self.path("cert.pem"))
    }

    fn run(&self, extra: &[&str]) -> Run {
        self.sync()
            .args(["--haproxy-bin", HAPROXY_BIN])
            .reload_command("true")
            .args(extra)
            .run()
    }

    /// Every file under `etc/` with its content.
    fn etc(&self) -> BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(self.path("etc"))
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(entry.path()).unwrap())
            })
            .collect()
    }
}

const LABELS: &str = r#"{"HAPROXY_GROUP":"external"}"#;

/// Three apps, two tasks each, applied for real.
fn applied_cluster() -> Cluster {
    let cluster = Cluster::new();
    cluster.set(&[
        ("/shop", LABELS, &[("10.0.1.7", 31002), ("10.0.1.8", 31003)]),
        (
            "/cart",
            LABELS,
            &[("10.0.1.9", 31004), ("10.0.1.10", 31005)],
        ),
        (
            "/auth",
            LABELS,
            &[("10.0.1.11", 31006), ("10.0.1.12", 31007)],
        ),
    ]);
    let first = cluster.run(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", first.stderr);
    cluster
}

fn assert_nothing_written(cluster: &Cluster, before: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(
        &cluster.etc(),
        before,
        "the dry run wrote beside the config"
    );
}

#[test]
fn a_dry_run_says_what_the_real_run_would_apply_and_names_each_changed_backend() {
    let cluster = applied_cluster();
    cluster.set(&[
        ("/shop", LABELS, &[("10.0.2.5", 31005), ("10.0.1.8", 31003)]),
        (
            "/cart",
            LABELS,
            &[("10.0.1.9", 31004), ("10.0.1.10", 31005)],
        ),
        (
            "/auth",
            LABELS,
            &[("10.0.1.11", 31006), ("10.0.1.12", 31007)],
        ),
    ]);
    let before = cluster.etc();
    for extra in [&["--dry-run", "--diff"][..], &["--dry-run"][..]] {
        let dry = cluster.run(extra);
        let stderr = dry.stderr.clone();
        assert_eq!(dry.status.code(), Some(0), "{stderr}");
        assert_eq!(
            stderr,
            "haproxy-marathon-sync: would apply: backends +0 -0, servers +1 -1 \
             (reload: no --haproxy-master-socket); /shop (shop_10000): +10.0.2.5:31005 -10.0.1.7:31002\n",
            "{extra:?}"
        );
        assert_nothing_written(&cluster, &before);
    }
    let dry = cluster.run(&["--dry-run", "--diff"]);
    assert!(dry
        .stdout
        .contains("\n+  server 10_0_2_5_31005 10.0.2.5:31005"));
    let json = cluster.run(&["--dry-run", "--log-format", "json"]);
    let line: serde_json::Value = serde_json::from_str(&json.stderr).unwrap();
    assert_eq!(line["outcome"], "dry-run");
    assert_eq!(
        line["changes"],
        serde_json::json!(["/shop (shop_10000): +10.0.2.5:31005 -10.0.1.7:31002"])
    );

    // The real run does what the dry run said, and says it the same way.
    let real = cluster.run(&[]);
    let stderr = real.stderr.clone();
    assert_eq!(real.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.ends_with(
            ": backends +0 -0, servers +1 -1 (reloaded); \
             /shop (shop_10000): +10.0.2.5:31005 -10.0.1.7:31002\n"
        ),
        "{stderr}"
    );
    let unchanged = cluster.run(&["--dry-run", "--diff"]);
    assert_eq!(
        unchanged.stderr,
        format!(
            "haproxy-marathon-sync: would leave {} unchanged\n",
            cluster.config().display()
        )
    );
    assert!(unchanged.stdout.is_empty());
}

#[test]
fn a_dry_run_the_guard_would_refuse_exits_9_and_says_so() {
    let cluster = applied_cluster();
    cluster.set(&[("/shop", LABELS, &[("10.0.1.7", 31002), ("10.0.1.8", 31003)])]);
    let before = cluster.etc();
    let dry = cluster.run(&["--dry-run", "--diff"]);
    let stderr = dry.stderr.clone();
    assert_eq!(dry.status.code(), Some(9), "{stderr}");
    assert!(
        stderr.contains(
            "would be refused by the blast-radius guard: it would remove 4 of the 6 live \
             servers (66%, more than --max-server-loss 50%); backends removed: auth_10002, \
             cart_10001"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("If that is what Marathon runs now"),
        "{stderr}"
    );
    assert!(dry.stdout.contains("-backend cart_10001\n"));
    assert_nothing_written(&cluster, &before);
    let real = cluster.run(&[]);
    assert_eq!(real.status.code(), Some(9), "{}", real.stderr);
}

#[test]
fn a_dry_run_haproxy_would_reject_exits_6_with_its_alerts_and_writes_nothing() {
    let cluster = applied_cluster();
    let before = cluster.etc();
    let broken_head = "global\\n  maxconn 100\\n  no-such-keyword\\n";
    let dry = cluster
        .sync()
        .args(["--dry-run", "--haproxy-bin", HAPROXY_BIN])
        .env("HAPROXY_HEAD", broken_head)
        .run();
    let stderr = dry.stderr.clone();
    assert_eq!(dry.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("haproxy -c would reject it: [ALERT]")
            && stderr.contains("unknown keyword 'no-such-keyword'")
            && stderr.contains("[dry-run candidate:3]"),
        "{stderr}"
    );
    // The head comes from the operator's environment: it is named, and no app is blamed.
    assert!(
        stderr.contains(
            "HAProxy rejects the operator's template HAPROXY_HEAD (from the environment variable)"
        ) && !stderr.contains("app left out"),
        "{stderr}"
    );
    assert_nothing_written(&cluster, &before);
}

#[test]
fn a_dry_run_names_the_apps_the_real_run_would_leave_out_and_exits_10() {
    let cluster = applied_cluster();
    let bad = r#"{"HAPROXY_GROUP":"external","HAPROXY_0_BACKEND_HEAD":"backend {backend}\n  balance no-such-algorithm\n"}"#;
    cluster.set(&[
        ("/shop", LABELS, &[("10.0.1.7", 31002), ("10.0.1.8", 31003)]),
        (
            "/cart",
            LABELS,
            &[("10.0.1.9", 31004), ("10.0.1.10", 31005)],
        ),
        (
            "/auth",
            LABELS,
            &[("10.0.1.11", 31006), ("10.0.1.12", 31007)],
        ),
        ("/bad", bad, &[("10.0.1.13", 31008)]),
    ]);
    let before = cluster.etc();
    let dry = cluster.run(&["--dry-run"]);
    let stderr = dry.stderr.clone();
    assert_eq!(dry.status.code(), Some(10), "{stderr}");
    assert!(
        stderr.contains("dry run, the real run would do the same: app /bad: HAProxy rejects its sections: [ALERT]"),
        "{stderr}"
    );
    assert!(stderr.contains("would leave "), "{stderr}");
    let stdout = dry.stdout.clone();
    assert!(stdout.contains("backend shop_10000\n") && !stdout.contains("backend bad_"));
    assert_nothing_written(&cluster, &before);
}

#[test]
fn a_plain_dry_run_prints_the_map_files_under_a_header_naming_each() {
    let cluster = Cluster::new();
    let vhost = r#"{"HAPROXY_GROUP":"external","HAPROXY_0_VHOST":"shop.example.com"}"#;
    cluster.set(&[("/shop", vhost, &[("10.0.1.7", 31002)])]);
    let dry = cluster.run(&["--dry-run", "--haproxy-map"]);
    let stdout = dry.stdout.clone();
    assert_eq!(dry.status.code(), Some(0), "{}", dry.stderr);
    let dir = cluster.path("etc");
    let header = format!("\n# ==> {} <==\n", dir.join("domain2backend.map").display());
    let (config, maps) = stdout.split_once(&header).expect(&stdout);
    assert!(config.contains("map("), "{config}");
    assert!(maps.starts_with("shop.example.com shop_10000\n"), "{maps}");
    let app_header = format!("# ==> {} <==\n", dir.join("app2backend.map").display());
    assert!(maps.contains(&app_header), "{maps}");
    // Validation saw the maps (staged in a temporary place), and nothing was written.
    assert!(cluster.etc().is_empty(), "{:?}", cluster.etc().keys());
    assert!(dry.stderr.starts_with(
        "haproxy-marathon-sync: would apply: backends +1 -0, servers +1 -0 (reload: "
    ));
}

#[test]
fn a_dry_run_that_cannot_run_haproxy_says_so_instead_of_blaming_the_candidate() {
    let cluster = applied_cluster();
    // A change, so there is a candidate to check.
    cluster.set(&[
        ("/shop", LABELS, &[("10.0.1.7", 31002), ("10.0.2.5", 31005)]),
        (
            "/cart",
            LABELS,
            &[("10.0.1.9", 31004), ("10.0.1.10", 31005)],
        ),
        (
            "/auth",
            LABELS,
            &[("10.0.1.11", 31006), ("10.0.1.12", 31007)],
        ),
    ]);
    let dry = cluster
        .sync()
        .args(["--dry-run", "--haproxy-bin", "/nonexistent/haproxy"])
        .run();
    let stderr = dry.stderr.clone();
    assert_eq!(dry.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "haproxy-marathon-sync: error: the candidate configuration did not pass haproxy -c: \
             dry run for {}: the candidate could not be checked with haproxy -c, so the real run \
             would stop here too: ",
            cluster.config().display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("would reject"), "{stderr}");
}
