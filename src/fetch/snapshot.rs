//! Reads a saved Marathon snapshot: a directory holding `apps.json` (the body of `GET /v2/apps`)
//! and `tasks.json` (`GET /v2/tasks`), the layout of the compatibility corpus. Reads only.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use super::api::{AppList, TaskList};
use super::parse_json;

pub(super) fn read(dir: &Path) -> Result<(AppList, TaskList)> {
    let apps = read_document(&dir.join("apps.json"))?;
    let tasks = read_document(&dir.join("tasks.json"))?;
    Ok((apps, tasks))
}

fn read_document<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_json(&bytes).with_context(|| format!("parsing {}", path.display()))
}
