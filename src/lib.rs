//! haproxy-marathon-sync as a library: one run flows `fetch → model → render → apply`.
//! [`run_once`] wires the stages together; [`run`] adds the `--interval` and `--sse` loops.

pub mod apply;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod fetch;
pub mod isolate;
pub mod log;
pub mod model;
pub mod render;
pub mod report;
pub mod schedule;
pub mod status;

use std::io::Write;
use std::time::Instant;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use anyhow::{anyhow, Context, Result};

use crate::apply::{Candidate, Outcome};
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

/// What was applied in the end, and which apps were left out to get there.
struct Applied {
    outcome: Outcome,
    /// Apps HAProxy rejected, each with its alerts.
    excluded: BTreeMap<String, String>,
    candidate: Candidate,
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
    let state = fetch::fetch_state(&config.fetch, deadline)?;
    report.phases.insert("fetch", phase.elapsed().as_secs_f64());
    let phase = Instant::now();
    let resolver = CachingResolver::default();
    let templates = render::Templates::load(&config.render)
        .context(Failure::Template)?
        .until(deadline);
    let (model, rendered, mut warnings) =
        model_and_render(&state.apps, &state.tasks, config, &templates, &|host| {
            resolver.resolve(host)
        })?;
    warnings.extend(model::conflicts::find(&model, &config.render));
    let (candidate, backend_apps) = to_candidate(rendered, config);
    report
        .phases
        .insert("render", phase.elapsed().as_secs_f64());
    let mut left_out: BTreeSet<&str> = warnings
        .iter()
        .filter(|warning| warning.app_left_out)
        .map(|warning| warning.app_id.as_str())
        .collect();
    // Waiting for another run's lock must not carry this run past its deadline either.
    let mut apply_config = config.apply.clone();
    let time_left = deadline.saturating_duration_since(Instant::now());
    apply_config.lock_timeout = apply_config.lock_timeout.min(time_left);
    let mut noted = apply::Noted::default();
    let applied = apply_isolating(
        candidate,
        backend_apps,
        (&model, &templates, config, &apply_config),
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
        for warning in templates.warnings() {
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
    let Applied {
        outcome,
        excluded,
        candidate,
        backend_apps,
    } = applied.map_err(|error| {
        if error::classify(&error) != Some(Failure::TooMuchRemoved) || left_out.is_empty() {
            return error;
        }
        let apps: Vec<&str> = left_out.iter().copied().collect();
        error.context(format!(
            "refused while this run left out {} app(s) named in the warnings ({}): their \
             servers count as lost, so fixing them may be the answer rather than --force",
            apps.len(),
            apps.join(", ")
        ))
    })?;
    let inventory = apply::Inventory::of(&candidate.config);
    report.backends = inventory.backends.len();
    report.servers = inventory.servers.len();
    left_out.extend(excluded.keys().map(String::as_str));
    report.apps_excluded = left_out.len();
    report.apps = backend_apps.values().collect::<BTreeSet<_>>().len();
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
    if !excluded.is_empty() {
        let apps: Vec<String> = excluded
            .iter()
            .map(|(app, alerts)| format!("{app} ({alerts})"))
            .collect();
        let verb = if config.apply.dry_run {
            "would leave out"
        } else {
            "left out"
        };
        return Err(anyhow!("{verb} {}", apps.join("; "))).context(Failure::AppliedWithExclusions);
    }
    Ok(outcome)
}

/// Applies the candidate; when HAProxy rejects it, finds the apps at fault (timed as the
/// `isolate` phase), and applies the cluster without them.
fn apply_isolating(
    candidate: Candidate,
    backend_apps: apply::BackendApps,
    (model, templates, config, apply_config): (
        &model::Model,
        &render::Templates,
        &Config,
        &config::ApplyConfig,
    ),
    out: &mut dyn Write,
    noted: &mut apply::Noted,
    report: &mut report::RunReport,
) -> Result<Applied> {
    let first = apply::apply_noting(&candidate, &backend_apps, apply_config, out, noted);
    let error = match first {
        Err(error) if isolation_may_help(&error, apply_config) => error,
        result => {
            return Ok(Applied {
                outcome: result?,
                excluded: BTreeMap::new(),
                candidate,
                backend_apps,
            })
        }
    };
    let phase = Instant::now();
    let found = isolate::find_rejected_apps(model, templates, config, apply_config);
    report
        .phases
        .insert("isolate", phase.elapsed().as_secs_f64());
    let excluded = found.map_err(|search| {
        error.context(format!(
            "looking for the apps HAProxy rejects failed too: {search:#}"
        ))
    })?;
    let without = isolate::without_apps(model, excluded.keys());
    let (candidate, backend_apps) = render_candidate(&without, templates, config)?;
    let validated_before = noted.timings.validate;
    let outcome = apply::apply_noting(&candidate, &backend_apps, apply_config, out, noted)?;
    noted.timings.validate += validated_before;
    Ok(Applied {
        outcome,
        excluded,
        candidate,
        backend_apps,
    })
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
) -> Result<(model::Model, render::Rendered, Vec<model::Warning>)> {
    let mut left_out = HashSet::new();
    let mut label_warnings = Vec::new();
    // Each retry leaves out at least one more app, so this ends within the app count.
    loop {
        let (model, mut warnings) =
            model::build_without(apps, tasks, &config.model, resolve, &left_out);
        let err = match render::render(&model, templates, &config.render) {
            Ok(rendered) => {
                warnings.extend(label_warnings);
                return Ok((model, rendered, warnings));
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
                    app_left_out: true,
                    reason: model::Reason::TemplateLabel,
                });
            }
        }
        if !progress {
            return Err(err);
        }
    }
}

/// Renders the model into a candidate whose map files sit beside the config.
pub(crate) fn render_candidate(
    model: &model::Model,
    templates: &render::Templates,
    config: &Config,
) -> Result<(Candidate, apply::BackendApps)> {
    Ok(to_candidate(
        render::render(model, templates, &config.render)?,
        config,
    ))
}

/// The rendered text as a candidate, its map files beside the config, and the app each
/// backend serves.
fn to_candidate(rendered: render::Rendered, config: &Config) -> (Candidate, apply::BackendApps) {
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
    (candidate, rendered.backend_apps)
}

/// Only a candidate HAProxy itself rejected (not one it could not check) may be saved by
/// leaving apps out.
fn isolation_may_help(error: &anyhow::Error, config: &config::ApplyConfig) -> bool {
    !config.skip_validation
        && error::classify(error) == Some(Failure::ValidationFailed)
        && error
            .chain()
            .any(|cause| cause.to_string().contains("failed (exit status"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::api::{AppList, TaskList};
    use std::net::IpAddr;

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

        let (_model, rendered, warnings) = model_and_render(
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
