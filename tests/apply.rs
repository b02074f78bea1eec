//! `apply::apply` against real files, stand-in validation and reload scripts, and a real HAProxy:
//! every path leaves the live config whole, reloads exactly when it should, and is bounded.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use fs2::FileExt;
use haproxy_marathon_sync::apply::{self, archive_path, rejected_path, Candidate, Outcome};
use haproxy_marathon_sync::config::default_lock_file;
use haproxy_marathon_sync::error::Failure;

use support::backend::{http_get, Backend};
use support::fixture::{candidate, failure_of, Fixture};
use support::haproxy::{http_config, wait_for, Haproxy, HAPROXY_BIN};
use support::mounts::{Immutable, SmallDisk};
use support::ports::Port;

const OLD: &str =
    "global\n  daemon\n\nbackend web_10000\n  server a 10.0.0.1:31000\n  server b 10.0.0.2:31000\n";
const NEW: &str = "global\n  daemon\n\nbackend web_10000\n  server a 10.0.0.1:31000\n  server c 10.0.0.3:31000\n\nbackend api_10001\n  server d 10.0.0.4:31001\n";

#[test]
fn first_write_creates_the_config_and_reloads_once() {
    let fixture = Fixture::new();
    let outcome = fixture.apply(&candidate(NEW)).unwrap();
    assert_eq!(
        outcome,
        Outcome::Applied {
            summary: format!(
                "applied {}: backends +2 -0, servers +3 -0 (reloaded)",
                fixture.live().display()
            )
        }
    );
    assert_eq!(fixture.read_live(), NEW);
    assert_eq!(fs::metadata(fixture.live()).unwrap().mode() & 0o7777, 0o644);
    assert_eq!(fixture.reloads(), 1);
    assert_eq!(fixture.etc_files(), ["haproxy.cfg", "haproxy.cfg.lock"]);
}

#[test]
fn unchanged_candidate_writes_prints_and_reloads_nothing() {
    let fixture = Fixture::new();
    fixture.write_live(OLD);
    let before = fs::metadata(fixture.live()).unwrap();
    let outcome = fixture.apply(&candidate(OLD)).unwrap();
    assert_eq!(outcome, Outcome::Unchanged);
    assert_eq!(fixture.reloads(), 0);
    let after = fs::metadata(fixture.live()).unwrap();
    assert_eq!(before.ino(), after.ino(), "the live file was replaced");
    assert_eq!(fixture.etc_files(), ["haproxy.cfg", "haproxy.cfg.lock"]);
}

#[test]
fn change_archives_renames_keeps_mode_and_owner_and_reloads_once() {
    let fixture = Fixture::new();
    fixture.write_live(OLD);
    fs::set_permissions(fixture.live(), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(fixture.live(), Some(4321), Some(4322)).unwrap();

    let outcome = fixture.apply(&candidate(NEW)).unwrap();
    let Outcome::Applied { summary } = outcome else {
        panic!("expected Applied, got {outcome:?}")
    };
    assert!(
        summary.ends_with(": backends +1 -0, servers +2 -1 (reloaded)"),
        "{summary}"
    );
    assert_eq!(fixture.read_live(), NEW);
    assert_eq!(
        fs::read_to_string(archive_path(fixture.live(), 1)).unwrap(),
        OLD
    );
    let live = fs::metadata(fixture.live()).unwrap();
    assert_eq!(live.mode() & 0o7777, 0o640);
    assert_eq!((live.uid(), live.gid()), (4321, 4322));
    assert_eq!(fixture.reloads(), 1);
    assert_eq!(
        fixture.etc_files(),
        ["haproxy.cfg", "haproxy.cfg.1", "haproxy.cfg.lock"]
    );
}

#[test]
fn rejected_candidate_leaves_live_untouched_and_is_kept() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fixture.config.haproxy_bin = fixture.script(
        "haproxy-reject",
        "echo \"[ALERT]    (1) : config : parsing [$3:4] : unknown keyword 'bogus'\" >&2; exit 1",
    );
    let (failure, message) = failure_of(fixture.apply(&candidate(NEW)));
    assert_eq!(failure, Some(Failure::ValidationFailed), "{message}");
    assert!(message.contains("unknown keyword 'bogus'"), "{message}");
    assert!(message.contains(" haproxy -c stderr "), "{message}");
    let rejected = rejected_path(fixture.live());
    // HAProxy's file:line points at the kept copy, not at the temp file that is gone.
    let at_line = format!("parsing [{}:4]", rejected.display());
    assert!(message.contains(&at_line), "{message}");
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(fs::read_to_string(&rejected).unwrap(), NEW);
    assert_eq!(fixture.reloads(), 0);
    assert_eq!(
        fixture.etc_files(),
        ["haproxy.cfg", "haproxy.cfg.lock", "haproxy.cfg.rejected"]
    );

    // The next good run goes through and clears the stale rejected copy.
    fixture.config.haproxy_bin = fixture.script("haproxy-ok-again", "exit 0");
    assert!(matches!(
        fixture.apply(&candidate(NEW)).unwrap(),
        Outcome::Applied { .. }
    ));
    assert!(!rejected.exists());
}

