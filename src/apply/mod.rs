//! Puts a rendered candidate in place: lock → diff → validate → archive → atomic rename →
//! reload → rollback. The only code that writes files or runs processes; knows no model types,
//! only text and paths.
//!
//! The guarantee: whatever fails, the live config is whole — the old one or the new one, never
//! a mix — and no temp file is left behind (only `<config>.rejected`, on purpose). A failed
//! reload puts the old config back, so the next run sees a difference and tries again.

mod command;
mod lock;
mod summary;
mod write;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::config::ApplyConfig;
use crate::error::Failure;

pub use command::CommandError;
pub use summary::Inventory;

use write::{CompanionSwap, LiveFile};

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

/// Where a candidate that `haproxy -c` rejected is kept for inspection.
pub fn rejected_path(haproxy_config: &Path) -> PathBuf {
    write::with_suffix(haproxy_config, ".rejected")
}

/// Where the `number`th previous live config is archived (1 = newest).
pub fn archive_path(haproxy_config: &Path, number: usize) -> PathBuf {
    write::with_suffix(haproxy_config, &format!(".{number}"))
}

/// Applies the candidate under the lock. Diff or dry-run output goes to `out`.
pub fn apply(candidate: &Candidate, config: &ApplyConfig, out: &mut dyn Write) -> Result<Outcome> {
    if config.dry_run {
        return preview(candidate, config, out);
    }
    let _lock = lock::acquire(&config.lock_file, config.lock_timeout)?;
    let live = Live::read(candidate, &config.haproxy_config)?;
    if live.matches(candidate) {
        return Ok(Outcome::Unchanged);
    }
    let old_config = live.config.text();
    // Rendered now, printed only once the change is in place and reloaded.
    let mut applied_diff = Vec::new();
    if config.diff {
        live.write_diffs(candidate, ("previous", "applied"), &mut applied_diff)
            .context("rendering the diff")?;
    }
    let companions_changed = install_and_reload(candidate, config, live)?;

    let path = &config.haproxy_config;
    // A rejected candidate from an earlier run is stale once a newer one went live.
    let _ = std::fs::remove_file(rejected_path(path));
    let summary = summary::applied_line(path, &old_config, &candidate.config, companions_changed);
    out.write_all(&applied_diff)
        .context("printing the diff of what was applied (the change itself is in place)")?;
    Ok(Outcome::Applied { summary })
}

/// `--dry-run`: the candidate (or the diff live → candidate) to `out`, and nothing else.
///
/// It takes no lock, on purpose: it writes nothing (not even the lock file, so it works for a
/// user who may only read `/etc/haproxy`), must never wait on or hold up a real run, and every
/// file it reads is replaced by rename, so it always reads a whole file.
fn preview(candidate: &Candidate, config: &ApplyConfig, out: &mut dyn Write) -> Result<Outcome> {
    let live = Live::read(candidate, &config.haproxy_config)?;
    let printed = if config.diff {
        live.write_diffs(candidate, ("live", "candidate"), out)
    } else {
        out.write_all(candidate.config.as_bytes())
    };
    printed.context("printing the dry-run output")?;
    Ok(Outcome::DryRun)
}

/// The live config and companions, read under the lock before anything changes.
struct Live {
    config: LiveFile,
    /// In the candidate's order.
    companions: Vec<LiveFile>,
}

impl Live {
    fn read(candidate: &Candidate, haproxy_config: &Path) -> Result<Live> {
        let config = LiveFile::read(haproxy_config)?;
        let companions = candidate
            .companions
            .iter()
            .map(|(path, _)| LiveFile::read(path))
            .collect::<Result<_>>()?;
        Ok(Live { config, companions })
    }

    fn matches(&self, candidate: &Candidate) -> bool {
        self.config.holds(candidate.config.as_bytes())
            && self
                .companions
                .iter()
                .zip(&candidate.companions)
                .all(|(live, (_, wanted))| live.holds(wanted.as_bytes()))
    }

    /// Diffs of the config and every companion, headers `PATH (old)` / `PATH (new)` from
    /// `labels`; nothing for a file that is equal.
    fn write_diffs(
        &self,
        candidate: &Candidate,
        labels: (&str, &str),
        out: &mut dyn Write,
    ) -> std::io::Result<()> {
        let files = std::iter::once((&self.config, &candidate.config)).chain(
            self.companions
                .iter()
                .zip(candidate.companions.iter().map(|(_, c)| c)),
        );
        for (live, wanted) in files {
            let (old_name, new_name) = (named(&live.path, labels.0), named(&live.path, labels.1));
            summary::write_diff(out, &live.text(), wanted, &old_name, &new_name)?;
        }
        Ok(())
    }
}

/// `PATH (what)`, for diff headers.
fn named(path: &Path, what: &str) -> String {
    format!("{} ({what})", path.display())
}

