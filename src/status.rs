//! What each run leaves for operators, and the `status` command that reads it: the run record
//! (`<config>.status`) folded after every run, and the `--metrics-file` textfile. The formats are
//! `report`'s; the files are written through `apply`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::apply::{self, Outcome};
use crate::config::Config;
use crate::error::{self, Failure};
use crate::{log, report};

/// What `status` found.
pub struct Status {
    /// The text (or JSON) to print.
    pub text: String,
    /// With `--check-age`: why the last successful sync is too old (its age and the limit), or
    /// that there was none; `None` when it is recent enough or no limit was given.
    pub stale: Option<String>,
    /// The config as `status` names it: absolute, so a message or a monitoring check's output
    /// says which config wherever it ran from (links are not resolved: the record is beside
    /// the name given).
    pub config: std::path::PathBuf,
    /// Neither the config nor its run record exists: most likely a mistyped
    /// `--haproxy-config`, which must not pass for a fresh install.
    pub nothing_there: bool,
}

/// `status`: the run record of `haproxy_config`, as text or JSON; with `max_age` (and the
/// operator's words for it), whether the last successful sync is recent enough.
pub fn status(
    haproxy_config: &std::path::Path,
    json: bool,
    max_age: Option<(std::time::Duration, &str)>,
) -> Result<Status> {
    let shown = std::path::absolute(haproxy_config).unwrap_or_else(|_| haproxy_config.into());
    let record_path = apply::record_path(haproxy_config);
    let kept = apply::read_kept_file(&record_path)?;
    let nothing_there = kept.is_none() && !haproxy_config.exists();
    let record: report::RunRecord = match kept {
        Some(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading the run record {}", record_path.display()))?,
        None => report::RunRecord::default(),
    };
    // Servers a runtime update left in maintenance, not yet deleted (kept apart from the run
    // record: the runs that settle them rewrite it under the lock).
    let pending = apply::pending_deletions(haproxy_config);
    let now = unix_now();
    let age = record.success_age(now);
    let stale = max_age
        .and_then(|limit| report::staleness(&shown.display().to_string(), &record, now, limit));
    let text = if json {
        let mut value = serde_json::to_value(&record).context("encoding the run record")?;
        value["config"] = shown.display().to_string().into();
        value["config_age_seconds"] = apply::file_age(haproxy_config)
            .map(|age| age.as_secs_f64())
            .into();
        value["last_success_age_seconds"] = age.into();
        value["pending_deletions"] =
            serde_json::to_value(&pending).context("encoding the pending deletions")?;
        format!(
            "{}\n",
            serde_json::to_string_pretty(&value).context("encoding the run record")?
        )
    } else {
        let mut text = report::status_text(
            &shown.display().to_string(),
            &record,
            apply::file_age(haproxy_config),
            now,
        );
        if let Some(pending) = &pending {
            text.push_str(&format!(
                "to delete:    {} (in maintenance until their connections end, worker {})\n",
                pending.servers.join(", "),
                pending.worker
            ));
        }
        text
    };
    Ok(Status {
        text,
        stale,
        config: shown,
        nothing_there,
    })
}

/// What the last recorded run held or left out and said so (app → what it said); empty when
/// there is no record or it cannot be read, so the next run says it rather than keep quiet.
pub(crate) fn said_exclusions(haproxy_config: &std::path::Path) -> BTreeMap<String, String> {
    apply::read_kept_file(&apply::record_path(haproxy_config))
        .ok()
        .flatten()
        .and_then(|bytes| serde_json::from_slice::<report::RunRecord>(&bytes).ok())
        .map(|record| record.exclusions)
        .unwrap_or_default()
}

/// Folds this run into the run record and, with `--metrics-file`, rewrites the metrics. A
/// failure here is logged, never the run's failure: the change itself is done (or not).
///
/// Whatever the run's fate, the counters and the last success time are carried over: the
/// record's lock is waited for only until the run's `deadline` (not at all after a lock
/// timeout: that run has waited once already), and without it the record is updated anyway.
pub(crate) fn keep_record(
    config: &Config,
    deadline: Instant,
    report: &mut report::RunReport,
    result: &Result<Outcome>,
    log: &mut dyn Write,
) {
    report.ended_unix = unix_now();
    let mut failure = None;
    match result {
        Ok(outcome) => {
            report.outcome = match outcome {
                Outcome::Applied { .. } => "applied",
                Outcome::Unchanged => "unchanged",
                Outcome::Deferred { .. } => "deferred",
                Outcome::DryRun => "dry-run",
            }
            .to_string();
            report.reloaded = matches!(outcome, Outcome::Applied { .. }) && !report.runtime_update;
        }
        Err(error) => {
            failure = error::classify(error);
            report.error = Some(format!("{error:#}"));
            // A reload was asked for when its phase ran (a failed one and its rollback too).
            report.reloaded = report.phases.get("reload").is_some_and(|s| *s > 0.0);
            if failure == Some(Failure::AppliedWithExclusions) {
                report.outcome = "applied-with-exclusions".to_string();
            } else {
                report.outcome = "failed".to_string();
                report.failure = Some(report::failure_label(failure).to_string());
            }
        }
    }
    let wait = match failure {
        Some(Failure::LockTimeout) => Duration::ZERO,
        _ => config
            .apply
            .lock_timeout
            .min(deadline.saturating_duration_since(Instant::now())),
    };
    let record_path = apply::record_path(&config.apply.haproxy_config);
    let mut record = report::RunRecord::default();
    let kept = apply::update_kept_file(&config.apply, &record_path, wait, |previous| {
        record = previous
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        record.record(report);
        let mut text = serde_json::to_vec_pretty(&record).unwrap_or_default();
        text.push(b'\n');
        text
    });
    match kept {
        Ok(None) => {}
        // Another run's record update may be lost; this run's is not. Said only at debug: the
        // run that could not take the lock has already said so when that was its failure.
        Ok(Some(unlocked)) => {
            let message = format!("updated the run record without its lock: {unlocked}");
            log::write(log, log::Level::Debug, &message, &[]);
        }
        Err(error) => {
            let message = format!("could not update the run record: {error:#}");
            log::write(log, log::Level::Warn, &message, &[]);
            // The metrics still carry the counters kept so far, and this run.
            if let Ok(Some(bytes)) = apply::read_kept_file(&record_path) {
                record = serde_json::from_slice(&bytes).unwrap_or_default();
                record.record(report);
            }
        }
    }
    if let Some(metrics_file) = &config.metrics_file {
        let text = report::metrics_text(&record, report);
        if let Err(error) = apply::write_kept_file(metrics_file, text.as_bytes()) {
            let message = format!("could not write the metrics file: {error:#}");
            log::write(log, log::Level::Warn, &message, &[]);
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