#[test]
fn missing_haproxy_binary_is_a_validation_failure() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fixture.config.haproxy_bin = fixture.path("no-such-haproxy");
    let (failure, message) = failure_of(fixture.apply(&candidate(NEW)));
    assert_eq!(failure, Some(Failure::ValidationFailed), "{message}");
    assert!(message.contains("no-such-haproxy"), "{message}");
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(
        fs::read_to_string(rejected_path(fixture.live())).unwrap(),
        NEW
    );
    assert_eq!(fixture.reloads(), 0);
}

#[test]
fn hanging_validation_is_killed_at_the_timeout() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fixture.config.haproxy_bin = fixture.script("haproxy-hang", "sleep 60");
    fixture.config.command_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let (failure, message) = failure_of(fixture.apply(&candidate(NEW)));
    assert!(started.elapsed() < Duration::from_secs(30), "not bounded");
    assert_eq!(failure, Some(Failure::ValidationFailed), "{message}");
    assert!(message.contains("did not finish within"), "{message}");
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(fixture.reloads(), 0);
}

#[test]
fn failed_reload_puts_the_old_config_back_and_the_next_run_retries() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fixture.config.reload_command = format!(
        "echo reload >> {}; echo 'Job for haproxy.service failed' >&2; exit 1",
        fixture.reload_log().display()
    );
    let (failure, message) = failure_of(fixture.apply(&candidate(NEW)));
    assert_eq!(failure, Some(Failure::ReloadFailed), "{message}");
    assert!(
        message.contains("Job for haproxy.service failed"),
        "{message}"
    );
    // The command fails every time, so the rollback's reload failed too, and says so apart.
    assert!(
        message.contains("then rolling back failed too"),
        "{message}"
    );
    assert!(message.contains(" rollback reload stderr "), "{message}");
    assert!(message.contains(" reload command stderr "), "{message}");
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(fixture.reloads(), 2, "the reload and the rollback's reload");
    assert!(!rejected_path(fixture.live()).exists());

    // The live file is the old config again, so the next run sees the change, not "unchanged".
    fixture.config.reload_command = format!("echo reload >> {}", fixture.reload_log().display());
    assert!(matches!(
        fixture.apply(&candidate(NEW)).unwrap(),
        Outcome::Applied { .. }
    ));
    assert_eq!(fixture.read_live(), NEW);
    assert_eq!(fixture.reloads(), 3);
}

#[test]
fn failed_reload_of_a_first_config_removes_it_again() {
    let mut fixture = Fixture::new();
    fixture.config.reload_command = "exit 1".to_string();
    let (failure, message) = failure_of(fixture.apply(&candidate(NEW)));
    assert_eq!(failure, Some(Failure::ReloadFailed), "{message}");
    assert!(!fixture.live().exists());
    assert_eq!(fixture.etc_files(), ["haproxy.cfg.lock"]);
}

