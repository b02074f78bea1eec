//! What runs leave for operators: the run record kept across runs (`<config>.status`, JSON:
//! last run, last change, last error, counters), the Prometheus textfile of `--metrics-file`,
//! and the `status` command's text. Pure: `lib.rs` measures, `apply` writes the files.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Failure;

/// The facts of one run, measured by `lib.rs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunReport {
    /// When the run ended, in seconds since the Unix epoch.
    pub ended_unix: f64,
    /// `applied`, `unchanged`, `deferred`, `dry-run`, `applied-with-exclusions` or `failed`.
    pub outcome: String,
    /// The failure kind's metric label (`marathon_unavailable`, ...) when the run failed.
    pub failure: Option<String>,
    /// The one-line error when the run failed (or applied with exclusions).
    pub error: Option<String>,
    /// Seconds each phase took: fetch, render, validate, isolate (finding the apps HAProxy
    /// rejects), write, reload.
    pub phases: BTreeMap<&'static str, f64>,
    /// Apps with at least one rendered backend (after `--group`, `--strict-mode` and the apps
    /// left out).
    pub apps: usize,
    /// Backends and servers in the rendered candidate.
    pub backends: usize,
    pub servers: usize,
    /// Apps left out: a label that did not parse, or rejected by HAProxy.
    pub apps_excluded: usize,
    /// Apps served from their last good definition, their current one being at fault.
    pub apps_held: Vec<String>,
    /// Apps left out of the configuration (the ones `apps_excluded` counts).
    pub apps_left_out: Vec<String>,
    /// Every app held or left out, with what was said of it (`exclusion::Exclusion::fingerprint`).
    pub exclusions: BTreeMap<String, String>,
    /// Whether this run reloaded HAProxy.
    pub reloaded: bool,
    /// Whether this run applied its change through the runtime API, without a reload.
    pub runtime_update: bool,
    /// How the run's change reached HAProxy (`runtime, no reload`, `reloaded: <why>`).
    pub applied_how: Option<String>,
    /// `--sse`: whether Marathon's event stream was up (false: polling in its place); `None`
    /// outside `--sse` or before the stream's first word.
    pub event_stream_up: Option<bool>,
}

/// What runs remember of each other, kept in `<config>.status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunRecord {
    pub last_run_unix: Option<f64>,
    pub last_outcome: Option<String>,
    /// The last run that read Marathon and left HAProxy running what it says (applied or
    /// unchanged).
    pub last_success_unix: Option<f64>,
    pub last_change_unix: Option<f64>,
    pub last_error_unix: Option<f64>,
    pub last_error: Option<String>,
    pub runs_total: u64,
    pub changes_applied_total: u64,
    pub reloads_total: u64,
    /// Changes applied through the runtime API, without a reload.
    pub runtime_updates_total: u64,
    /// How the last change reached HAProxy (`runtime, no reload`, `reloaded: <why>`).
    pub last_applied_how: Option<String>,
    /// Failed runs by failure kind (`other` for unclassified errors).
    pub failures_total: BTreeMap<String, u64>,
    /// `--sse`: whether the event stream was up at the last run that knew.
    pub event_stream_up: Option<bool>,
    /// The apps the last run that got as far as rendering held at their last good definition.
    pub apps_held: Vec<String>,
    /// The apps that run left out.
    pub apps_left_out: Vec<String>,
    /// What that run said of each app it held or left out, so the next run says it again only
    /// when it changed.
    pub exclusions: BTreeMap<String, String>,
}

