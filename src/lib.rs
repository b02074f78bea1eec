//! haproxy-marathon-sync as a library: one run flows `fetch → model → render → apply`.
//! [`run_once`] wires the stages together; [`run`] adds the `--interval` and `--sse` loops.

pub mod apply;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod exclusion;
pub mod fetch;
pub mod isolate;
pub mod log;
pub mod marathon;
pub mod model;
pub mod render;
pub mod report;
pub mod schedule;
pub mod status;
pub mod threads;

use std::io::Write;
use std::time::Instant;

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};

use crate::apply::Outcome;
use crate::config::Config;
use crate::error::Failure;
use crate::fetch::resolve::CachingResolver;

/// Runs once, every `--interval`, or (`--sse`) on Marathon's events with `--interval` as the
/// resync period; the loops end on SIGTERM/SIGINT.
pub fn run(config: &Config) -> Result<()> {
    let once = |event_stream_up: Option<bool>| {
        let outcome = run_once_with(
            config,
            event_stream_up,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )?;
        // A deferred change is due at `until`: come back then, not only at the next tick.
        Ok(match outcome {
            Outcome::Deferred { until, .. } => Some(
                until
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default()
                    + std::time::Duration::from_millis(10),
            ),
            _ => None,
        })
    };
    match (&config.events, config.interval) {
        (Some(events), interval) => {
            let resync = interval.unwrap_or(config::DEFAULT_SSE_RESYNC_INTERVAL);
            schedule::run_on_events(
                &config.fetch,
                events,
                resync,
                schedule::first_wait(config),
                |trigger| once(trigger.event_stream_up()),
                || apply::reload_live(&config.apply),
            )
        }
        (None, Some(interval)) => schedule::run_every(
            schedule::first_wait(config),
            interval,
            || once(None),
            || apply::reload_live(&config.apply),
        ),
        (None, None) => {
            // The process ends with this run: its large structures need not be freed.
            ONE_SHOT.store(true, std::sync::atomic::Ordering::Relaxed);
            once(None).map(drop)
        }
    }
}

/// Set when the process makes one run and exits (the binary without `--interval` or `--sse`).
static ONE_SHOT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A run's large value (Marathon's state, the model, the candidate): freed piece by piece when
/// the process goes on, left to the exit when this run is its only one, since freeing tens of
/// thousands of strings and maps one by one is a measurable part of a large run.
struct Large<T>(Option<T>);

impl<T> Large<T> {
    fn new(value: T) -> Large<T> {
        Large(Some(value))
    }
}

impl<T> std::ops::Deref for Large<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("present until dropped")
    }
}

impl<T> std::ops::DerefMut for Large<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("present until dropped")
    }
}

impl<T> Drop for Large<T> {
    fn drop(&mut self) {
        if ONE_SHOT.load(std::sync::atomic::Ordering::Relaxed) {
            std::mem::forget(self.0.take());
        }
    }
}

/// One full run. Dry-run output goes to `out`; operator log lines (warnings, the summary) go to
/// `log`, and below `debug` only when something changed, so an unchanged cron run prints
/// nothing. Every run but a dry one is folded into the run record (`<config>.status`, read by
/// `status`) and, with `--metrics-file`, into the Prometheus textfile.
pub fn run_once(config: &Config, out: &mut dyn Write, log: &mut dyn Write) -> Result<Outcome> {
    run_once_with(config, None, out, log)
}

/// [`run_once`] in the `--sse` loop, which knows whether the event stream is up (recorded for
/// `status` and the metrics).
pub fn run_once_with(
    config: &Config,
    event_stream_up: Option<bool>,
    out: &mut dyn Write,
    log: &mut dyn Write,
) -> Result<Outcome> {
    // One deadline for the whole run, the lock waits and the run record's update included.
    let deadline = Instant::now() + config.run_deadline;
    let mut report = report::RunReport {
        event_stream_up,
        ..report::RunReport::default()
    };
    let result = run_measured(config, deadline, out, log, &mut report);
    if !config.apply.dry_run {
        status::keep_record(config, deadline, &mut report, &result, log);
    }
    result
}

