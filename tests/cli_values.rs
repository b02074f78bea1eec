//! Flag values → `Config`, table-driven (consul-template's cli_test.go style), and the same
//! rules through the binary where the environment is involved: booleans as a settings file
//! writes them, empty values as unset, errors naming the variable a bad value came from, and
//! durations that cannot work refused as usage errors (exit 2) naming the flag.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use haproxy_marathon_sync::cli::Args;
use haproxy_marathon_sync::config::Config;

const BIN: &str = env!("CARGO_BIN_EXE_haproxy-marathon-sync");

fn config(args: &[&str]) -> Result<Config, String> {
    let mut argv = vec!["haproxy-marathon-sync", "--group", "external"];
    argv.extend_from_slice(args);
    let args = Args::from_words(argv)?;
    args.into_config(&BTreeMap::new())
        .map_err(|error| format!("{error:#}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn durations_map_onto_the_config() {
    type Pick = fn(&Config) -> Duration;
    let cases: &[(&[&str], Pick, Duration)] = &[
        (
            &["--timeout", "2.5"],
            |c| c.fetch.request_timeout,
            Duration::from_millis(2500),
        ),
        (
            &["--run-timeout", "1m"],
            |c| c.run_deadline,
            Duration::from_secs(60),
        ),
        (
            &["--command-timeout", "500ms"],
            |c| c.apply.command_timeout,
            Duration::from_millis(500),
        ),
        (
            &["--lock-timeout", "0"],
            |c| c.apply.lock_timeout,
            Duration::ZERO,
        ),
        (
            &["--min-reload-interval", "0"],
            |c| c.apply.min_reload_interval,
            Duration::ZERO,
        ),
        (&["--splay", "20s"], |c| c.splay, Duration::from_secs(20)),
        (&["--splay", "0"], |c| c.splay, Duration::ZERO),
        (&[], |c| c.splay, Duration::ZERO),
        (
            &["--interval", "5s"],
            |c| c.interval.unwrap(),
            Duration::from_secs(5),
        ),
    ];
    for (args, pick, expected) in cases {
        let config = config(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(pick(&config), *expected, "{args:?}");
    }
}

#[test]
fn durations_that_cannot_work_are_refused_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--timeout", "0"], "--timeout: must be longer than zero"),
        (
            &["--command-timeout", "0"],
            "--command-timeout: must be longer than zero",
        ),
        (
            &["--run-timeout", "0s"],
            "--run-timeout: must be longer than zero",
        ),
        (
            &["--interval", "0s"],
            "--interval: must be longer than zero",
        ),
        (
            &["--sse", "--sse-timeout", "0"],
            "--sse-timeout: must be longer than zero",
        ),
        (&["--timeout=-1"], "--timeout: '-1' is not a duration"),
        (
            &["--lock-timeout", "soon"],
            "--lock-timeout: 'soon' is not a duration",
        ),
        (
            &["--splay", "50s"],
            "--splay: must be shorter than --run-timeout",
        ),
        (
            &["--splay", "2m", "--run-timeout", "1m"],
            "--splay: must be shorter",
        ),
    ];
    for (args, expected) in cases {
        let error = config(args).expect_err(&format!("{args:?} must be refused"));
        assert!(error.starts_with(expected), "{args:?}: {error}");
    }
}

#[test]
fn boolean_flags_on_the_command_line_take_no_value() {
    let config = config(&["--strict-mode", "--force", "--dry-run"]).unwrap();
    assert!(config.model.strict_mode && config.apply.force && config.apply.dry_run);
    let plain = self::config(&[]).unwrap();
    assert!(!plain.model.strict_mode && !plain.apply.force && !plain.apply.dry_run);
}

/// The binary with only `env` in its environment, on the example snapshot, writing into `dir`.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    let mut command = Command::new(BIN);
    command
        .arg("--marathon")
        .arg(snapshot)
        .arg("--haproxy-config")
        .arg(dir.join("haproxy.cfg"))
        .args(["--skip-validation", "--reload-command", "true"])
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HAPROXY_MARATHON_SYNC_GROUP", "external")
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// DRY_RUN from the environment, seen by its effect: a dry run prints the config and writes
/// nothing; a real run writes it.
#[test]
fn boolean_variables_take_what_a_settings_file_says() {
    let cases = [
        ("true", true),
        ("TRUE", true),
        ("yes", true),
        ("Yes", true),
        ("on", true),
        ("1", true),
        ("false", false),
        ("no", false),
        ("NO", false),
        ("off", false),
        ("0", false),
        ("", false),
    ];
    for (value, dry) in cases {
        let dir = tempfile::tempdir().unwrap();
        let output = run(dir.path(), &[], &[("HAPROXY_MARATHON_SYNC_DRY_RUN", value)]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "DRY_RUN={value:?}: {}",
            text(&output.stderr)
        );
        let written = dir.path().join("haproxy.cfg").exists();
        assert_eq!(written, !dry, "DRY_RUN={value:?}");
        assert_eq!(
            text(&output.stdout).contains("\nbackend "),
            dry,
            "DRY_RUN={value:?}"
        );
    }
}

#[test]
fn a_bad_boolean_variable_is_a_usage_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        dir.path(),
        &[],
        &[("HAPROXY_MARATHON_SYNC_STRICT_MODE", "maybe")],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("'maybe' in the environment variable HAPROXY_MARATHON_SYNC_STRICT_MODE"),
        "{stderr}"
    );
    assert!(stderr.contains("yes/no"), "{stderr}");
    assert!(!dir.path().join("haproxy.cfg").exists());

    // On the command line, clap's own words name the flag as usual.
    let output = run(dir.path(), &["--max-server-loss", "lots"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--max-server-loss"));
}

#[test]
fn empty_variables_mean_unset() {
    let dir = tempfile::tempdir().unwrap();
    let empty = [
        ("HAPROXY_MARATHON_SYNC_TIMEOUT", ""),
        ("HAPROXY_MARATHON_SYNC_INTERVAL", ""),
        ("HAPROXY_MARATHON_SYNC_SSE", ""),
        ("HAPROXY_MARATHON_SYNC_TEMPLATES", ""),
        ("HAPROXY_MARATHON_SYNC_LOCK_FILE", ""),
        ("HAPROXY_MARATHON_SYNC_SPLAY", ""),
        ("HAPROXY_MARATHON_SYNC_DCOS_AUTH_CREDENTIALS", ""),
    ];
    let output = run(dir.path(), &[], &empty);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        dir.path().join("haproxy.cfg").exists(),
        "one run, not a loop"
    );
    assert!(
        dir.path().join("haproxy.cfg.lock").exists(),
        "the default lock file"
    );
}