impl RunRecord {
    /// Folds one run into the record.
    pub fn record(&mut self, run: &RunReport) {
        self.last_run_unix = Some(run.ended_unix);
        self.last_outcome = Some(run.outcome.clone());
        self.runs_total += 1;
        // With exclusions the rest of the cluster is in sync; it is a change only when the
        // config without the rejected apps differed from the live one (and so was reloaded).
        let changed = match run.outcome.as_str() {
            "applied" => true,
            "applied-with-exclusions" => run.reloaded,
            _ => false,
        };
        if changed {
            self.changes_applied_total += 1;
            self.last_change_unix = Some(run.ended_unix);
            if run.applied_how.is_some() {
                self.last_applied_how.clone_from(&run.applied_how);
            }
        }
        if run.runtime_update {
            self.runtime_updates_total += 1;
        }
        if matches!(
            run.outcome.as_str(),
            "applied" | "applied-with-exclusions" | "unchanged" | "deferred"
        ) {
            self.last_success_unix = Some(run.ended_unix);
        }
        if run.reloaded {
            self.reloads_total += 1;
        }
        if run.event_stream_up.is_some() {
            self.event_stream_up = run.event_stream_up;
        }
        if run.outcome != "failed" {
            self.apps_held.clone_from(&run.apps_held);
            self.apps_left_out.clone_from(&run.apps_left_out);
            self.exclusions.clone_from(&run.exclusions);
        }
        if let Some(failure) = &run.failure {
            *self.failures_total.entry(failure.clone()).or_default() += 1;
        }
        if let Some(error) = &run.error {
            self.last_error_unix = Some(run.ended_unix);
            self.last_error = Some(error.clone());
        }
    }

    /// Seconds since the last successful sync, or `None` when there was none.
    pub fn success_age(&self, now_unix: f64) -> Option<f64> {
        self.last_success_unix.map(|at| (now_unix - at).max(0.0))
    }
}

/// The `reason` label of each failed-run kind, in metric order. Applied-with-exclusions is not
/// a failed run (the rest was applied), so it has none.
const FAILURE_REASONS: &[(Option<Failure>, &str)] = &[
    (Some(Failure::MarathonUnavailable), "marathon_unavailable"),
    (Some(Failure::Template), "template"),
    (Some(Failure::LockTimeout), "lock_timeout"),
    (Some(Failure::ValidationFailed), "validation_failed"),
    (Some(Failure::WriteFailed), "write_failed"),
    (Some(Failure::ReloadFailed), "reload_failed"),
    (Some(Failure::TooMuchRemoved), "too_much_removed"),
    (None, "other"),
];

/// The metric label of a failed run's kind (`other` for unclassified errors).
pub fn failure_label(failure: Option<Failure>) -> &'static str {
    FAILURE_REASONS
        .iter()
        .find(|(kind, _)| *kind == failure)
        .map_or("other", |(_, label)| label)
}

const PREFIX: &str = "haproxy_marathon_sync";

