//! Files beside the config, as root, through the built binary: a symbolic link planted under
//! any name the tool creates is never written (or read) through, the lock is 0600 and refused
//! when it is a link or someone else's, the run record is not world-readable, owner and mode
//! of the live config are kept, a directory others may write to is named in a warning, and a
//! config given as a symlink is updated through it (a relative one made absolute first).

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::backend::{http_get, Backend};
use support::haproxy::{free_port, wait_for, Haproxy, HAPROXY_BIN};
use support::marathon::FakeMarathon;
use support::ports::Port;
use support::sync::{Run, Sync};
use support::workspace::web_app;

/// A uid and gid no file of the test's own has (nobody on Debian).
const OTHER_ID: u32 = 65534;

/// What each stand-in victim holds; it must still hold exactly this afterwards.
const VICTIM_TEXT: &str = "root:$y$j9T$stand-in-for-/etc/shadow:19000:0:99999:7:::\n";

/// The shared workspace (its `templates/` keeps HAProxy on 127.0.0.1) with the config in
/// `etc/`, and victims (the files a planted link points to) at the top, outside `etc/`.
struct Workspace {
    shared: support::workspace::Workspace,
    marathon: FakeMarathon,
    _ports: Vec<Port>,
}

impl Workspace {
    fn new() -> Workspace {
        let shared = support::workspace::Workspace::new();
        fs::create_dir(shared.path("etc")).unwrap();
        let marathon = FakeMarathon::start();
        let ports = vec![Port::reserve(), Port::reserve()];
        let (apps, tasks) = web_app(ports[0].number(), &[ports[1].number()]);
        marathon.set_state(apps, tasks);
        Workspace {
            shared,
            marathon,
            _ports: ports,
        }
    }

    fn dir(&self) -> &Path {
        self.shared.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.shared.path(name)
    }

    fn etc(&self, name: &str) -> PathBuf {
        self.path("etc").join(name)
    }

    fn config(&self) -> PathBuf {
        self.etc("haproxy.cfg")
    }

    /// A live config the candidate differs from, so a run applies a change.
    fn write_live(&self) {
        fs::write(self.config(), "# the previous config\n").unwrap();
    }

    /// Plants `etc/<name>` as a symbolic link to a new victim file; returns the victim.
    fn plant(&self, name: &str) -> PathBuf {
        let victim = self.path(&format!("victim-of-{name}"));
        fs::write(&victim, VICTIM_TEXT).unwrap();
        std::os::unix::fs::symlink(&victim, self.etc(name)).unwrap();
        victim
    }

    /// Runs the binary once with `extra` flags (real `haproxy -c`, reload command `true`).
    fn run(&self, extra: &[&str]) -> Run {
        self.run_in(self.dir(), &self.config(), extra)
    }

    fn run_in(&self, cwd: &Path, config: &Path, extra: &[&str]) -> Run {
        Sync::new()
            .current_dir(cwd)
            .marathon(self.marathon.url())
            .group("external")
            .config(config)
            .templates(self.shared.templates())
            .args(["--haproxy-bin", HAPROXY_BIN])
            .reload_command("true")
            .args(["--dont-bind-http-https", "--timeout", "2"])
            .args(["--command-timeout", "10", "--lock-timeout", "2"])
            .args(extra)
            .run()
    }
}

fn assert_intact(victim: &Path) {
    assert_eq!(
        fs::read_to_string(victim).unwrap(),
        VICTIM_TEXT,
        "{} was written through a link",
        victim.display()
    );
}

fn is_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

// ------------------------------------------------ links planted beside the config