#[test]
fn a_duration_that_cannot_work_is_exit_2_naming_the_variable_or_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    // (arguments, environment, what stderr says)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            &["--command-timeout", "0"],
            &[],
            "error: --command-timeout: must be longer than zero",
        ),
        (
            &["--interval", "0s"],
            &[],
            "error: --interval: must be longer than zero",
        ),
        (
            &[],
            &[("HAPROXY_MARATHON_SYNC_TIMEOUT", "0")],
            "error: HAPROXY_MARATHON_SYNC_TIMEOUT (--timeout): must be longer than zero",
        ),
        (
            &[],
            &[("HAPROXY_MARATHON_SYNC_RUN_TIMEOUT", "forever")],
            "error: HAPROXY_MARATHON_SYNC_RUN_TIMEOUT (--run-timeout): 'forever' is not a duration",
        ),
    ];
    for (args, env, expected) in cases {
        let output = run(dir.path(), args, env);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
    }
    assert!(!dir.path().join("haproxy.cfg").exists(), "nothing ran");
}

/// A splay close to the run timeout still ends the run within it: the wait counts against the
/// deadline, so a Marathon that never answers is given up on at the run timeout, not after the
/// wait plus the run timeout. A dry run does not wait at all.
#[test]
fn a_run_with_a_splay_still_ends_within_the_run_timeout() {
    use support::marathon::{Behaviour, FakeMarathon};
    let marathon = FakeMarathon::start();
    marathon.set_behaviour(Behaviour::Hang);
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = Command::new(BIN)
        .args(["--marathon", &marathon.url(), "--group", "external"])
        .args([
            "--splay",
            "2900ms",
            "--run-timeout",
            "3s",
            "--timeout",
            "60",
        ])
        .args(["--log-level", "debug", "--haproxy-config"])
        .arg(dir.path().join("haproxy.cfg"))
        .env_clear()
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("(--splay) before the first run"),
        "{stderr}"
    );
    assert!(stderr.contains("run's deadline"), "{stderr}");
    // The run timeout, plus room for starting a process; not the splay on top of it.
    assert!(
        took < Duration::from_secs(4),
        "the run took {took:?}: {stderr}"
    );

    let started = std::time::Instant::now();
    let output = run(dir.path(), &["--splay", "40s", "--dry-run"], &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a dry run does not splay"
    );
}

#[test]
fn longhelp_says_where_the_reference_is_and_needs_no_group() {
    let output = Command::new(BIN)
        .arg("--longhelp")
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("man haproxy-marathon-sync"), "{stdout}");
    assert!(stdout.contains("REFERENCE.md"), "{stdout}");
}