/// Steps 4–6: stage, swap companions in, validate, archive, rename, reload; on any failure put
/// everything back. Returns how many companion files changed.
fn install_and_reload(candidate: &Candidate, config: &ApplyConfig, live: Live) -> Result<usize> {
    let path = &config.haproxy_config;
    // Under the lock no other apply is running: temp files beside our targets are leftovers of
    // a run that was killed mid-way.
    for target in std::iter::once(path).chain(candidate.companions.iter().map(|(p, _)| p)) {
        write::remove_leftover_temp_files(target);
    }
    let staged = write::stage(
        path,
        candidate.config.as_bytes(),
        live.config.metadata.as_ref(),
    )
    .context(Failure::WriteFailed)?;

    // Companions (map files) are referenced by the config at their live paths, so `haproxy -c`
    // only sees the candidate's maps if they are already in place. Swapping them in before
    // validating is safe: HAProxy reads map files only when it starts or reloads, and every path
    // below that does not end in a successful reload puts the previous ones back first.
    let mut swap = CompanionSwap::default();
    for (previous, (_, content)) in live.companions.into_iter().zip(&candidate.companions) {
        if previous.holds(content.as_bytes()) {
            continue;
        }
        if let Err(e) = swap.install(previous, content.as_bytes()) {
            return Err(undo(e, &mut swap).context(Failure::WriteFailed));
        }
    }

    if !config.skip_validation {
        if let Err(mut e) = validate(config, staged.path()) {
            let kept = keep_rejected(staged, path, &mut e);
            let e = anyhow::Error::new(e).context(format!(
                "checking the candidate for {}; {kept}",
                path.display()
            ));
            return Err(undo(e, &mut swap).context(Failure::ValidationFailed));
        }
    }

    let written = write::archive(&live.config, config.archive_versions)
        .and_then(|()| write::put_in_place(staged, path));
    if let Err(e) = written {
        // A failed rename leaves the live file as it was: only the companions need undoing.
        return Err(undo(e, &mut swap).context(Failure::WriteFailed));
    }

    if let Err(e) = reload(config, "reload command") {
        let e = match roll_back(config, &live.config, &mut swap) {
            Ok(()) => anyhow::Error::new(e).context(format!(
                "the reload after installing {} failed; the previous configuration was put back \
                 and reloaded",
                path.display()
            )),
            // Two failures, each with its own framed output: the reload's, then the rollback's.
            Err(rollback) => anyhow::anyhow!("{e}\nthen rolling back failed too: {rollback:#}")
                .context(format!(
                    "the reload after installing {} failed, and so did the rollback",
                    path.display()
                )),
        };
        return Err(e.context(Failure::ReloadFailed));
    }
    Ok(swap.len())
}

/// `<haproxy_bin> -c -f <candidate>`, bounded by the command timeout.
fn validate(config: &ApplyConfig, candidate: &Path) -> Result<(), CommandError> {
    let mut check = Command::new(&config.haproxy_bin);
    check.arg("-c").arg("-f").arg(candidate);
    command::run(check, "haproxy -c", config.command_timeout)
}

/// The reload command through `sh -c`, bounded by the command timeout.
/// `name` tells the first reload from the rollback's in messages.
fn reload(config: &ApplyConfig, name: &str) -> Result<(), CommandError> {
    let mut shell = Command::new("sh");
    shell.arg("-c").arg(&config.reload_command);
    command::run(shell, name, config.command_timeout)
}

/// Moves a rejected candidate to `<config>.rejected`; says where it went (or why not).
/// HAProxy's messages name the temp file, which is gone by the time anyone reads them: once
/// the candidate is kept, they are made to name the kept copy, so `file:line` leads to it.
fn keep_rejected(
    staged: tempfile::NamedTempFile,
    haproxy_config: &Path,
    failure: &mut CommandError,
) -> String {
    let rejected = rejected_path(haproxy_config);
    let checked = staged.path().display().to_string();
    match staged.persist(&rejected) {
        Ok(_) => {
            let kept = rejected.display().to_string();
            failure.stderr = failure.stderr.replace(&checked, &kept);
            failure.stdout = failure.stdout.replace(&checked, &kept);
            format!("the rejected candidate is kept at {kept}")
        }
        // The temp file is removed when the error drops it.
        Err(e) => format!(
            "could not keep the rejected candidate at {}: {}",
            rejected.display(),
            e.error
        ),
    }
}

/// Puts the companions back after a failure, noting on `error` if that failed too.
fn undo(error: anyhow::Error, swap: &mut CompanionSwap) -> anyhow::Error {
    match swap.restore() {
        Ok(()) => error,
        Err(restore) => error.context(format!(
            "putting the previous companion files back failed too: {restore:#}"
        )),
    }
}

/// After a failed reload: the previous config and companions back in place, atomically, then
/// one more reload so HAProxy runs what is on disk.
fn roll_back(config: &ApplyConfig, previous: &LiveFile, swap: &mut CompanionSwap) -> Result<()> {
    let config_back = previous.restore();
    let companions_back = swap.restore();
    config_back.with_context(|| format!("restoring {}", previous.path.display()))?;
    companions_back.context("restoring the companion files")?;
    reload(config, "rollback reload").context("reloading the previous configuration")?;
    Ok(())
}
