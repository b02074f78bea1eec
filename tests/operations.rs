//! What an operator relies on around a run: shell completions generated from the CLI, log lines
//! fit for cron and journald (quiet when nothing changed, JSON that parses), and the packaged
//! environment file keeping up with the flags.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::sync::{Run, Sync};

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The binary with a clean environment, so a HAPROXY_MARATHON_SYNC_* variable of the machine
/// running the tests cannot change what is tested.
fn binary() -> Sync {
    Sync::new()
}

#[test]
fn completions_for_each_shell_know_the_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let output = binary().args(["completions", shell]).run();
        assert!(
            output.status.success(),
            "{shell}: {}",
            output.stderr.clone()
        );
        let script = output.stdout.clone();
        assert!(
            script.contains("--haproxy-config") || script.contains("-l haproxy-config"),
            "{shell} completion lacks --haproxy-config:\n{script}"
        );
        assert!(
            script.contains("log-level"),
            "{shell} completion lacks --log-level"
        );
    }
}

#[test]
fn bash_completion_script_parses() {
    let output = binary().args(["completions", "bash"]).run();
    assert!(output.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("haproxy-marathon-sync.bash");
    std::fs::write(&script, &output.stdout).unwrap();
    let check = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let output = binary().args(["completions", "tcsh"]).run();
    assert_eq!(output.code(), Some(2), "{}", output.stderr.clone());
}

/// A run of the example cluster (a saved snapshot) into a temporary config; no HAProxy needed.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        Workspace {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("haproxy.cfg")
    }

    fn run(&self, extra: &[&str]) -> Run {
        let run = binary()
            .marathon(repo_path("examples/cluster"))
            .group("external")
            .config(self.config())
            .arg("--skip-validation")
            .reload_command("true")
            .args(extra)
            .run();
        run.assert_success();
        run
    }
}

#[test]
fn default_level_reports_a_change_and_is_silent_when_nothing_changed() {
    let workspace = Workspace::new();
    let first = workspace.run(&[]);
    let stderr = first.stderr.clone();
    assert!(
        stderr.starts_with("haproxy-marathon-sync: applied ") && stderr.lines().count() == 1,
        "one summary line: {stderr}"
    );
    let second = workspace.run(&[]);
    assert_eq!(second.stderr.clone(), "", "an unchanged run is silent");
    assert_eq!(second.stdout.clone(), "");

    let debug = workspace.run(&["--log-level", "debug"]);
    assert!(
        debug.stderr.clone().contains("debug: unchanged "),
        "debug reports every run: {}",
        debug.stderr.clone()
    );
}

#[test]
fn warn_level_leaves_out_the_change_summary() {
    let workspace = Workspace::new();
    let output = workspace.run(&["--log-level", "WARNING"]);
    assert_eq!(output.stderr.clone(), "");
    assert!(workspace.config().exists(), "the change was still applied");
}

#[test]
fn json_lines_parse_and_carry_level_msg_time_and_fields() {
    let workspace = Workspace::new();
    let output = workspace.run(&["--log-format", "json", "--skip-config-cleanup"]);
    let lines: Vec<Value> = output
        .stderr
        .clone()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let note = &lines[0];
    assert_eq!(note["level"], "warn");
    assert_eq!(note["flag"], "--skip-config-cleanup");
    let applied = &lines[1];
    assert_eq!(applied["level"], "info");
    assert_eq!(applied["outcome"], "applied");
    assert_eq!(applied["config"], workspace.config().display().to_string());
    assert!(applied["msg"].as_str().unwrap().starts_with("applied "));
    let time = applied["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {time}"
    );
}

#[test]
fn a_failed_run_logs_one_json_error_with_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let output = binary()
        .arg("--marathon")
        .arg(dir.path().join("no-such-snapshot"))
        .args(["--group", "external", "--log-format", "json"])
        .arg("--haproxy-config")
        .arg(dir.path().join("haproxy.cfg"))
        .run();
    assert_eq!(output.code(), Some(3), "{}", output.stderr.clone());
    let stderr = output.stderr.clone();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line: Value = serde_json::from_str(stderr.trim()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["exit_code"], 3);
    assert_eq!(line["failure"], "marathon_unavailable");
    assert!(line["msg"].as_str().unwrap().contains("no-such-snapshot"));
}

