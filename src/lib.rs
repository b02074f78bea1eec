//! haproxy-marathon-sync as a library: one run flows `fetch → model → render → apply`.
//! [`run_once`] wires the stages together; [`run`] adds the `--interval` loop.

pub mod apply;
pub mod cli;
pub mod config;
pub mod error;
pub mod fetch;
pub mod model;
pub mod render;
pub mod schedule;

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, ToSocketAddrs};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::apply::{Candidate, Outcome};
use crate::config::Config;
use crate::error::Failure;

/// Runs once, or every `--interval` until SIGTERM/SIGINT.
pub fn run(config: &Config) -> Result<()> {
    match config.interval {
        None => run_once(
            config,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
        .map(drop),
        Some(interval) => schedule::run_every(interval, || {
            run_once(
                config,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )
            .map(drop)
        }),
    }
}

/// One full run. Dry-run output goes to `out`; operator log lines (warnings, the summary) go to
/// `log`, and only when something changed, so an unchanged cron run prints nothing.
pub fn run_once(config: &Config, out: &mut dyn Write, log: &mut dyn Write) -> Result<Outcome> {
    let deadline = Instant::now() + config.run_deadline;
    let state = fetch::fetch_state(&config.fetch, deadline)?;
    let resolver = CachingResolver::default();
    let (model, warnings) = model::build(&state.apps, &state.tasks, &config.model, &|host| {
        resolver.resolve(host)
    });
    let templates = render::Templates::load(&config.render).context(Failure::Template)?;
    let rendered = render::render(&model, &templates, &config.render)?;
    let warnings: Vec<model::Warning> = warnings.into_iter().chain(rendered.warnings).collect();
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
    let outcome = apply::apply(&candidate, &config.apply, out)?;
    if outcome != Outcome::Unchanged {
        for failed in &state.failed_sources {
            writeln!(
                log,
                "haproxy-marathon-sync: warning: Marathon {failed}; used {}",
                state.source
            )
            .ok();
        }
        for warning in &warnings {
            writeln!(log, "haproxy-marathon-sync: warning: {warning}").ok();
        }
    }
    if let Outcome::Applied { summary } = &outcome {
        writeln!(log, "haproxy-marathon-sync: {summary}").ok();
    }
    Ok(outcome)
}

/// Resolves agent host names to IPv4 addresses (marathon-lb uses `gethostbyname`), asking the
/// system resolver once per name and run.
#[derive(Default)]
struct CachingResolver {
    answers: RefCell<HashMap<String, Option<IpAddr>>>,
}

impl CachingResolver {
    fn resolve(&self, host: &str) -> Option<IpAddr> {
        if let Some(answer) = self.answers.borrow().get(host) {
            return *answer;
        }
        let answer = (host, 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.find(|addr| addr.is_ipv4()))
            .map(|addr| addr.ip());
        self.answers.borrow_mut().insert(host.to_string(), answer);
        answer
    }
}