#[test]
fn links_planted_under_the_names_a_change_writes_are_replaced_never_written_through() {
    let workspace = Workspace::new();
    workspace.write_live();
    let victims = [
        workspace.plant("haproxy.cfg.reload-pending"),
        workspace.plant("haproxy.cfg.1"),
        workspace.plant("haproxy.cfg.2"),
        workspace.plant("haproxy.cfg.state"),
        workspace.plant("metrics.prom"),
        // A name like the temp files' (`.<name>.<random>.tmp`): removed as a leftover.
        workspace.plant(".haproxy.cfg.planted.tmp"),
    ];
    let metrics = workspace.etc("metrics.prom");

    let output = workspace.run(&[
        "--min-reload-interval",
        "1ms",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    output.assert_exit(0);
    let log = output.stderr;
    assert!(log.contains("applied"), "{log}");
    assert!(!log.contains("may be written by"), "{log}");
    for victim in &victims {
        assert_intact(victim);
    }
    assert!(!is_link(&workspace.etc("haproxy.cfg.reload-pending")));
    assert!(!workspace.etc("haproxy.cfg.reload-pending").exists());
    assert!(!is_link(&workspace.etc(".haproxy.cfg.planted.tmp")));
    assert!(!workspace.etc(".haproxy.cfg.planted.tmp").exists());
    assert_eq!(
        fs::read_to_string(workspace.etc("haproxy.cfg.1")).unwrap(),
        "# the previous config\n"
    );
    assert!(is_regular(&workspace.etc("haproxy.cfg.1")));
    // The planted `.1` moved up to `.2` as the link it was: renamed, never followed.
    assert!(is_link(&workspace.etc("haproxy.cfg.2")));
    assert!(is_regular(&workspace.etc("haproxy.cfg.state")));
    assert!(is_regular(&metrics));
    assert!(fs::read_to_string(&metrics)
        .unwrap()
        .contains("haproxy_marathon_sync_last_run_timestamp_seconds"));
}

#[test]
fn a_link_planted_as_the_rejected_candidate_is_replaced() {
    let workspace = Workspace::new();
    workspace.write_live();
    let victim = workspace.plant("haproxy.cfg.rejected");
    let refuse = workspace.path("haproxy-refuses");
    fs::write(
        &refuse,
        "#!/bin/sh\necho '[ALERT] refused for the test' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&refuse, fs::Permissions::from_mode(0o755)).unwrap();

    let output = workspace.run(&["--haproxy-bin", refuse.to_str().unwrap()]);
    output.assert_exit(6);
    assert_intact(&victim);
    let rejected = workspace.etc("haproxy.cfg.rejected");
    assert!(is_regular(&rejected));
    assert!(fs::read_to_string(&rejected)
        .unwrap()
        .contains("backend web_"));
    assert_eq!(
        fs::read_to_string(workspace.config()).unwrap(),
        "# the previous config\n"
    );
}

#[test]
fn a_link_in_place_of_a_map_file_is_refused_by_name_and_nothing_changes() {
    for map in ["app2backend.map", "domain2backend.map"] {
        let workspace = Workspace::new();
        workspace.write_live();
        let victim = workspace.plant(map);
        let output = workspace.run(&["--haproxy-map"]);
        output.assert_exit(7);
        let log = output.stderr;
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(
            log.contains(&format!(
                "{} is a symbolic link",
                workspace.etc(map).display()
            )),
            "{log}"
        );
        assert!(log.contains("remove the link"), "{log}");
        assert_intact(&victim);
        assert!(is_link(&workspace.etc(map)));
        assert_eq!(
            fs::read_to_string(workspace.config()).unwrap(),
            "# the previous config\n"
        );
    }
}

#[test]
fn a_link_in_place_of_the_run_record_is_named_and_left_alone() {
    let workspace = Workspace::new();
    let victim = workspace.plant("haproxy.cfg.status");
    let output = workspace.run(&[]);
    output.assert_exit(0);
    let log = output.stderr;
    assert!(
        log.contains(&format!(
            "could not update the run record: {} is a symbolic link",
            workspace.etc("haproxy.cfg.status").display()
        )),
        "{log}"
    );
    assert_intact(&victim);
    // `status` will not read through it either.
    let status = Sync::new()
        .args(["status", "--haproxy-config"])
        .arg(workspace.config())
        .run();
    assert!(!status.status.success());
    assert!(!status.stdout.contains("stand-in"));
    assert!(
        status.stderr.contains("is a symbolic link"),
        "{}",
        status.stderr
    );
}

// ------------------------------------------------------------------------ the lock

#[test]
fn a_link_in_place_of_the_lock_is_refused_with_exit_5() {
    let workspace = Workspace::new();
    workspace.write_live();
    let victim = workspace.plant("haproxy.cfg.lock");
    let output = workspace.run(&[]);
    output.assert_exit(5);
    let log = output.stderr;
    let errors: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(": error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains(&format!(
            "could not take the lock: refusing the lock file {}: it is a symbolic link",
            workspace.etc("haproxy.cfg.lock").display()
        )),
        "{log}"
    );
    assert_intact(&victim);
    assert_eq!(
        fs::read_to_string(workspace.config()).unwrap(),
        "# the previous config\n"
    );
}

#[test]
fn a_lock_file_someone_else_owns_is_refused_with_exit_5() {
    let workspace = Workspace::new();
    let lock = workspace.etc("haproxy.cfg.lock");
    fs::write(&lock, "").unwrap();
    std::os::unix::fs::chown(&lock, Some(OTHER_ID), Some(OTHER_ID)).unwrap();
    let output = workspace.run(&[]);
    output.assert_exit(5);
    let log = output.stderr;
    assert!(
        log.contains(&format!("it belongs to uid {OTHER_ID}")),
        "{log}"
    );
    assert!(!workspace.config().exists());
}

/// Whether uid/gid [`OTHER_ID`] can open `path` read-only (all `flock` needs to hold it).
fn other_user_can_open(path: &Path) -> bool {
    let status = Command::new("setpriv")
        .args([
            "--reuid",
            &OTHER_ID.to_string(),
            "--regid",
            &OTHER_ID.to_string(),
        ])
        .args(["--clear-groups", "sh", "-c", "exec 9< \"$0\""])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .expect("running setpriv");
    status.success()
}

#[test]
fn the_lock_file_is_0600_so_no_other_user_can_hold_it() {
    let workspace = Workspace::new();
    // Let the other user reach the directory, as on a real host (/etc/haproxy is 0755).
    fs::set_permissions(workspace.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(workspace.path("etc"), fs::Permissions::from_mode(0o755)).unwrap();
    let lock = workspace.etc("haproxy.cfg.lock");
    workspace.run(&[]).assert_exit(0);
    assert_eq!(mode(&lock), 0o600);
    assert!(!other_user_can_open(&lock));

    // A lock file an older version left 0644, which the other user could open and flock...
    fs::set_permissions(&lock, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(other_user_can_open(&lock), "the check itself can tell");
    // ... is tightened by the next run.
    workspace.run(&[]).assert_exit(0);
    assert_eq!(mode(&lock), 0o600);
    assert!(!other_user_can_open(&lock));
}

// ------------------------------------------------------- modes, owners, directories

#[test]
fn the_run_record_is_not_world_readable_and_keeps_the_group_it_was_given() {
    let workspace = Workspace::new();
    let record = workspace.etc("haproxy.cfg.status");
    workspace.run(&[]).assert_exit(0);
    assert_eq!(mode(&record), 0o640);

    // An operator lets a monitoring group read it; a record left 0644 is tightened.
    std::os::unix::fs::chown(&record, None, Some(OTHER_ID)).unwrap();
    fs::set_permissions(&record, fs::Permissions::from_mode(0o644)).unwrap();
    workspace.run(&[]).assert_exit(0);
    assert_eq!(mode(&record), 0o640);
    assert_eq!(fs::metadata(&record).unwrap().gid(), OTHER_ID);
    assert!(fs::read_to_string(&record)
        .unwrap()
        .contains("\"runs_total\""));
}

#[test]
fn owner_and_mode_of_the_live_config_carry_over_to_the_new_one_and_the_archive() {
    let workspace = Workspace::new();
    workspace.write_live();
    std::os::unix::fs::chown(workspace.config(), Some(OTHER_ID), Some(OTHER_ID)).unwrap();
    fs::set_permissions(workspace.config(), fs::Permissions::from_mode(0o640)).unwrap();
    workspace.run(&[]).assert_exit(0);
    for path in [workspace.config(), workspace.etc("haproxy.cfg.1")] {
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(
            (metadata.uid(), metadata.gid(), metadata.mode() & 0o7777),
            (OTHER_ID, OTHER_ID, 0o640),
            "{}",
            path.display()
        );
    }
    assert!(fs::read_to_string(workspace.config())
        .unwrap()
        .contains("backend web_"));
}

#[test]
fn a_config_directory_others_may_write_to_is_named_with_its_mode() {
    for (dir_mode, who) in [
        (0o775, "may be written by its group"),
        (
            0o1777,
            "may be written by its group and others (the sticky bit",
        ),
    ] {
        let workspace = Workspace::new();
        let etc = workspace.path("etc");
        fs::set_permissions(&etc, fs::Permissions::from_mode(dir_mode)).unwrap();
        let output = workspace.run(&[]);
        output.assert_exit(0);
        let log = output.stderr;
        let expected = format!("{} (mode {dir_mode:04o}) {who}", etc.display());
        assert!(log.contains(&expected), "{log}");
        assert!(
            log.contains(&format!("chmod go-w {}", etc.display())),
            "{log}"
        );
    }
}

// ----------------------------------------------------- a config given as a symlink

#[test]
fn a_symlinked_config_is_updated_through_the_link_and_haproxy_reloads_what_it_points_to() {
    let workspace = Workspace::new();
    fs::create_dir(workspace.path("real")).unwrap();
    let link = workspace.config();
    // Relative, and dangling until the first run creates the file it points to.
    std::os::unix::fs::symlink("../real/haproxy.cfg", &link).unwrap();
    let target = workspace.path("real/haproxy.cfg");
    let service_port = free_port();
    let (a, b) = (Backend::start("task-a"), Backend::start("task-b"));
    let port_of = |backend: &Backend| {
        backend
            .address()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (apps, tasks) = web_app(service_port, &[port_of(&a)]);
    workspace.marathon.set_state(apps, tasks);

    workspace.run(&[]).assert_exit(0);
    assert!(is_link(&link));
    assert_eq!(
        fs::read_link(&link).unwrap(),
        PathBuf::from("../real/haproxy.cfg")
    );
    assert!(is_regular(&target));
    assert!(fs::read_to_string(&target).unwrap().contains(&a.address()));

    // HAProxy reads the config through the link, as an operator's unit would.
    let haproxy = Haproxy::start(&link, &workspace.path("run"), service_port);
    assert!(wait_for(Duration::from_secs(15), || {
        matches!(http_get(service_port, "/"), Ok((200, body)) if body == "task-a")
    }));
    let (apps, tasks) = web_app(service_port, &[port_of(&b)]);
    workspace.marathon.set_state(apps, tasks);
    let output = workspace.run(&[
        "--force",
        "--reload-command",
        &haproxy.reload_shell_command(),
    ]);
    output.assert_exit(0);
    assert!(haproxy.wait_for_reloads(1), "{}", haproxy.log_text());
    assert!(
        wait_for(Duration::from_secs(15), || {
            matches!(http_get(service_port, "/"), Ok((200, body)) if body == "task-b")
        }),
        "HAProxy did not load the updated file behind the link"
    );

    assert_eq!(
        fs::read_link(&link).unwrap(),
        PathBuf::from("../real/haproxy.cfg"),
        "the link is kept"
    );
    let now = fs::read_to_string(&target).unwrap();
    assert!(now.contains(&b.address()) && !now.contains(&a.address()));
    // The files the tool keeps stay beside the link; the target's directory holds only it.
    assert_eq!(names_in(&workspace.path("real")), ["haproxy.cfg"]);
    assert_eq!(
        names_in(&workspace.path("etc")),
        [
            "haproxy.cfg",
            "haproxy.cfg.1",
            "haproxy.cfg.last-good",
            "haproxy.cfg.lock",
            "haproxy.cfg.status"
        ]
    );
    assert!(fs::read_to_string(workspace.etc("haproxy.cfg.1"))
        .unwrap()
        .contains(&a.address()));
}

#[test]
fn a_config_link_someone_else_made_is_not_followed() {
    let workspace = Workspace::new();
    let victim = workspace.plant("haproxy.cfg");
    std::os::unix::fs::lchown(workspace.config(), Some(OTHER_ID), Some(OTHER_ID)).unwrap();
    let output = workspace.run(&[]);
    output.assert_exit(7);
    let log = output.stderr;
    assert!(
        log.contains(&format!(
            "not following the symbolic link {}: it belongs to uid {OTHER_ID}",
            workspace.config().display()
        )),
        "{log}"
    );
    assert_intact(&victim);
    assert!(is_link(&workspace.config()));
}

#[test]
fn a_relative_config_path_gives_absolute_map_paths() {
    let workspace = Workspace::new();
    let cwd = workspace.path("etc");
    let output = workspace.run_in(&cwd, Path::new("haproxy.cfg"), &["--haproxy-map"]);
    output.assert_exit(0);
    let config = fs::read_to_string(cwd.join("haproxy.cfg")).unwrap();
    let absolute = cwd.canonicalize().unwrap();
    let expected = format!("map({}/app2backend.map)", absolute.display());
    assert!(config.contains(&expected), "{config}");
    assert!(!config.contains("map(/app2backend.map)"), "{config}");
    assert!(is_regular(&cwd.join("app2backend.map")));
    assert!(is_regular(&cwd.join("domain2backend.map")));
    assert!(output.stderr.contains(&format!(
        "applied {}",
        absolute.join("haproxy.cfg").display()
    )));
}

#[test]
fn a_config_linked_into_another_filesystem_is_updated_there_and_its_rejects_kept_beside_the_link() {
    let workspace = Workspace::new();
    // /dev/shm is a tmpfs on Debian: the target's directory is then another filesystem than
    // the link's, where the staged candidate cannot be renamed to `<config>.rejected`.
    let elsewhere = tempfile::tempdir_in("/dev/shm").unwrap();
    let target = elsewhere.path().join("haproxy.cfg");
    fs::write(&target, "# the previous config\n").unwrap();
    std::os::unix::fs::symlink(&target, workspace.config()).unwrap();

    let refuse = workspace.path("haproxy-refuses");
    fs::write(
        &refuse,
        "#!/bin/sh\necho '[ALERT] refused for the test' >&2\nexit 1\n",
    )
    .unwrap();
    fs::set_permissions(&refuse, fs::Permissions::from_mode(0o755)).unwrap();
    let output = workspace.run(&["--haproxy-bin", refuse.to_str().unwrap()]);
    output.assert_exit(6);
    let log = output.stderr;
    let rejected = workspace.etc("haproxy.cfg.rejected");
    assert!(
        log.contains(&format!(
            "the rejected candidate is kept at {}",
            rejected.display()
        )),
        "{log}"
    );
    assert!(fs::read_to_string(&rejected)
        .unwrap()
        .contains("backend web_"));
    assert_eq!(
        fs::read_to_string(&target).unwrap(),
        "# the previous config\n"
    );
    assert_eq!(
        names_in(elsewhere.path()),
        ["haproxy.cfg"],
        "no temp file left"
    );

    workspace.run(&[]).assert_exit(0);
    assert!(is_link(&workspace.config()));
    assert!(fs::read_to_string(&target)
        .unwrap()
        .contains("backend web_"));
    assert_eq!(names_in(elsewhere.path()), ["haproxy.cfg"]);
    assert!(
        !rejected.exists(),
        "a stale reject goes once a newer config is live"
    );
}