#[test]
fn hanging_reload_is_killed_then_rolled_back() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    let hung_once = fixture.path("hung-once");
    // The first run hangs; the rollback's reload succeeds.
    fixture.config.reload_command = format!(
        "echo reload >> {log}; if [ ! -e {flag} ]; then touch {flag}; sleep 60; fi",
        log = fixture.reload_log().display(),
        flag = hung_once.display()
    );
    fixture.config.command_timeout = Duration::from_millis(500);
    let started = Instant::now();
    let (failure, message) = failure_of(fixture.apply(&candidate(NEW)));
    assert!(started.elapsed() < Duration::from_secs(30), "not bounded");
    assert_eq!(failure, Some(Failure::ReloadFailed), "{message}");
    assert!(message.contains("did not finish within"), "{message}");
    assert!(message.contains("put back and reloaded"), "{message}");
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(fixture.reloads(), 2);
}

#[test]
fn read_only_directory_fails_cleanly() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    // The lock lives elsewhere, so the failure is the config write itself.
    fixture.config.lock_file = fixture.path("apply.lock");
    let _immutable = Immutable::new(&fixture.path("etc"));
    let (failure, message) = failure_of(fixture.apply(&candidate(NEW)));
    assert_eq!(failure, Some(Failure::WriteFailed), "{message}");
    assert!(
        message.contains(&fixture.path("etc").display().to_string()),
        "{message}"
    );
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(fixture.reloads(), 0);
    assert_eq!(fixture.etc_files(), ["haproxy.cfg"]);
}

#[test]
fn full_disk_fails_cleanly() {
    let mut fixture = Fixture::new();
    fixture.config.lock_file = fixture.path("apply.lock");
    let _disk = SmallDisk::new(&fixture.path("etc"), "64k");
    fixture.write_live(OLD);
    let huge = NEW.repeat(20_000); // a few MiB: far more than the disk holds
    let (failure, message) = failure_of(fixture.apply(&candidate(&huge)));
    assert_eq!(failure, Some(Failure::WriteFailed), "{message}");
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(fixture.reloads(), 0);
    assert_eq!(fixture.etc_files(), ["haproxy.cfg"]);
}

#[test]
fn lock_held_elsewhere_times_out_and_changes_nothing() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fixture.config.lock_timeout = Duration::from_millis(300);
    let holder = fs::File::create(default_lock_file(fixture.live())).unwrap();
    holder.lock_exclusive().unwrap();
    let started = Instant::now();
    let (failure, message) = failure_of(fixture.apply(&candidate(NEW)));
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(failure, Some(Failure::LockTimeout), "{message}");
    assert!(message.contains("haproxy.cfg.lock"), "{message}");
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(fixture.reloads(), 0);

    // Released: the same apply now goes through.
    fs2::FileExt::unlock(&holder).unwrap();
    assert!(matches!(
        fixture.apply(&candidate(NEW)).unwrap(),
        Outcome::Applied { .. }
    ));
}

#[test]
fn two_applies_at_once_take_turns() {
    let mut fixture = Fixture::new();
    let log = fixture.path("turns.log");
    // The pause widens the window in which an unserialized second run would interleave.
    fixture.config.reload_command = format!(
        "echo start >> {log}; sleep 0.3; echo end >> {log}",
        log = log.display()
    );
    let fixture = Arc::new(fixture);
    let barrier = Arc::new(Barrier::new(2));
    let runs: Vec<_> = [OLD, NEW]
        .into_iter()
        .map(|text| {
            let (fixture, barrier) = (fixture.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                fixture.apply(&candidate(text))
            })
        })
        .collect();
    for run in runs {
        let outcome = run.join().unwrap().unwrap();
        assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    }
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "start\nend\nstart\nend\n",
        "the two reloads overlapped"
    );
    let live = fixture.read_live();
    assert!(live == OLD || live == NEW);
    // The first run's config was the second run's previous one.
    let first = fs::read_to_string(archive_path(fixture.live(), 1)).unwrap();
    assert_ne!(first, live);
}

