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

use std::io::Write;
use std::time::Instant;

use std::collections::BTreeSet;

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
        (None, None) => once(None).map(drop),
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
    let mut report = report::RunReport {
        event_stream_up,
        ..report::RunReport::default()
    };
    let result = run_measured(config, out, log, &mut report);
    if !config.apply.dry_run {
        status::keep_record(config, &mut report, &result, log);
    }
    result
}

fn run_measured(
    config: &Config,
    out: &mut dyn Write,
    log: &mut dyn Write,
    report: &mut report::RunReport,
) -> Result<Outcome> {
    let deadline = Instant::now() + config.run_deadline;
    let phase = Instant::now();
    let state = fetch::fetch_state(&config.fetch, deadline)?;
    report.phases.insert("fetch", phase.elapsed().as_secs_f64());
    let phase = Instant::now();
    let resolver = CachingResolver::default();
    let resolve = |host: &str| resolver.resolve(host);
    let templates = render::Templates::load(&config.render)
        .context(Failure::Template)?
        .until(deadline);
    let mut store_warnings = Vec::new();
    let last_good = exclusion::LastGood::load(&config.apply.haproxy_config, &mut store_warnings)?;
    let mut room = exclusion::Room::new(&state.apps, &state.tasks, &last_good);
    let mut prepared = room.prepare(config, &templates, &resolve)?;
    report
        .phases
        .insert("render", phase.elapsed().as_secs_f64());
    // Waiting for another run's lock must not carry this run past its deadline either.
    let mut apply_config = config.apply.clone();
    let time_left = deadline.saturating_duration_since(Instant::now());
    apply_config.lock_timeout = apply_config.lock_timeout.min(time_left);
    let mut timings = apply::Timings::default();
    // Each retry follows an app held or left out for HAProxy's or the host's refusal; a few
    // rounds cover a rejection followed by a listener another process holds.
    let mut rounds = 0;
    let (outcome, candidate) = loop {
        let candidate = exclusion::candidate(prepared.rendered.clone(), config);
        match apply::apply_timed(&candidate, &apply_config, out, &mut timings) {
            Ok(outcome) => break (outcome, candidate),
            Err(error) if rounds < MAX_APPLY_ROUNDS => {
                room.blame(error, &prepared, &templates, config, &apply_config)?;
                prepared = room.prepare(config, &templates, &resolve)?;
                rounds += 1;
            }
            Err(error) => return Err(error),
        }
    };
    if matches!(outcome, Outcome::Applied { .. } | Outcome::Unchanged) {
        if let Err(error) = room.keep_last_good(&apply_config) {
            store_warnings.push(format!("{error:#}"));
        }
    }
    let exclusions = room.exclusions();
    let mut warnings = prepared.warnings;
    warnings.extend(model::conflicts::find(&prepared.model, &config.render));
    report
        .phases
        .insert("validate", timings.validate.as_secs_f64());
    report.phases.insert("write", timings.write.as_secs_f64());
    report.phases.insert("reload", timings.reload.as_secs_f64());
    let inventory = apply::Inventory::of(&candidate.config);
    report.backends = inventory.backends.len();
    report.servers = inventory.servers.len();
    report.apps_excluded = exclusions
        .iter()
        .filter(|exclusion| !matches!(exclusion.action, exclusion::Action::Held { .. }))
        .count();
    report.apps_held = exclusions
        .iter()
        .filter(|exclusion| matches!(exclusion.action, exclusion::Action::Held { .. }))
        .map(|exclusion| exclusion.app_id.clone())
        .collect();
    report.apps_left_out = exclusions
        .iter()
        .filter(|exclusion| !matches!(exclusion.action, exclusion::Action::Held { .. }))
        .map(|exclusion| exclusion.app_id.clone())
        .collect();
    report.apps = prepared
        .model
        .services
        .iter()
        .filter(|service| !service.backends.is_empty())
        .map(|service| service.app_id.as_str())
        .collect::<BTreeSet<_>>()
        .len();
    let config_path = config.apply.haproxy_config.display().to_string();
    if outcome != Outcome::Unchanged || log::enabled(log::Level::Debug) {
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
        for exclusion in &exclusions {
            let mut fields = vec![("app", exclusion.app_id.clone().into())];
            if let Some(label) = exclusion.label() {
                fields.push(("label", label.to_string().into()));
            }
            log::write(log, log::Level::Warn, &exclusion.to_string(), &fields);
        }
    }
    match &outcome {
        Outcome::Applied { summary } => {
            let fields = [
                ("config", config_path.into()),
                ("outcome", "applied".into()),
            ];
            log::write(log, log::Level::Info, summary, &fields);
        }
        Outcome::Unchanged => {
            let message = format!("unchanged {config_path}: nothing written or reloaded");
            let fields = [
                ("config", config_path.into()),
                ("outcome", "unchanged".into()),
            ];
            log::write(log, log::Level::Debug, &message, &fields);
        }
        Outcome::Deferred { note, .. } => {
            let fields = [
                ("config", config_path.into()),
                ("outcome", "deferred".into()),
            ];
            log::write(log, log::Level::Info, note, &fields);
        }
        Outcome::DryRun => {}
    }
    let failing: Vec<String> = exclusions
        .iter()
        .filter(|exclusion| exclusion.fails_the_run())
        .map(ToString::to_string)
        .collect();
    if !failing.is_empty() {
        return Err(anyhow!("{}", failing.join("; "))).context(Failure::AppliedWithExclusions);
    }
    Ok(outcome)
}

/// How many times one run applies again after holding or leaving out apps HAProxy or the host
/// refused.
const MAX_APPLY_ROUNDS: usize = 3;
