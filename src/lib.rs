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
use std::collections::{HashMap, HashSet};
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
    let templates = render::Templates::load(&config.render).context(Failure::Template)?;
    let (rendered, warnings) =
        model_and_render(&state.apps, &state.tasks, config, &templates, &|host| {
            resolver.resolve(host)
        })?;
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

/// Builds the model and renders it. An app whose own template label does not format is left
/// out with a warning and everything built again without it, as the model does for a label
/// that does not parse (marathon-lb fails the whole run over either).
fn model_and_render(
    apps: &[fetch::api::App],
    tasks: &[fetch::api::Task],
    config: &Config,
    templates: &render::Templates,
    resolve: model::Resolver<'_>,
) -> Result<(render::Rendered, Vec<model::Warning>)> {
    let mut left_out = HashSet::new();
    let mut label_warnings = Vec::new();
    // Each retry leaves out at least one more app, so this ends within the app count.
    loop {
        let (model, mut warnings) =
            model::build_without(apps, tasks, &config.model, resolve, &left_out);
        let err = match render::render(&model, templates, &config.render) {
            Ok(rendered) => {
                warnings.extend(label_warnings);
                return Ok((rendered, warnings));
            }
            Err(err) => err,
        };
        let Some(bad_labels) = err.downcast_ref::<render::BadTemplateLabels>() else {
            return Err(err);
        };
        let mut progress = false;
        for bad in &bad_labels.0 {
            if left_out.insert(bad.app_id.clone()) {
                progress = true;
                label_warnings.push(model::Warning {
                    app_id: bad.app_id.clone(),
                    label: None,
                    message: format!("{}; app left out", bad.without_app()),
                });
            }
        }
        if !progress {
            return Err(err);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::api::{AppList, TaskList};

    /// Two IP-per-task apps without service ports and room for one auto-assigned port: the first
    /// takes it, so leaving the first out must rebuild as if Marathon did not have it, and the
    /// second gets the port.
    #[test]
    fn app_with_a_bad_template_label_is_left_out_as_if_absent() {
        let app = |id: &str, labels: &str| {
            format!(
                r#"{{"id": "{id}", "labels": {labels}, "ipAddress": {{"discovery": {{"ports": [{{"number": 80}}]}}}}}}"#
            )
        };
        let apps: AppList = serde_json::from_str(&format!(
            r#"{{"apps": [{}, {}]}}"#,
            app("/a", r#"{"HAPROXY_0_BACKEND_HEAD": "backend {nope}\n"}"#),
            app("/b", "{}")
        ))
        .unwrap();
        let task = |app: &str, ip: &str| {
            format!(
                r#"{{"id": "{app}.1", "appId": "/{app}", "host": "10.0.0.1", "ipAddresses": [{{"ipAddress": "{ip}"}}]}}"#
            )
        };
        let tasks: TaskList = serde_json::from_str(&format!(
            r#"{{"tasks": [{}, {}]}}"#,
            task("a", "9.0.0.1"),
            task("b", "9.0.0.2")
        ))
        .unwrap();
        let mut config = Config::new(Vec::new(), "/etc/haproxy/haproxy.cfg".into());
        config.render.groups = vec!["*".to_string()];
        config.model.min_serv_port_ip_per_task = 10050;
        config.model.max_serv_port_ip_per_task = 10050;
        let templates = render::Templates::load(&config.render).unwrap();
        let no_resolution = |host: &str| -> Option<IpAddr> { panic!("{host} needs no resolving") };

        let (rendered, warnings) = model_and_render(
            &apps.apps,
            &tasks.tasks,
            &config,
            &templates,
            &no_resolution,
        )
        .unwrap();

        let alone = &apps.apps[1..];
        let (model_alone, _) = model::build(alone, &tasks.tasks, &config.model, &no_resolution);
        let expected = render::render(&model_alone, &templates, &config.render).unwrap();
        assert_eq!(rendered.config, expected.config);
        assert!(!rendered.config.contains("backend a_"));
        assert!(
            rendered.config.contains("\nbackend b_10050\n"),
            "{}",
            rendered.config
        );
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            warnings[0].to_string(),
            "app /a: template label HAPROXY_{n}_BACKEND_HEAD (service port 10050): unknown \
             placeholder {nope}; this template knows {backend}, {balance}, {mode}; app left out"
        );
    }
}
