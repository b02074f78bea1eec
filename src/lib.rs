//! haproxy-marathon-sync as a library: one run flows `fetch → model → render → apply`.
//! [`run_once`] wires the stages together; [`run`] adds the `--interval` loop.

pub mod apply;
pub mod cli;
pub mod config;
pub mod error;
pub mod fetch;
pub mod isolate;
pub mod log;
pub mod model;
pub mod render;
pub mod schedule;

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::apply::{Candidate, Outcome};
use crate::config::Config;
use crate::error::Failure;
use crate::fetch::resolve::CachingResolver;

/// Runs once, every `--interval`, or (`--sse`) on Marathon's events with `--interval` as the
/// resync period; the loops end on SIGTERM/SIGINT.
pub fn run(config: &Config) -> Result<()> {
    let once = || {
        run_once(
            config,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
        .map(drop)
    };
    match (&config.events, config.interval) {
        (Some(events), interval) => {
            let resync = interval.unwrap_or(config::DEFAULT_SSE_RESYNC_INTERVAL);
            schedule::run_on_events(&config.fetch, events, resync, |_trigger| once())
        }
        (None, Some(interval)) => schedule::run_every(interval, once),
        (None, None) => once(),
    }
}

/// One full run. Dry-run output goes to `out`; operator log lines (warnings, the summary) go to
/// `log`, and below `debug` only when something changed, so an unchanged cron run prints
/// nothing.
pub fn run_once(config: &Config, out: &mut dyn Write, log: &mut dyn Write) -> Result<Outcome> {
    let deadline = Instant::now() + config.run_deadline;
    let state = fetch::fetch_state(&config.fetch, deadline)?;
    let resolver = CachingResolver::default();
    let (model, warnings) = model::build(&state.apps, &state.tasks, &config.model, &|host| {
        resolver.resolve(host)
    });
    let templates = render::Templates::load(&config.render).context(Failure::Template)?;
    let rendered = render::render(&model, &templates, &config.render)?;
    let config_dir = config
        .apply
        .haproxy_config
        .parent()
        .map(|dir| dir.to_path_buf())
        .unwrap_or_default();
    let candidate = Candidate {
        config: rendered.config,
        companions: rendered
            .maps
            .into_iter()
            .map(|map| (config_dir.join(map.file_name), map.content))
            .collect(),
    };
    // Waiting for another run's lock must not carry this run past its deadline either.
    let mut apply_config = config.apply.clone();
    let time_left = deadline.saturating_duration_since(Instant::now());
    apply_config.lock_timeout = apply_config.lock_timeout.min(time_left);
    let outcome = apply::apply(&candidate, &apply_config, out)?;
    let config_path = config.apply.haproxy_config.display().to_string();
    if outcome != Outcome::Unchanged || log::enabled(log::Level::Debug) {
        for failed in &state.failed_sources {
            let message = format!("Marathon {failed}; used {}", state.source);
            let fields = [("source", state.source.clone().into())];
            log::write(log, log::Level::Warn, &message, &fields);
        }
        for warning in &warnings {
            let mut fields = vec![("app", warning.app_id.clone().into())];
            if let Some(label) = &warning.label {
                fields.push(("label", label.clone().into()));
            }
            log::write(log, log::Level::Warn, &warning.to_string(), &fields);
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
    Ok(outcome)
}
