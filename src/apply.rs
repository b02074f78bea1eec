//! Puts a rendered candidate in place: lock → diff → validate → archive → atomic rename →
//! reload → rollback. The only code that writes files or runs processes; knows no model types.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::config::ApplyConfig;

/// What to put in place: the config text and companion files (absolute paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub config: String,
    pub companions: Vec<(PathBuf, String)>,
}

/// How an apply ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Candidate equals live: nothing written, nothing reloaded.
    Unchanged,
    /// Written and reloaded; `summary` is the one line for stderr.
    Applied { summary: String },
    /// `--dry-run`: the candidate or diff went to `out`; nothing changed.
    DryRun,
}

/// Applies the candidate under the lock. Diff or dry-run output goes to `out`.
pub fn apply(candidate: &Candidate, config: &ApplyConfig, out: &mut dyn Write) -> Result<Outcome> {
    let _ = (candidate, config, out);
    anyhow::bail!("apply not implemented yet")
}