#[test]
fn archive_keeps_the_newest_n_versions() {
    let mut fixture = Fixture::new();
    fixture.config.archive_versions = 3;
    let versions: Vec<String> = (1..=5).map(|n| format!("{OLD}# version {n}\n")).collect();
    for version in &versions {
        fixture.apply(&candidate(version)).unwrap();
    }
    assert_eq!(fixture.read_live(), versions[4]);
    for (number, expected) in [(1, 3), (2, 2), (3, 1)] {
        let archived = fs::read_to_string(archive_path(fixture.live(), number)).unwrap();
        assert_eq!(archived, versions[expected], "{number}");
    }
    assert!(!archive_path(fixture.live(), 4).exists());

    let mut none = Fixture::new();
    none.config.archive_versions = 0;
    none.write_live(OLD);
    none.apply(&candidate(NEW)).unwrap();
    assert_eq!(none.etc_files(), ["haproxy.cfg", "haproxy.cfg.lock"]);
}

#[test]
fn dry_run_prints_the_candidate_and_writes_nothing() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fixture.config.dry_run = true;
    let mut out = Vec::new();
    let outcome = apply::apply(&candidate(NEW), &fixture.config, &mut out).unwrap();
    assert_eq!(outcome, Outcome::DryRun);
    assert_eq!(String::from_utf8(out).unwrap(), NEW);
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(fixture.reloads(), 0);
    assert_eq!(fixture.etc_files(), ["haproxy.cfg"], "not even a lock file");
}

#[test]
fn dry_run_diff_shows_live_to_candidate_and_nothing_when_equal() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fixture.config.dry_run = true;
    fixture.config.diff = true;
    let mut out = Vec::new();
    apply::apply(&candidate(NEW), &fixture.config, &mut out).unwrap();
    let diff = String::from_utf8(out).unwrap();
    let live = fixture.live().display();
    assert!(
        diff.starts_with(&format!("--- {live} (live)\n+++ {live} (candidate)\n@@ ")),
        "{diff}"
    );
    assert!(diff.contains("\n-  server b 10.0.0.2:31000\n"), "{diff}");
    assert!(diff.contains("\n+backend api_10001\n"), "{diff}");
    assert_eq!(fixture.read_live(), OLD);

    let mut out = Vec::new();
    apply::apply(&candidate(OLD), &fixture.config, &mut out).unwrap();
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(fixture.reloads(), 0);
}

#[test]
fn diff_on_a_real_run_prints_what_was_applied() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fixture.config.diff = true;
    let mut out = Vec::new();
    let outcome = apply::apply(&candidate(NEW), &fixture.config, &mut out).unwrap();
    assert!(matches!(outcome, Outcome::Applied { .. }));
    let diff = String::from_utf8(out).unwrap();
    let live = fixture.live().display();
    assert!(
        diff.starts_with(&format!("--- {live} (previous)\n+++ {live} (applied)\n")),
        "{diff}"
    );
    assert!(diff.contains("\n+  server c 10.0.0.3:31000\n"), "{diff}");
    assert_eq!(fixture.read_live(), NEW);

    // Companions are diffed too; nothing is printed for what did not change.
    let mut out = Vec::new();
    apply::apply(&with_maps(&fixture, NEW, "new"), &fixture.config, &mut out).unwrap();
    let diff = String::from_utf8(out).unwrap();
    let domain_map = fixture.path("etc/domain2backend.map").display().to_string();
    let app_map = fixture.path("etc/app2backend.map").display().to_string();
    assert!(
        diff.starts_with(&format!("--- {domain_map} (previous)\n")),
        "{diff}"
    );
    assert!(
        diff.contains(&format!(
            "--- {app_map} (previous)\n+++ {app_map} (applied)\n"
        )),
        "{diff}"
    );
    assert!(diff.contains("\n+/web new\n"), "{diff}");
    assert!(!diff.contains("haproxy.cfg"), "{diff}");
}

