//! Reads a saved Marathon snapshot: a directory holding `apps.json` (the body of `GET /v2/apps`)
//! and `tasks.json` (`GET /v2/tasks`), the layout of the compatibility corpus. Reads only, under
//! the same limits as an answer over HTTP (size, apps, tasks).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::parse_document;
use crate::config::FetchConfig;
use crate::marathon::{self, AppList, TaskList};

pub(super) fn read(dir: &Path, config: &FetchConfig) -> Result<(AppList, TaskList)> {
    let path = dir.join("apps.json");
    let bytes = read_capped(&path, config.max_body_bytes)?;
    let apps = parse_document(&bytes, None, |bytes| {
        marathon::parse_app_list(bytes, config.max_apps)
    })
    .with_context(|| format!("parsing {}", path.display()))?;
    drop(bytes);
    let path = dir.join("tasks.json");
    let bytes = read_capped(&path, config.max_body_bytes)?;
    let tasks = parse_document(&bytes, None, |bytes| {
        marathon::parse_task_list(bytes, config.max_tasks)
    })
    .with_context(|| format!("parsing {}", path.display()))?;
    Ok((apps, tasks))
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
        bail!(
            "reading {}: larger than the limit of {limit} bytes (--max-response-size)",
            path.display()
        );
    }
    Ok(bytes)
}