#[test]
fn a_marathon_lb_format_string_is_accepted_and_noted() {
    let workspace = Workspace::new();
    let output = workspace.run(&["--log-format", "%(asctime)s %(message)s"]);
    let stderr = output.stderr.clone();
    assert!(
        stderr.contains("warning: --log-format '%(asctime)s %(message)s'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("haproxy-marathon-sync: applied "),
        "{stderr}"
    );
}

/// Every setting a flag has must be in /etc/default/haproxy-marathon-sync, commented, so the
/// file the package installs documents the whole configuration.
#[test]
fn the_packaged_environment_file_names_every_variable_of_help() {
    let help = binary().arg("--help").run();
    let help = help.stdout.clone();
    let default_file = std::fs::read_to_string(repo_path("packaging/default")).unwrap();
    let missing: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .filter(|name| !default_file.contains(&format!("{name}=")))
        .collect();
    assert!(
        missing.is_empty(),
        "packaging/default lacks {missing:?} (add each, commented, with its default)"
    );
    for line in default_file.lines() {
        let line = line.trim();
        assert!(
            line.is_empty() || line.starts_with('#') || line.split_once('=').is_some(),
            "packaging/default: not KEY=value: {line}"
        );
    }
}

/// Under systemd, stderr is the journal stream that JOURNAL_STREAM names: lines then carry their
/// syslog priority for journald. A process that merely inherited the variable (its stderr goes
/// elsewhere) must not.
#[test]
fn lines_carry_a_syslog_priority_only_when_stderr_is_the_journal_stream() {
    use std::os::unix::fs::MetadataExt;
    let workspace = Workspace::new();
    let stderr_path = workspace.dir.path().join("stderr");
    let run_with = |journal_stream: &dyn Fn(&std::fs::Metadata) -> String| {
        let file = std::fs::File::create(&stderr_path).unwrap();
        let meta = file.metadata().unwrap();
        std::fs::remove_file(workspace.config()).ok();
        let status = binary()
            .arg("--marathon")
            .arg(repo_path("examples/cluster"))
            .args(["--group", "external", "--haproxy-config"])
            .arg(workspace.config())
            .args(["--skip-validation", "--reload-command", "true"])
            .env("JOURNAL_STREAM", journal_stream(&meta))
            .run_with_stderr(file);
        assert!(status.success());
        std::fs::read_to_string(&stderr_path).unwrap()
    };
    let journal = run_with(&|meta| format!("{}:{}", meta.dev(), meta.ino()));
    assert!(
        journal.starts_with("<6>haproxy-marathon-sync: applied "),
        "{journal}"
    );
    let elsewhere = run_with(&|meta| format!("{}:{}", meta.dev(), meta.ino() + 1));
    assert!(
        elsewhere.starts_with("haproxy-marathon-sync: applied "),
        "{elsewhere}"
    );
}

/// The value of the sample `name{labels}` in a parsed textfile.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = scrape.samples.iter().find(|s| {
        s.metric == name && label.is_none_or(|(key, value)| s.labels.get(key) == Some(value))
    });
    match found.map(|s| &s.value) {
        Some(prometheus_parse::Value::Gauge(v))
        | Some(prometheus_parse::Value::Counter(v))
        | Some(prometheus_parse::Value::Untyped(v)) => *v,
        other => panic!("no sample {name} {label:?}: {other:?}"),
    }
}

