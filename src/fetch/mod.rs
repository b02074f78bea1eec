//! The Marathon client: the only code that speaks HTTP. Fetches `/v2/apps` and `/v2/tasks` from
//! the first source that answers (or reads a saved snapshot directory) and parses them. It knows
//! nothing of labels or templates, and never prints: what happened is in the result.

pub mod api;
mod dcos;
pub mod events;
mod http;
pub mod resolve;
mod snapshot;

use std::time::Instant;

use anyhow::{anyhow, Result};
use serde::de::DeserializeOwned;

use crate::config::{FetchConfig, MarathonSource};
use crate::error::Failure;

/// Marathon's state as fetched, apps and tasks in the order Marathon listed them.
#[derive(Debug, Clone, Default)]
pub struct MarathonState {
    pub apps: Vec<api::App>,
    pub tasks: Vec<api::Task>,
    /// Which source answered (URL or snapshot directory), for log lines.
    pub source: String,
    /// Sources tried before `source` that failed, each as `"<source>: <what it did>"`, so the
    /// caller can log that a Marathon is down even when the run succeeds.
    pub failed_sources: Vec<String>,
}

/// Fetches apps and tasks, failing over between `config.sources` in order.
///
/// Both documents come from the same source. Any failure of a source (refused, timed out, any
/// non-2xx status, truncated, oversized or unparsable body) passes the turn to the next; the
/// run fails only when every source failed, with one error naming each source and what it did,
/// carrying [`Failure::MarathonUnavailable`]. Each HTTP request is bounded by
/// `min(config.request_timeout, time left until deadline)`; once the deadline has passed, the
/// remaining sources are not tried.
///
/// An unreadable `config.ca_cert` is a configuration error and fails at once, naming the file.
pub fn fetch_state(config: &FetchConfig, deadline: Instant) -> Result<MarathonState> {
    let has_url_source = config
        .sources
        .iter()
        .any(|source| matches!(source, MarathonSource::Url(_)));
    // Built once for all URL sources; a snapshot-only run never reads the CA file.
    let client = if has_url_source {
        Some(http::Client::new(config)?)
    } else {
        None
    };

    let mut failed_sources = Vec::new();
    for source in &config.sources {
        let name = source_name(source);
        if Instant::now() >= deadline {
            failed_sources.push(format!("{name}: not tried, the run's deadline had passed"));
            continue;
        }
        let attempt = match (source, &client) {
            (MarathonSource::Url(base), Some(client)) => client.fetch(base, deadline),
            (MarathonSource::Snapshot(dir), _) => snapshot::read(dir),
            (MarathonSource::Url(_), None) => unreachable!("a client is built for URL sources"),
        };
        match attempt {
            Ok((apps, tasks)) => {
                return Ok(MarathonState {
                    apps: apps.apps,
                    tasks: tasks.tasks,
                    source: name,
                    failed_sources,
                })
            }
            Err(error) => failed_sources.push(format!("{name}: {error:#}")),
        }
    }
    let summary = if failed_sources.is_empty() {
        "no Marathon source was given".to_string()
    } else {
        failed_sources.join("; ")
    };
    Err(anyhow!(summary).context(Failure::MarathonUnavailable))
}

/// How a source is named in messages: the URL without its trailing `/`, or the directory.
fn source_name(source: &MarathonSource) -> String {
    match source {
        MarathonSource::Url(base) => base.trim_end_matches('/').to_string(),
        MarathonSource::Snapshot(dir) => dir.display().to_string(),
    }
}

/// Parses one Marathon document; serde's message carries the line and column.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|error| anyhow!("invalid JSON: {error}"))
}