/// The Prometheus text exposition of the last run and the counters kept across runs.
pub fn metrics_text(record: &RunRecord, run: &RunReport) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {PREFIX}_{name} {help}");
        let _ = writeln!(out, "# TYPE {PREFIX}_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{PREFIX}_{name}{labels} {value}");
        }
    };
    let plain = |value: f64| vec![(String::new(), value)];
    metric(
        "last_run_timestamp_seconds",
        "Unix time the last run ended.",
        "gauge",
        &plain(run.ended_unix),
    );
    metric(
        "last_run_success",
        "1 when the last run succeeded (applied, unchanged or deferred), else 0.",
        "gauge",
        &plain(if run.failure.is_none() { 1.0 } else { 0.0 }),
    );
    let outcomes = [
        "applied",
        "unchanged",
        "deferred",
        "dry-run",
        "applied-with-exclusions",
        "failed",
    ];
    let outcome_samples: Vec<(String, f64)> = outcomes
        .iter()
        .map(|o| {
            (
                format!("{{outcome=\"{o}\"}}"),
                f64::from(u8::from(run.outcome == *o)),
            )
        })
        .collect();
    metric(
        "last_run_outcome",
        "The last run's outcome (1 for the one that happened).",
        "gauge",
        &outcome_samples,
    );
    if let Some(at) = record.last_success_unix {
        metric(
            "last_success_timestamp_seconds",
            "Unix time of the last successful sync.",
            "gauge",
            &plain(at),
        );
    }
    if let Some(at) = record.last_change_unix {
        metric(
            "last_change_timestamp_seconds",
            "Unix time a change was last applied.",
            "gauge",
            &plain(at),
        );
    }
    let phases: Vec<(String, f64)> = [
        "fetch", "render", "validate", "isolate", "runtime", "write", "reload",
    ]
    .iter()
    .map(|phase| {
        let seconds = run.phases.get(phase).copied().unwrap_or(0.0);
        (format!("{{phase=\"{phase}\"}}"), seconds)
    })
    .collect();
    metric(
        "phase_duration_seconds",
        "Seconds each phase of the last run took (0 when it did not run).",
        "gauge",
        &phases,
    );
    metric(
        "apps",
        "Apps rendered by the last run.",
        "gauge",
        &plain(run.apps as f64),
    );
    metric(
        "backends",
        "Backends in the last rendered configuration.",
        "gauge",
        &plain(run.backends as f64),
    );
    metric(
        "servers",
        "Servers in the last rendered configuration.",
        "gauge",
        &plain(run.servers as f64),
    );
    metric(
        "apps_excluded",
        "Apps the last run left out (a label that does not parse, or rejected by HAProxy).",
        "gauge",
        &plain(run.apps_excluded as f64),
    );
    metric(
        "apps_held",
        "Apps the last run served from their last good definition (their current one is at fault).",
        "gauge",
        &plain(run.apps_held.len() as f64),
    );
    if let Some(up) = record.event_stream_up {
        metric(
            "event_stream_up",
            "--sse: 1 while Marathon's event stream is up, 0 while polling in its place.",
            "gauge",
            &plain(f64::from(u8::from(up))),
        );
    }
    metric(
        "runs_total",
        "Runs so far.",
        "counter",
        &plain(record.runs_total as f64),
    );
    metric(
        "changes_applied_total",
        "Runs that applied a change.",
        "counter",
        &plain(record.changes_applied_total as f64),
    );
    metric(
        "reloads_total",
        "HAProxy reloads asked for.",
        "counter",
        &plain(record.reloads_total as f64),
    );
    metric(
        "runtime_updates_total",
        "Changes applied through HAProxy's runtime API, without a reload.",
        "counter",
        &plain(record.runtime_updates_total as f64),
    );
    let failures: Vec<(String, f64)> = FAILURE_REASONS
        .iter()
        .map(|(_, reason)| {
            let count = record.failures_total.get(*reason).copied().unwrap_or(0);
            (format!("{{reason=\"{reason}\"}}"), count as f64)
        })
        .collect();
    metric(
        "failures_total",
        "Failed runs by reason.",
        "counter",
        &failures,
    );
    out
}

/// `status --check-age`: why the last successful sync of `config` is too old for `limit`
/// (named as the operator wrote it, `limit_text`), with its age and time, or that none is
/// recorded; `None` when it is recent enough.
pub fn staleness(
    config: &str,
    record: &RunRecord,
    now_unix: f64,
    (limit, limit_text): (Duration, &str),
) -> Option<String> {
    match (record.last_success_unix, record.success_age(now_unix)) {
        (Some(at), Some(age)) if age > limit.as_secs_f64() => Some(format!(
            "the last successful sync of {config} was {} ago ({}): older than {limit_text} \
             (--check-age)",
            humanize(age),
            utc(at)
        )),
        (Some(_), _) => None,
        (None, _) => Some(format!(
            "no successful sync of {config} is recorded yet (--check-age {limit_text})"
        )),
    }
}