/// What the apply stage ended with, after any passes that held or left out apps.
struct Applied {
    outcome: Outcome,
    candidate: apply::Candidate,
    backend_apps: apply::BackendApps,
}

fn run_measured(
    config: &Config,
    deadline: Instant,
    out: &mut dyn Write,
    log: &mut dyn Write,
    report: &mut report::RunReport,
) -> Result<Outcome> {
    let phase = Instant::now();
    let state = Large::new(fetch::fetch_state(&config.fetch, deadline)?);
    report.phases.insert("fetch", phase.elapsed().as_secs_f64());
    let phase = Instant::now();
    let resolver = CachingResolver::default();
    let resolve = |host: &str| resolver.resolve(host);
    // Every error of `load` already carries `Failure::Template`.
    let templates = render::Templates::load(&config.render)?.until(deadline);
    let mut store_warnings = Vec::new();
    let last_good = Large::new(exclusion::LastGood::load(
        &config.apply.haproxy_config,
        &state.apps,
        &mut store_warnings,
    )?);
    let mut room = exclusion::Room::new(&state.apps, &state.tasks, &last_good);
    let mut prepared = Large::new(room.prepare(config, &templates, &resolve)?);
    report
        .phases
        .insert("render", phase.elapsed().as_secs_f64());
    // Waiting for another run's lock must not carry this run past its deadline either.
    let mut apply_config = config.apply.clone();
    let time_left = deadline.saturating_duration_since(Instant::now());
    apply_config.lock_timeout = apply_config.lock_timeout.min(time_left);
    let mut noted = apply::Noted::default();
    let applied = apply_passes(
        &mut room,
        &mut prepared,
        (&templates, config, &apply_config, &resolve),
        out,
        &mut noted,
        report,
    );
    report
        .phases
        .insert("validate", noted.timings.validate.as_secs_f64());
    report
        .phases
        .insert("write", noted.timings.write.as_secs_f64());
    report
        .phases
        .insert("reload", noted.timings.reload.as_secs_f64());
    report
        .phases
        .insert("runtime", noted.timings.runtime.as_secs_f64());
    report.runtime_update = noted.runtime_update;
    report.applied_how.clone_from(&noted.applied_how);
    if let Ok(Applied {
        outcome: Outcome::Applied { .. } | Outcome::Unchanged,
        ..
    }) = &applied
    {
        match room.keep_last_good(&apply_config) {
            Ok(None) => {}
            Ok(Some(unlocked)) => store_warnings.push(format!(
                "the last good definitions were written without the lock: {unlocked}"
            )),
            Err(error) => store_warnings.push(format!("{error:#}")),
        }
    }
    let exclusions = room.exclusions();
    let fingerprints: BTreeMap<String, String> = exclusions
        .iter()
        .map(|exclusion| (exclusion.app_id.clone(), exclusion.fingerprint()))
        .collect();
    // Apps held or left out are said when that changes (newly held or left out, released, for
    // another reason), not on every run that changes nothing: cron mails every line. A dry
    // run, asked by a person, says everything.
    let said_before = match config.apply.dry_run {
        true => None,
        false => Some(status::said_exclusions(&config.apply.haproxy_config)),
    };
    let exclusions_news = said_before.as_ref() != Some(&fingerprints);
    let mut warnings = std::mem::take(&mut prepared.warnings);
    warnings.extend(std::mem::take(&mut prepared.conflicts));
    // Warnings go with every run that did not end unchanged, a failed one included: an app
    // left out may be just what made it fail (its servers count as lost to the guard).
    let unchanged = matches!(&applied, Ok(applied) if applied.outcome == Outcome::Unchanged);
    if !unchanged || log::enabled(log::Level::Debug) {
        for warning in
            apply::directory_warnings(&config.apply.haproxy_config, &config.apply.lock_file)
        {
            log::write(log, log::Level::Warn, &warning, &[]);
        }
        let failed = state.failed_sources.iter().zip(&state.failed_source_names);
        for (failed, name) in failed {
            let message = format!("Marathon {failed}; used {}", state.source);
            let reason = report::failure_label(Some(Failure::MarathonUnavailable));
            let fields = [("source", name.clone().into()), ("failure", reason.into())];
            log::write(log, log::Level::Warn, &message, &fields);
        }
        for warning in templates.warnings().iter().chain(&store_warnings) {
            log::write(log, log::Level::Warn, warning, &[]);
        }
        for note in &state.notes {
            log::write(log, log::Level::Warn, note, &[]);
        }
        for warning in &warnings {
            let mut fields = vec![("app", warning.app_id.clone().into())];
            if let Some(label) = &warning.label {
                fields.push(("label", label.clone().into()));
            }
            log::write(log, log::Level::Warn, &warning.to_string(), &fields);
        }
    }
    if !unchanged || exclusions_news || log::enabled(log::Level::Debug) {
        for exclusion in &exclusions {
            let mut fields = vec![("app", exclusion.app_id.clone().into())];
            if let Some(label) = exclusion.label() {
                fields.push(("label", label.to_string().into()));
            }
            log::write(log, log::Level::Warn, &exclusion.to_string(), &fields);
        }
        let released = said_before.iter().flat_map(BTreeMap::keys);
        for app_id in released.filter(|app_id| !fingerprints.contains_key(*app_id)) {
            let app = model::fields::escaped(app_id);
            let message = match state.apps.iter().any(|app| app.id == *app_id) {
                true => format!(
                    "app {app}: rendered from its current definition again (the last run held \
                     it at its last good one or left it out)"
                ),
                false => format!(
                    "app {app}: no longer in Marathon (the last run held it at its last good \
                     definition or left it out)"
                ),
            };
            log::write(
                log,
                log::Level::Info,
                &message,
                &[("app", app_id.clone().into())],
            );
        }
    }
    let left_out: Vec<&str> = exclusions
        .iter()
        .filter(|exclusion| !exclusion.is_held())
        .map(|exclusion| exclusion.app_id.as_str())
        .collect();
    let Applied {
        outcome,
        candidate,
        backend_apps,
    } = applied.map_err(|error| {
        if error::classify(&error) != Some(Failure::TooMuchRemoved) || left_out.is_empty() {
            return error;
        }
        let (count, own, them) = match left_out.len() {
            1 => ("1 app named in its warning".to_string(), "its", "it"),
            n => (format!("{n} apps named in the warnings"), "their", "them"),
        };
        error.context(format!(
            "refused while this run left out {count} ({}) for faults of {own} own, not \
             Marathon's: {own} servers count as lost, so fixing {them} is the answer rather \
             than --force",
            left_out.join(", ")
        ))
    })?;
    let candidate = Large::new(candidate);
    // A name per backend and app: freeing them one by one is ~1 ms at 10,000 apps.
    let backend_apps = Large::new(backend_apps);
    let served = noted
        .served
        .unwrap_or_else(|| apply::Served::of_config(&candidate.config, &backend_apps));
    report.backends = served.backends;
    report.servers = served.servers;
    report.apps = served.apps;
    report.apps_excluded = left_out.len();
    report.apps_left_out = left_out.iter().map(|app| app.to_string()).collect();
    report.apps_held = exclusions
        .iter()
        .filter(|exclusion| exclusion.is_held())
        .map(|exclusion| exclusion.app_id.clone())
        .collect();
    report.exclusions = fingerprints;
    let config_path = config.apply.haproxy_config.display().to_string();
    // One line per event: the changed backends ride on the summary line (capped by
    // `apply`), and JSON lines carry them as a list too.
    let with_changes = |line: &str, changes: &[String]| match changes {
        [] => line.to_string(),
        _ => format!("{line}; {}", changes.join("; ")),
    };
    let changes_field = |changes: &[String]| -> (&'static str, serde_json::Value) {
        ("changes", changes.to_vec().into())
    };
    // Said on unchanged runs too: servers an earlier runtime update left in maintenance.
    if let Some(line) = &noted.deletions {
        log::write(
            log,
            log::Level::Info,
            line,
            &[("config", config_path.clone().into())],
        );
    }
    if let Some(line) = &noted.deletion_warning {
        log::write(
            log,
            log::Level::Warn,
            line,
            &[("config", config_path.clone().into())],
        );
    }
    match &outcome {
        Outcome::Applied { summary } => {
            let fields = [
                ("config", config_path.clone().into()),
                ("outcome", "applied".into()),
                changes_field(&noted.lines),
            ];
            let message = with_changes(summary, &noted.lines);
            log::write(log, log::Level::Info, &message, &fields);
        }
        Outcome::Unchanged => {
            let message = format!("unchanged {config_path}: nothing written or reloaded");
            let fields = [
                ("config", config_path.clone().into()),
                ("outcome", "unchanged".into()),
            ];
            log::write(log, log::Level::Debug, &message, &fields);
        }
        Outcome::Deferred { note, .. } => {
            let fields = [
                ("config", config_path.clone().into()),
                ("outcome", "deferred".into()),
            ];
            log::write(log, log::Level::Info, note, &fields);
        }
        Outcome::DryRun => {
            // The first line is the prediction, the others the backends it would change.
            if let Some((prediction, changes)) = noted.lines.split_first() {
                let fields = [
                    ("config", config_path.clone().into()),
                    ("outcome", "dry-run".into()),
                    changes_field(changes),
                ];
                let message = with_changes(prediction, changes);
                log::write(log, log::Level::Info, &message, &fields);
            }
        }
    }
    let failing: Vec<String> = exclusions
        .iter()
        .filter(|exclusion| exclusion.fails_the_run())
        .map(ToString::to_string)
        .collect();
    if !failing.is_empty() {
        let prefix = if config.apply.dry_run {
            "dry run, the real run would do the same: "
        } else {
            ""
        };
        let error = anyhow!("{prefix}{}", failing.join("; "));
        let error = match unchanged && !exclusions_news {
            true => error.context(exclusion::SaidBefore),
            false => error,
        };
        return Err(error).context(Failure::AppliedWithExclusions);
    }
    Ok(outcome)
}