#[test]
fn leftovers_of_a_killed_run_are_removed_by_the_next_change() {
    let fixture = Fixture::new();
    fixture.write_live(OLD);
    let leftover = fixture.path("etc/.haproxy.cfg.Ab3dE9.tmp");
    fs::write(&leftover, "half a config").unwrap();
    let unrelated = fixture.path("etc/.haproxy.cfg.tmp");
    fs::write(&unrelated, "not one of ours").unwrap();
    fixture.apply(&candidate(NEW)).unwrap();
    assert!(!leftover.exists());
    assert!(unrelated.exists());
}

/// A candidate with two map files: one changed, one new.
fn with_maps(fixture: &Fixture, config: &str, tag: &str) -> Candidate {
    Candidate {
        config: config.to_string(),
        companions: vec![
            (
                fixture.path("etc/domain2backend.map"),
                format!("web.example {tag}\n"),
            ),
            (fixture.path("etc/app2backend.map"), format!("/web {tag}\n")),
        ],
    }
}

#[test]
fn companions_are_in_place_for_validation_and_written() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    fs::write(fixture.path("etc/domain2backend.map"), "web.example old\n").unwrap();
    // Validation passes only if the new maps are already at their live paths.
    fixture.config.haproxy_bin = fixture.script(
        "haproxy-check-maps",
        &format!(
            "grep -q new {d} && grep -q new {a}",
            d = fixture.path("etc/domain2backend.map").display(),
            a = fixture.path("etc/app2backend.map").display()
        ),
    );
    let outcome = fixture.apply(&with_maps(&fixture, NEW, "new")).unwrap();
    let Outcome::Applied { summary } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(summary.contains("2 companion files updated"), "{summary}");
    let map = |name: &str| fs::read_to_string(fixture.path(name)).unwrap();
    assert_eq!(map("etc/domain2backend.map"), "web.example new\n");
    assert_eq!(map("etc/app2backend.map"), "/web new\n");

    // Only a map changes: still a change, applied and reloaded.
    let outcome = fixture.apply(&with_maps(&fixture, NEW, "newer")).unwrap();
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    assert_eq!(fixture.reloads(), 2);
    // And the same again is unchanged.
    assert_eq!(
        fixture.apply(&with_maps(&fixture, NEW, "newer")).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn companions_are_rolled_back_when_validation_or_reload_fails() {
    let mut fixture = Fixture::new();
    fixture.write_live(OLD);
    let domain_map = fixture.path("etc/domain2backend.map");
    let app_map = fixture.path("etc/app2backend.map");
    fs::write(&domain_map, "web.example old\n").unwrap();

    fixture.config.haproxy_bin = fixture.script("haproxy-no", "echo nope >&2; exit 1");
    let (failure, _) = failure_of(fixture.apply(&with_maps(&fixture, NEW, "new")));
    assert_eq!(failure, Some(Failure::ValidationFailed));
    assert_eq!(
        fs::read_to_string(&domain_map).unwrap(),
        "web.example old\n"
    );
    assert!(
        !app_map.exists(),
        "a map that did not exist before was left behind"
    );

    fixture.config.haproxy_bin = fixture.script("haproxy-yes", "exit 0");
    fixture.config.reload_command = "exit 1".to_string();
    let (failure, _) = failure_of(fixture.apply(&with_maps(&fixture, NEW, "new")));
    assert_eq!(failure, Some(Failure::ReloadFailed));
    assert_eq!(
        fs::read_to_string(&domain_map).unwrap(),
        "web.example old\n"
    );
    assert!(!app_map.exists());
    assert_eq!(fixture.read_live(), OLD);
    assert_eq!(
        fixture.etc_files(),
        [
            "domain2backend.map",
            "haproxy.cfg",
            "haproxy.cfg.1",
            "haproxy.cfg.lock",
            "haproxy.cfg.rejected"
        ]
    );
}

#[test]
fn real_haproxy_accepts_a_valid_config_and_shows_why_it_rejects_a_broken_one() {
    let mut fixture = Fixture::new();
    fixture.config.haproxy_bin = PathBuf::from(HAPROXY_BIN);
    let valid = http_config(
        Port::reserve().leak(),
        "web_10000",
        &[("a", "127.0.0.1:9".to_string())],
    );
    let outcome = fixture.apply(&candidate(&valid)).unwrap();
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");

    let broken = valid.replace(
        "  balance roundrobin\n",
        "  balance roundrobin\n  bogus_keyword here\n",
    );
    let (failure, message) = failure_of(fixture.apply(&candidate(&broken)));
    assert_eq!(failure, Some(Failure::ValidationFailed), "{message}");
    assert!(message.contains("[ALERT]"), "{message}");
    assert!(
        message.contains("unknown keyword 'bogus_keyword'"),
        "{message}"
    );
    let line = 1 + broken.lines().position(|l| l.contains("bogus")).unwrap();
    let at_line = format!("[{}:{line}]", rejected_path(fixture.live()).display());
    assert!(message.contains(&at_line), "{message}");
    assert_eq!(fixture.read_live(), valid);
    assert_eq!(
        fs::read_to_string(rejected_path(fixture.live())).unwrap(),
        broken
    );
    assert_eq!(fixture.reloads(), 1);
}

/// Requests through HAProxy until a backend named `expected` answers (bounded): after a reload
/// the old worker may still serve a request or two.
fn routed_to(port: u16, expected: &str) -> bool {
    wait_for(
        Duration::from_secs(10),
        || matches!(http_get(port, "/"), Ok((200, body)) if body == expected),
    )
}

#[test]
fn real_haproxy_follows_applied_changes_and_is_not_reloaded_when_unchanged() {
    let (a, b) = (Backend::start("A"), Backend::start("B"));
    let mut fixture = Fixture::new();
    fixture.config.haproxy_bin = PathBuf::from(HAPROXY_BIN);
    let reserved = Port::reserve();
    let port = reserved.number();
    let config_a = http_config(port, "web_10000", &[("a", a.address())]);
    let config_b = http_config(port, "web_10000", &[("b", b.address())]);

    // HAProxy starts on a placeholder config that routes nowhere useful.
    let placeholder = http_config(port, "web_10000", &[("none", "127.0.0.1:9".to_string())]);
    fixture.write_live(&placeholder);
    let haproxy = Haproxy::start(fixture.live(), &fixture.path("run"), port);
    fixture.config.reload_command = format!(
        "echo reload >> {} && {}",
        fixture.reload_log().display(),
        haproxy.reload_shell_command()
    );

    let outcome = fixture.apply(&candidate(&config_a)).unwrap();
    assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
    assert!(haproxy.wait_for_reloads(1), "{}", haproxy.show_proc());
    assert!(
        routed_to(port, "A"),
        "never reached A:\n{}",
        haproxy.log_text()
    );

    let outcome = fixture.apply(&candidate(&config_b)).unwrap();
    let Outcome::Applied { summary } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        summary.ends_with("backends +0 -0, servers +1 -1 (reloaded)"),
        "{summary}"
    );
    assert!(haproxy.wait_for_reloads(2), "{}", haproxy.show_proc());
    assert!(
        routed_to(port, "B"),
        "never reached B:\n{}",
        haproxy.log_text()
    );

    assert_eq!(
        fixture.apply(&candidate(&config_b)).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(fixture.reloads(), 2);
    assert_eq!(haproxy.reloads(), Some(2), "{}", haproxy.show_proc());
    assert!(matches!(http_get(port, "/"), Ok((200, body)) if body == "B"));
    assert!(b.served() >= 1);

    // The helper's own reload, through the master CLI, keeps serving what is on disk.
    haproxy.reload();
    assert!(haproxy.wait_for_reloads(3), "{}", haproxy.show_proc());
    assert!(routed_to(port, "B"), "lost B after a master CLI reload");
}