/// `status`: the record and the config's age, for a person.
pub fn status_text(
    config: &str,
    record: &RunRecord,
    config_age: Option<Duration>,
    now_unix: f64,
) -> String {
    let when = |at: Option<f64>| match at {
        Some(at) => format!("{} ({} ago)", utc(at), humanize((now_unix - at).max(0.0))),
        None => "never".to_string(),
    };
    let mut out = String::new();
    let age = config_age.map_or("missing".to_string(), |age| {
        format!("last written {} ago", humanize(age.as_secs_f64()))
    });
    let _ = writeln!(out, "config:       {config} ({age})");
    match (record.last_run_unix, &record.last_outcome) {
        (Some(at), Some(outcome)) => {
            let _ = writeln!(out, "last run:     {}, {outcome}", when(Some(at)));
        }
        (Some(at), None) => {
            let _ = writeln!(out, "last run:     {}", when(Some(at)));
        }
        (None, _) => {
            let _ = writeln!(
                out,
                "last run:     never: no run has recorded itself for this config yet"
            );
        }
    }
    let _ = writeln!(out, "last success: {}", when(record.last_success_unix));
    match &record.last_applied_how {
        Some(how) => {
            let _ = writeln!(
                out,
                "last change:  {} ({how})",
                when(record.last_change_unix)
            );
        }
        None => {
            let _ = writeln!(out, "last change:  {}", when(record.last_change_unix));
        }
    }
    match &record.last_error {
        Some(error) => {
            let _ = writeln!(
                out,
                "last error:   {}: {error}",
                when(record.last_error_unix)
            );
        }
        None => {
            let _ = writeln!(out, "last error:   none");
        }
    }
    match record.event_stream_up {
        Some(true) => {
            let _ = writeln!(out, "event stream: up");
        }
        Some(false) => {
            let _ = writeln!(out, "event stream: down, polling at --interval");
        }
        None => {}
    }
    if !record.apps_held.is_empty() {
        let _ = writeln!(out, "held back:    {}", record.apps_held.join(", "));
    }
    if !record.apps_left_out.is_empty() {
        let _ = writeln!(out, "left out:     {}", record.apps_left_out.join(", "));
    }
    let failures: Vec<String> = record
        .failures_total
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(
        out,
        "counters:     runs {}, changes {}, reloads {}, runtime updates {}, failures {}",
        record.runs_total,
        record.changes_applied_total,
        record.reloads_total,
        record.runtime_updates_total,
        if failures.is_empty() {
            "0".to_string()
        } else {
            failures.join(" ")
        }
    );
    out
}

/// `2026-11-25T10:40:00Z`.
pub fn utc(unix: f64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(unix.max(0.0));
    crate::clock::utc_seconds(at)
}

fn humanize(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(outcome: &str, failure: Option<&str>) -> RunReport {
        RunReport {
            ended_unix: 1_764_067_200.0,
            outcome: outcome.to_string(),
            failure: failure.map(str::to_string),
            error: failure.map(|f| format!("{f} happened")),
            reloaded: outcome == "applied",
            ..RunReport::default()
        }
    }

    #[test]
    fn the_record_counts_runs_changes_reloads_and_failures() {
        let mut record = RunRecord::default();
        record.record(&run("applied", None));
        record.record(&run("unchanged", None));
        record.record(&run("failed", Some("marathon_unavailable")));
        record.record(&run("failed", Some("marathon_unavailable")));
        assert_eq!(record.runs_total, 4);
        assert_eq!(record.changes_applied_total, 1);
        assert_eq!(record.reloads_total, 1);
        assert_eq!(record.runtime_updates_total, 0);
        let mut live = run("applied", None);
        (live.reloaded, live.runtime_update) = (false, true);
        live.applied_how = Some("runtime, no reload".to_string());
        let mut counted = record.clone();
        counted.record(&live);
        assert_eq!(
            (counted.reloads_total, counted.runtime_updates_total),
            (1, 1)
        );
        assert!(status_text("/x", &counted, None, 0.0).contains("(runtime, no reload)"));
        assert!(metrics_text(&counted, &live)
            .contains("haproxy_marathon_sync_runtime_updates_total 1\n"));
        assert_eq!(record.failures_total["marathon_unavailable"], 2);
        assert_eq!(
            record.last_error.as_deref(),
            Some("marathon_unavailable happened")
        );
        assert_eq!(record.last_outcome.as_deref(), Some("failed"));
        assert_eq!(record.success_age(1_764_067_260.0), Some(60.0));
        assert_eq!(record.event_stream_up, None);
        let mut polling = run("unchanged", None);
        polling.event_stream_up = Some(false);
        record.record(&polling);
        record.record(&run("unchanged", None));
        assert_eq!(
            record.event_stream_up,
            Some(false),
            "a run that does not know keeps it"
        );
        let text = metrics_text(&record, &polling);
        assert!(
            text.contains("haproxy_marathon_sync_event_stream_up 0\n"),
            "{text}"
        );
        assert!(status_text("/x", &record, None, 0.0).contains("event stream: down"));
    }

    #[test]
    fn a_record_from_an_older_version_still_reads() {
        let record: RunRecord =
            serde_json::from_str(r#"{"runs_total":3,"future_field":1}"#).unwrap();
        assert_eq!(record.runs_total, 3);
    }

    #[test]
    fn utc_times_are_iso_8601() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_764_067_200.0), "2025-11-25T10:40:00Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}