fn scrape(path: &Path) -> prometheus_parse::Scrape {
    let text = std::fs::read_to_string(path).unwrap();
    let lines = text.lines().map(|line| Ok(line.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("a valid Prometheus textfile")
}

#[test]
fn the_metrics_file_parses_and_carries_counters_across_runs() {
    let workspace = Workspace::new();
    let metrics = workspace
        .dir
        .path()
        .join("metrics/haproxy_marathon_sync.prom");
    std::fs::create_dir(metrics.parent().unwrap()).unwrap();
    let flag = ["--metrics-file", metrics.to_str().unwrap()];
    workspace.run(&flag);
    let first = scrape(&metrics);
    assert_eq!(
        sample(&first, "haproxy_marathon_sync_runs_total", None),
        1.0
    );
    assert_eq!(
        sample(&first, "haproxy_marathon_sync_changes_applied_total", None),
        1.0
    );
    assert_eq!(
        sample(&first, "haproxy_marathon_sync_reloads_total", None),
        1.0
    );
    assert_eq!(
        sample(&first, "haproxy_marathon_sync_last_run_success", None),
        1.0
    );
    assert_eq!(
        sample(
            &first,
            "haproxy_marathon_sync_last_run_outcome",
            Some(("outcome", "applied"))
        ),
        1.0
    );
    // The example cluster: /shop/web, /shop/api (two ports) and /data/postgres in group external.
    assert_eq!(sample(&first, "haproxy_marathon_sync_apps", None), 3.0);
    assert_eq!(sample(&first, "haproxy_marathon_sync_backends", None), 4.0);
    assert_eq!(sample(&first, "haproxy_marathon_sync_servers", None), 7.0);
    assert!(
        sample(
            &first,
            "haproxy_marathon_sync_phase_duration_seconds",
            Some(("phase", "fetch"))
        ) > 0.0
    );
    assert!(
        sample(
            &first,
            "haproxy_marathon_sync_last_run_timestamp_seconds",
            None
        ) > 1.7e9
    );

    workspace.run(&flag);
    let failed = binary()
        .args(["--marathon", "/nonexistent/snapshot", "--group", "external"])
        .arg("--haproxy-config")
        .arg(workspace.config())
        .args(flag)
        .run();
    assert_eq!(failed.code(), Some(3));
    let third = scrape(&metrics);
    assert_eq!(
        sample(&third, "haproxy_marathon_sync_runs_total", None),
        3.0
    );
    assert_eq!(
        sample(&third, "haproxy_marathon_sync_changes_applied_total", None),
        1.0
    );
    assert_eq!(
        sample(&third, "haproxy_marathon_sync_last_run_success", None),
        0.0
    );
    assert_eq!(
        sample(
            &third,
            "haproxy_marathon_sync_failures_total",
            Some(("reason", "marathon_unavailable"))
        ),
        1.0
    );
    let leftovers: Vec<_> = std::fs::read_dir(metrics.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "only the textfile, no temp files: {leftovers:?}"
    );
}

#[test]
fn status_shows_the_record_and_check_age_says_when_it_is_stale() {
    let workspace = Workspace::new();
    let status = |extra: &[&str]| {
        binary()
            .arg("status")
            .arg("--haproxy-config")
            .arg(workspace.config())
            .args(extra)
            .run()
    };
    std::fs::write(workspace.config(), "").unwrap(); // a fresh install: a config, no record
    let never = status(&["--check-age", "5m"]);
    assert_eq!(
        never.code(),
        Some(11),
        "no sync yet is stale: {}",
        never.stderr.clone()
    );

    workspace.run(&[]);
    let shown = status(&[]);
    assert!(shown.status.success(), "{}", shown.stderr.clone());
    let shown = shown.stdout.clone();
    assert!(
        shown.contains("last run:") && shown.contains("applied"),
        "{shown}"
    );
    assert!(shown.contains("last error:   none"), "{shown}");

    let json: Value = serde_json::from_str(&status(&["--json"]).stdout).unwrap();
    assert_eq!(json["runs_total"], 1);
    assert_eq!(json["last_outcome"], "applied");
    assert!(json["last_success_age_seconds"].as_f64().unwrap() < 60.0);

    assert_eq!(status(&["--check-age", "5m"]).code(), Some(0));
    let strict = status(&["--check-age", "0s"]);
    assert_eq!(strict.code(), Some(11), "{}", strict.stderr.clone());
    assert!(strict.stderr.clone().contains("older than 0s"));
}

/// The README's cron line is the one the package installs (commented out there), so a reader who
/// copies it gets the same one-run-per-minute behaviour, INTERVAL and SSE unset included.
#[test]
fn the_readme_cron_line_is_the_packaged_one() {
    let cron = std::fs::read_to_string(repo_path("packaging/haproxy-marathon-sync.cron")).unwrap();
    let packaged = cron
        .lines()
        .find_map(|line| {
            line.strip_prefix('#')
                .filter(|rest| rest.starts_with("* * * * * "))
        })
        .expect("a commented once-a-minute line in the cron file");
    assert!(
        packaged.contains("unset HAPROXY_MARATHON_SYNC_INTERVAL HAPROXY_MARATHON_SYNC_SSE"),
        "{packaged}"
    );
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let readme_lines: Vec<&str> = readme
        .split("```cron\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .flat_map(str::lines)
        .filter(|line| line.contains("/etc/default/haproxy-marathon-sync"))
        .collect();
    assert_eq!(
        readme_lines,
        vec![packaged],
        "README.md's cron line drifted"
    );
}

/// Calls the generated bash completion function as bash would for `words` (the last one being
/// completed) and returns what it offers.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|word| format!("'{word}'")).collect();
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=({})\n\
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}\n\
         _haproxy__marathon__sync haproxy-marathon-sync \"${{COMP_WORDS[COMP_CWORD]}}\" \
         \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" ")
    );
    let output = Command::new("bash")
        .arg("-c")
        .arg(program)
        .output()
        .unwrap();
    assert!(output.status.success(), "bash: {}", text(&output.stderr));
    text(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_their_flags() {
    let output = binary().args(["completions", "bash"]).run();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("haproxy-marathon-sync.bash");
    std::fs::write(&script, &output.stdout).unwrap();

    let status = bash_completes(&script, &["haproxy-marathon-sync", "status", "--"]);
    for flag in ["--json", "--check-age", "--haproxy-config"] {
        assert!(
            status.contains(&flag.to_string()),
            "status --<TAB>: {status:?}"
        );
    }
    assert!(
        !status.contains(&"--group".to_string()),
        "only status's flags: {status:?}"
    );
    let shells = bash_completes(&script, &["haproxy-marathon-sync", "completions", ""]);
    for shell in ["bash", "zsh", "fish"] {
        assert!(
            shells.contains(&shell.to_string()),
            "completions <TAB>: {shells:?}"
        );
    }
    let after_flags = bash_completes(
        &script,
        &[
            "haproxy-marathon-sync",
            "--haproxy-config",
            "/x",
            "status",
            "--j",
        ],
    );
    assert_eq!(after_flags, vec!["--json"]);
    let top = bash_completes(&script, &["haproxy-marathon-sync", "st"]);
    assert_eq!(top, vec!["status"]);
    let flags = bash_completes(&script, &["haproxy-marathon-sync", "--spl"]);
    assert_eq!(flags, vec!["--splay"]);
}

/// zsh and fish are not on the test machine; their scripts must still know the subcommands'
/// own flags.
#[test]
fn zsh_and_fish_scripts_know_the_subcommands_flags() {
    for shell in ["zsh", "fish"] {
        let output = binary().args(["completions", shell]).run();
        let script = text(&output.stdout);
        for needle in ["status", "check-age", "json", "completions", "powershell"] {
            assert!(script.contains(needle), "{shell} script lacks {needle}");
        }
    }
}

#[test]
fn the_man_synopsis_lists_every_form() {
    let man = std::fs::read_to_string(repo_path("man/haproxy-marathon-sync.1")).unwrap();
    let synopsis = man
        .split(".SH SYNOPSIS\n")
        .nth(1)
        .and_then(|rest| rest.split("\n.SH ").next())
        .expect("a SYNOPSIS section")
        .replace("\\-", "-");
    for form in [
        "haproxy-marathon-sync status",
        "--check-age",
        "--json",
        "haproxy-marathon-sync completions",
        "--longhelp",
        "--group",
    ] {
        assert!(
            synopsis.contains(form),
            "SYNOPSIS lacks {form}:\n{synopsis}"
        );
    }
    for section in [".SH SIGNALS", "SIGHUP", "SIGUSR1"] {
        assert!(man.contains(section), "man page lacks {section}");
    }
}

/// A stock host has no /etc/ssl/cert.pem (the default --ssl-certs). With the real `haproxy -c`:
/// a dry run warns, naming the file and the fix; a real run fails validation saying the
/// certificate is missing, not that the head or a template is at fault; once the certificate
/// is made as the package makes it, the same run applies.
#[test]
fn a_missing_certificate_is_named_and_the_packaged_one_makes_the_first_run_work() {
    let haproxy = "/usr/sbin/haproxy";
    assert!(
        Path::new(haproxy).exists(),
        "{haproxy} is not installed (scripts/test installs it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let config = dir.path().join("haproxy.cfg");
    let run = |extra: &[&str]| {
        binary()
            .arg("--marathon")
            .arg(repo_path("examples/cluster"))
            .args(["--group", "external", "--haproxy-bin", haproxy])
            .args(["--reload-command", "true", "--ssl-certs"])
            .arg(&cert)
            .arg("--haproxy-config")
            .arg(&config)
            .args(extra)
            .run()
    };
    let shown = cert.display().to_string();

    // The dry run predicts the real run: HAProxy would refuse the :443 frontend.
    let dry = run(&["--dry-run"]);
    let warning = text(&dry.stderr);
    assert_eq!(dry.status.code(), Some(6), "{warning}");
    assert!(
        warning.contains(&format!(
            "warning: the certificate {shown} (--ssl-certs) does not exist"
        )),
        "{warning}"
    );
    assert!(
        warning.contains("--dont-bind-http-https"),
        "the fix is named: {warning}"
    );

    let real = run(&[]);
    let error = text(&real.stderr);
    assert_eq!(real.status.code(), Some(6), "{error}");
    assert!(
        error.contains(&format!(
            "the certificate {shown} (--ssl-certs) does not exist"
        )),
        "{error}"
    );
    assert!(!error.contains("the head or a template"), "{error}");
    assert!(!config.exists(), "nothing was put in place");

    let made = Command::new(repo_path("packaging/make-self-signed-cert"))
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let applied = run(&[]);
    assert_eq!(applied.status.code(), Some(0), "{}", text(&applied.stderr));
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains(&format!("crt {shown}")));
    let dry = run(&["--dry-run"]);
    assert_eq!(dry.status.code(), Some(0), "{}", text(&dry.stderr));
    assert!(
        !text(&dry.stderr).contains("warning"),
        "no warning once the file is there: {}",
        text(&dry.stderr)
    );
}

/// Output bytes (or text) as text, for messages and matching.
fn text(bytes: impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(bytes.as_ref()).into_owned()
}