/// How many times one run applies again after holding or leaving out apps HAProxy or the host
/// refused.
const MAX_APPLY_ROUNDS: usize = 3;

/// Applies the prepared candidate; when `apply` refuses it for an app's fault, lets
/// `exclusion` hold or leave out that app (the search timed as the `isolate` phase), prepares
/// again and applies again.
fn apply_passes(
    room: &mut exclusion::Room<'_>,
    prepared: &mut exclusion::Prepared,
    (templates, config, apply_config, resolve): (
        &render::Templates,
        &Config,
        &config::ApplyConfig,
        model::Resolver<'_>,
    ),
    out: &mut dyn Write,
    noted: &mut apply::Noted,
    report: &mut report::RunReport,
) -> Result<Applied> {
    for round in 0.. {
        // Taken, not copied (megabytes for a large cluster): a failed pass prepares anew.
        let rendered = std::mem::take(&mut prepared.rendered);
        let (candidate, backend_apps) = exclusion::candidate(rendered, config);
        let backend_apps = prepared.backend_apps(backend_apps);
        // Each pass's validation adds to the phase: apply notes only its own.
        let validated_before = std::mem::take(&mut noted.timings.validate);
        let applied = apply::apply_noting(&candidate, &backend_apps, apply_config, out, noted);
        noted.timings.validate += validated_before;
        let error = match applied {
            Ok(outcome) => {
                return Ok(Applied {
                    outcome,
                    candidate,
                    backend_apps,
                })
            }
            Err(error) if round < MAX_APPLY_ROUNDS => error,
            Err(error) => return Err(error),
        };
        // The refused candidate is not needed again: freed before the next pass is built.
        drop((candidate, backend_apps));
        let phase = Instant::now();
        let blamed = room.blame(error, templates, config, apply_config, resolve);
        *report.phases.entry("isolate").or_default() += phase.elapsed().as_secs_f64();
        blamed?;
        // Should the next pass fail to prepare, the run still says the refused pass's
        // warnings, its conflicts among them, as it always did.
        let refused = std::mem::take(prepared);
        prepared.warnings = refused.warnings;
        prepared.warnings.extend(refused.conflicts);
        *prepared = room.prepare(config, templates, resolve)?;
    }
    unreachable!("the loop returns by its last round")
}
