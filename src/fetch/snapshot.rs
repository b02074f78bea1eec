//! Reads a saved Marathon snapshot: a directory holding `apps.json` (the body of `GET /v2/apps`)
//! and `tasks.json` (`GET /v2/tasks`), the layout of the compatibility corpus. Reads only, under
//! the same limits as an answer over HTTP (size, apps, tasks). `tasks.json` is parsed as it is
//! read, on a second thread while a large `apps.json` is read and parsed.

use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::{apps_and_tasks, parse_document, parse_streamed, Answer, OverLimit, StreamFailure};
use crate::config::FetchConfig;
use crate::marathon::{self, AppList, TaskList};

pub(super) fn read(dir: &Path, config: &FetchConfig) -> Result<(AppList, TaskList)> {
    let path = dir.join("apps.json");
    let overlap =
        std::fs::metadata(&path).is_ok_and(|meta| meta.len() >= super::OVERLAP_FROM_BYTES);
    let apps = || {
        let bytes = read_capped(&path, config.max_body_bytes)?;
        parse_document(&bytes, None, |bytes| {
            marathon::parse_app_list(bytes, config.max_apps)
        })
        .with_context(|| format!("parsing {}", path.display()))
    };
    // Owned, since the thread may outlive this read; only the limits, not the credentials.
    let (tasks_path, limit, max_tasks) = (
        dir.join("tasks.json"),
        config.max_body_bytes,
        config.max_tasks,
    );
    let tasks = move || read_tasks(&tasks_path, limit, max_tasks);
    let (apps, tasks) = apps_and_tasks(overlap, apps, tasks)?;
    Ok((apps, tasks?))
}

/// `tasks.json` parsed as it is read, under the same limits as `apps.json`.
fn read_tasks(path: &Path, limit: u64, max_tasks: usize) -> Result<TaskList> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let size = file.metadata().map_or(0, |meta| meta.len());
    if size > limit {
        bail!(over_limit(path, limit));
    }
    let mut answer = Answer::new(file, limit);
    parse_streamed(&mut answer, None, |answer| {
        marathon::read_task_list(answer, max_tasks, size)
    })
    .map_err(|failure| match failure {
        StreamFailure::Read(error) if error.get_ref().is_some_and(|e| e.is::<OverLimit>()) => {
            anyhow!(over_limit(path, limit))
        }
        StreamFailure::Read(error) => anyhow!(error).context(format!("reading {}", path.display())),
        StreamFailure::Document(text) => {
            anyhow!(text).context(format!("parsing {}", path.display()))
        }
    })
}

fn over_limit(path: &Path, limit: u64) -> String {
    format!(
        "reading {}: larger than the limit of {limit} bytes (--max-response-size)",
        path.display()
    )
}

/// The file's bytes, refused when larger than `limit` (never read past it).
fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    // Sized to the file up front: grown by doubling, a 20 MB answer briefly took 48 MB.
    let size = file.metadata().map_or(0, |meta| meta.len()).min(limit);
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > limit {
        bail!(over_limit(path, limit));
    }
    Ok(bytes)
}
