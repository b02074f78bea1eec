//! Reads a saved Marathon snapshot: a directory holding `apps.json` (the body of `GET /v2/apps`)
//! and `tasks.json` (`GET /v2/tasks`), the layout of the compatibility corpus. Reads only, under
//! the same limits as an answer over HTTP (size, apps, tasks). Each file is parsed as it is
//! read, `tasks.json` on a second thread while a large `apps.json` is read.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::{apps_and_tasks, parse_streamed, Answer, OverLimit, StreamFailure};
use crate::config::FetchConfig;
use crate::marathon::{self, AppList, TaskList};

pub(super) fn read(dir: &Path, config: &FetchConfig) -> Result<(AppList, TaskList)> {
    let path = dir.join("apps.json");
    let overlap =
        std::fs::metadata(&path).is_ok_and(|meta| meta.len() >= super::OVERLAP_FROM_BYTES);
    let (limit, max_apps) = (config.max_body_bytes, config.max_apps);
    let apps = || {
        read_list(&path, limit, |answer, size| {
            marathon::read_app_list(answer, max_apps, size)
        })
    };
    // Owned, since the thread may outlive this read; only the limits, not the credentials.
    let (tasks_path, limit, max_tasks) = (
        dir.join("tasks.json"),
        config.max_body_bytes,
        config.max_tasks,
    );
    let tasks = move || {
        read_list(&tasks_path, limit, |answer, size| {
            marathon::read_task_list(answer, max_tasks, size)
        })
    };
    let (apps, tasks) = apps_and_tasks(overlap, apps, tasks)?;
    Ok((apps, tasks?))
}

/// The list file at `path` parsed by `parse` as it is read (given the file's size), never read
/// past `limit` bytes.
fn read_list<T>(
    path: &Path,
    limit: u64,
    parse: impl FnOnce(&mut Answer<std::fs::File>, u64) -> serde_json::Result<T>,
) -> Result<T> {
    let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let size = file.metadata().map_or(0, |meta| meta.len());
    if size > limit {
        bail!(over_limit(path, limit));
    }
    let mut answer = Answer::new(file, limit);
    parse_streamed(&mut answer, None, |answer| parse(answer, size)).map_err(|failure| match failure
    {
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
