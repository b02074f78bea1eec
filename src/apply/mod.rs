//! Puts a rendered candidate in place: lock → diff → guard and deferral → validate → archive →
//! atomic rename → reload (a command, or the master CLI confirmed by `show proc`) → rollback.
//! The only code that writes files or runs processes; knows no model types, only text and
//! paths.
//!
//! The guarantee: whatever fails, the live config is whole — the old one or the new one, never
//! a mix — and no temp file is left behind (only `<config>.rejected`, on purpose). A failed
//! reload puts the old config back, so the next run sees a difference and tries again. A run
//! killed between the rename and the end of its reload leaves `<config>.reload-pending`, and
//! the next run reloads even though the config is unchanged. Servers a runtime update had to
//! leave in maintenance (connections remained) are deleted by a later run, unchanged runs
//! included, while the same worker runs (`<config>.runtime-deletions`).
//!
//! Before anything is written, three checks may stop a change: the blast-radius guard
//! (`--max-server-loss`, an error unless `--force`), `--min-reload-interval` (a deferral, not
//! an error: nothing is written, and the first run after the interval applies the change, since
//! it renders afresh and finds the same difference), and a master socket that does not answer.
//! After validation, new listeners another process holds stop it too (`refusal.rs`, tried
//! from the moment the candidate is known, alongside the other checks), as a type the caller can blame on the app whose port it is.

mod command;
mod guard;
mod lock;
mod master;
mod refusal;
mod reload_live;
mod sockets;
mod state;
mod summary;
mod write;

pub mod runtime;
pub mod runtime_plan;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::thread::ScopedJoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};

use crate::config::ApplyConfig;
use crate::error::Failure;

use runtime_plan::{Change, Plan};

pub use command::CommandError;
pub use master::{show_proc, ProcessTable};
pub use refusal::{rejected_by_haproxy, BusyListener, ListenersUnavailable};
pub use reload_live::reload_live;
pub use state::{
    deletions_path, pending_deletions, pending_path, state_path, utc_timestamp, PendingDeletions,
};
pub use summary::{BackendApps, Inventory, Served};
pub use write::directory_warnings;

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
    /// A change was found less than `--min-reload-interval` after the last reload: nothing was
    /// written or reloaded. The first run at or after `until` applies it. `note` is the one
    /// line for stderr (`change deferred until <UTC time>: ...`).
    Deferred { until: SystemTime, note: String },
}

/// How long the phases of one apply took (zero for a phase that did not run), for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// `haproxy -c` on the candidate.
    pub validate: Duration,
    /// Archiving, renaming into place and syncing.
    pub write: Duration,
    /// The reload (and, after a failure, the rollback and its reload).
    pub reload: Duration,
    /// The server changes sent through HAProxy's runtime API (zero when it was not used).
    pub runtime: Duration,
}

/// What an apply noted besides its outcome, for the metrics and the operator's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Noted {
    pub timings: Timings,
    /// Lines for the log at `info`: after an applied change, one per changed backend; after a
    /// dry run, what the real run would decide, then the backends it would change.
    pub lines: Vec<String>,
    /// The change went live through the runtime API, without a reload.
    pub runtime_update: bool,
    /// How an applied change reached HAProxy: `runtime, no reload`, `reloaded` or
    /// `reloaded: <why>`, as the summary line ends.
    pub applied_how: Option<String>,
    /// For the log at `info`, unchanged runs included: servers an earlier runtime update left
    /// in maintenance that this run deleted, or that still hold connections.
    pub deletions: Option<String>,
    /// For the log at `warn`: retrying those deletions failed (the next run tries again).
    pub deletion_warning: Option<String>,
    /// What the candidate serves, when this apply counted it already (the run record's
    /// figures); `None` when it made no inventory of the candidate.
    pub served: Option<Served>,
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
    apply_noting(
        candidate,
        &BackendApps::default(),
        config,
        out,
        &mut Noted::default(),
    )
}

/// [`apply`], noting in `noted` how long each phase took and what changed; `apps` names the
/// app each backend serves, for those lines.
pub fn apply_noting(
    candidate: &Candidate,
    apps: &BackendApps,
    config: &ApplyConfig,
    out: &mut dyn Write,
    noted: &mut Noted,
) -> Result<Outcome> {
    // A pass applies its own candidate: an earlier pass's count is not this one's.
    noted.served = None;
    if config.dry_run {
        return preview(candidate, apps, config, out, noted);
    }
    let _lock = lock::acquire(&config.lock_file, config.lock_timeout)?;
    let path = &config.haproxy_config;
    // Under the lock no other apply is running: temp files beside our targets are leftovers of
    // a run that was killed mid-way (the config's pattern also covers its archive and state).
    for target in std::iter::once(path).chain(candidate.companions.iter().map(|(p, _)| p)) {
        write::remove_leftover_temp_files(target);
    }
    write::remove_leftover_target_temp_files(path);
    let live = Live::read(candidate, path)?;
    let interrupted = state::interrupted_run(path);
    if let (true, Some(why)) = (live.matches(candidate), interrupted) {
        return finish_interrupted_reload(config, why);
    }
    let old_config = live.config.text().into_owned();
    if interrupted.is_none() {
        retry_pending_deletions(config, &old_config, noted);
    }
    if live.matches(candidate) {
        return Ok(Outcome::Unchanged);
    }
    let route = route(config, &live, candidate, &old_config);
    // Read once: the guard, the summary line and the changed backends all count from them.
    let (before, after) = (Inventory::of(&old_config), Inventory::of(&candidate.config));
    // A runtime-only change differs from the live config in server lines alone: it brings no
    // new listener to try. Parsing every `bind` of both texts cost ~70 ms at 10,000 frontends
    // (`cargo bench --bench runtime`, busy machine), between `haproxy -c` and the first command.
    // A reload's new listeners are tried from here (after the inventories, as in `preview`),
    // alongside the guard, the master's `show proc`, the diff, staging and `haproxy -c`; a
    // change stopped before its verdict on them (refused, deferred, rejected) discards the
    // answer, which is safe since trying a bind writes nothing.
    let try_listeners = matches!(route, Route::Reload(_));
    refusal::while_trying_new_listeners(try_listeners, &old_config, &candidate.config, |trying| {
        let timings = &mut noted.timings;
        let runtime = matches!(route, Route::Runtime(_));
        noted.served = Some(Served::of_inventory(&after, apps));
        if let Some(stopped) = check_before_writing(config, (&before, &after), runtime)? {
            return Ok(stopped);
        }
        // Rendered now, printed only once the change is in place and reloaded.
        let mut applied_diff = Vec::new();
        if config.diff {
            live.write_diffs(candidate, ("previous", "applied"), &mut applied_diff)
                .context("rendering the diff")?;
        }
        let installed = install_and_reload(candidate, config, live, route, trying, timings)?;

        // A rejected candidate from an earlier run is stale once a newer one went live.
        let _ = std::fs::remove_file(rejected_path(path));
        let mut summary =
            summary::applied_line_of(path, &before, &after, installed.companions, &installed.how);
        noted.runtime_update = installed.runtime;
        noted.applied_how = Some(installed.how);
        if let Some(warning) = installed.warning {
            summary.push_str("; warning: ");
            summary.push_str(&warning);
        }
        out.write_all(&applied_diff)
            .context("printing the diff of what was applied (the change itself is in place)")?;
        noted.lines = summary::backend_changes_of(&before, &after, apps);
        Ok(Outcome::Applied { summary })
    })
}

/// What may stop a change before anything is written: the blast-radius guard (an error), the
/// reload interval (a deferral), and a master socket that does not answer (an error).
/// A change that goes live through the runtime API is never deferred: it reloads nothing.
fn check_before_writing(
    config: &ApplyConfig,
    (before, after): (&Inventory, &Inventory),
    runtime: bool,
) -> Result<Option<Outcome>> {
    let path = &config.haproxy_config;
    if !config.force {
        if let Some(reason) = guard::refusal_of(before, after, config.max_server_loss_percent) {
            return Err(anyhow!(
                "the candidate for {} is not applied: {reason}. Nothing was changed. {}",
                path.display(),
                guard::what_to_do_of(before, after)
            ))
            .context(Failure::TooMuchRemoved);
        }
    }
    if !runtime {
        if let Some(deferred) = deferral(config, SystemTime::now()) {
            return Ok(Some(deferred));
        }
    }
    if let Some(socket) = &config.haproxy_master_socket {
        // Asked before anything is written: without an answering master there is no way to
        // reload, or to confirm a rollback.
        master::show_proc(socket, config.command_timeout)
            .with_context(|| {
                format!(
                    "the candidate for {} is not applied: HAProxy's master socket {} does not \
                     answer `show proc`, so HAProxy could not be reloaded; nothing was changed",
                    path.display(),
                    socket.display()
                )
            })
            .context(Failure::ReloadFailed)?;
    }
    Ok(None)
}

/// Where the run record (`status`, metrics counters) is kept: `<config>.status`.
pub fn record_path(haproxy_config: &Path) -> PathBuf {
    write::with_suffix(haproxy_config, ".status")
}

/// How long ago `path` was last modified; `None` when it does not exist.
pub fn file_age(path: &Path) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some(
        SystemTime::now()
            .duration_since(modified)
            .unwrap_or_default(),
    )
}

/// Reads a small file this tool keeps beside the config (run record); `None` when absent.
pub fn read_kept_file(path: &Path) -> Result<Option<Vec<u8>>> {
    write::read_own(path)
}

/// Replaces a file atomically (temp file beside it, fsync, rename, fsync the directory), for
/// the run record and the metrics file, which readers may open at any moment.
pub fn write_kept_file(path: &Path, content: &[u8]) -> Result<()> {
    write::replace_own(path, content).with_context(|| format!("writing {}", path.display()))
}

/// Runs `update` on a kept file's content under the run lock, waiting for it at most `wait`, so
/// counters kept across runs are not lost to a concurrent run. When the lock cannot be had (held
/// on, or its file cannot be created) the file is updated all the same, outside the lock: a run
/// must never lose the counters for want of a lock (issue 13), and the only risk is losing one
/// concurrent run's update. Returns why the lock was not held, for a warning.
pub fn update_kept_file(
    config: &ApplyConfig,
    path: &Path,
    wait: Duration,
    update: impl FnOnce(Option<Vec<u8>>) -> Vec<u8>,
) -> Result<Option<String>> {
    let lock = lock::acquire(&config.lock_file, wait);
    let updated = update(read_kept_file(path)?);
    write::replace_private(path, &updated)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(lock.err().map(|e| format!("{e:#}")))
}

/// What `haproxy -c` said of a candidate checked with [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Rejected; HAProxy's ALERT lines (the rest of its output is noise here).
    Rejected {
        alerts: String,
    },
}

/// Validates a candidate without applying it: under the lock, with its companions in place for
/// the check and put back afterwards, exactly as [`apply`] would validate it. Used to find the
/// apps a rejected candidate can do without. A check that cannot run (HAProxy missing, timed
/// out) is an error, not a rejection.
///
/// With `--dry-run` the check writes nothing beside the config: it takes no lock and checks a
/// copy of the candidate and its companions in a temporary directory ([`validate_elsewhere`]).
pub fn check(candidate: &Candidate, config: &ApplyConfig) -> Result<Verdict> {
    if config.dry_run {
        return verdict_of(validate_elsewhere(candidate, config)?);
    }
    let _lock = lock::acquire(&config.lock_file, config.lock_timeout)?;
    let path = &config.haproxy_config;
    let live = Live::read(candidate, path)?;
    let (staged, mut swap) = stage_with_companions(candidate, &live.config, live.companions)?;
    let verdict = verdict_of(validate(config, staged.path()));
    swap.restore()
        .context("putting the companion files back after a check")?;
    verdict
}

/// A validation's result as a [`Verdict`]; a check that could not run is an error.
fn verdict_of(validated: Result<(), CommandError>) -> Result<Verdict> {
    match validated {
        Ok(()) => Ok(Verdict::Accepted),
        Err(error) if error.ran_and_failed() => Ok(Verdict::Rejected {
            alerts: alert_lines(&error).join("\n"),
        }),
        Err(error) => Err(anyhow::Error::new(error).context(Failure::ValidationFailed)),
    }
}

/// HAProxy's `[ALERT]` lines (the rest of its output is noise for a one-line verdict).
fn alert_lines(error: &CommandError) -> Vec<&str> {
    error
        .stdout
        .lines()
        .chain(error.stderr.lines())
        .filter(|line| line.contains("[ALERT]"))
        .collect()
}

/// `haproxy -c` on a copy of the candidate in a fresh temporary directory, its companions (map
/// files) staged there too and the config's references to them pointed at the copies, so the
/// check sees the candidate's maps without touching the live ones. Messages naming the copy are
/// made to say `dry-run candidate`.
fn validate_elsewhere(
    candidate: &Candidate,
    config: &ApplyConfig,
) -> Result<Result<(), CommandError>> {
    let dir = tempfile::Builder::new()
        .prefix("haproxy-marathon-sync-check.")
        .tempdir()
        .context("creating a temporary directory to check the dry run's candidate")?;
    let mut text = candidate.config.clone();
    for (number, (path, content)) in candidate.companions.iter().enumerate() {
        let copy = dir.path().join(format!("{number}-{}", file_name(path)));
        std::fs::write(&copy, content).with_context(|| format!("writing {}", copy.display()))?;
        text = text.replace(&path.display().to_string(), &copy.display().to_string());
    }
    let copy = dir.path().join(file_name(&config.haproxy_config));
    std::fs::write(&copy, text).with_context(|| format!("writing {}", copy.display()))?;
    let validated = validate(config, &copy).map_err(|mut failure| {
        let named = copy.display().to_string();
        failure.stdout = failure.stdout.replace(&named, "dry-run candidate");
        failure.stderr = failure.stderr.replace(&named, "dry-run candidate");
        failure
    });
    Ok(validated)
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or("haproxy.cfg".into(), |name| {
        name.to_string_lossy().into_owned()
    })
}

/// `Deferred` when `--min-reload-interval` has not passed since the last recorded reload.
fn deferral(config: &ApplyConfig, now: SystemTime) -> Option<Outcome> {
    let interval = config.min_reload_interval;
    if interval.is_zero() {
        return None;
    }
    let last = state::last_reload(&config.haproxy_config, now)?;
    let until = last + interval;
    (now < until).then(|| Outcome::Deferred {
        until,
        note: format!(
            "change deferred until {}: the last reload was at {} and --min-reload-interval is \
             {interval:?}; {} is left as it is",
            state::utc_timestamp(until),
            state::utc_timestamp(last),
            config.haproxy_config.display()
        ),
    })
}

/// The live config is what the candidate wants, but a previous run was stopped after putting
/// it in place and before its reload was settled, or during a runtime update: HAProxy may
/// still run the one before, or a mix. Reload
/// now (not deferred: this finishes a change that already happened).
fn finish_interrupted_reload(config: &ApplyConfig, why: &str) -> Result<Outcome> {
    let path = &config.haproxy_config;
    let reloaded = reload(config, "reload");
    let warning = record_reload(config);
    reloaded
        .with_context(|| format!("reloading HAProxy to run {} ({why})", path.display()))
        .context(Failure::ReloadFailed)?;
    state::settled_after_reload(path);
    let mut summary = format!("reloaded {}: {why}", path.display());
    if let Some(warning) = warning {
        summary.push_str("; warning: ");
        summary.push_str(&warning);
    }
    Ok(Outcome::Applied { summary })
}

/// Records that HAProxy was just asked to reload, for `--min-reload-interval` (only when it is
/// on). A failure does not undo the change in place: it is returned as a warning.
fn record_reload(config: &ApplyConfig) -> Option<String> {
    if config.min_reload_interval.is_zero() {
        return None;
    }
    state::record_reload(&config.haproxy_config, SystemTime::now())
        .err()
        .map(|e| format!("{e:#}; --min-reload-interval cannot hold back the next change"))
}

/// `--dry-run`: the candidate (or the diff live → candidate) to `out`, and in `noted` what the
/// real run would decide. The checks the real run makes before writing are made the same way —
/// the blast-radius guard, and `haproxy -c` (unless `--skip-validation`) on a copy in a
/// temporary directory — and a candidate either would refuse fails the same way, so the dry
/// run exits with the real run's status. A candidate `haproxy -c` rejects is not printed: the
/// run goes on to find the apps at fault and prints the candidate without them.
///
/// It takes no lock, on purpose: it writes nothing beside the config (not even the lock file,
/// so it works for a user who may only read `/etc/haproxy`), must never wait on or hold up a
/// real run, and every file it reads is replaced by rename, so it always reads a whole file.
fn preview(
    candidate: &Candidate,
    apps: &BackendApps,
    config: &ApplyConfig,
    out: &mut dyn Write,
    noted: &mut Noted,
) -> Result<Outcome> {
    let listeners = ListenersJob::default();
    std::thread::scope(|scope| {
        let reading = CandidateReading::start(scope, (&candidate.config, apps), &listeners);
        preview_reading(candidate, apps, config, out, noted, (reading, &listeners))
    })
}

/// [`preview`], with the candidate's inventory being read by `reading`, and its listeners by
/// whichever side takes `listeners` first (by neither when the candidate is unchanged).
fn preview_reading(
    candidate: &Candidate,
    apps: &BackendApps,
    config: &ApplyConfig,
    out: &mut dyn Write,
    noted: &mut Noted,
    (reading, listeners): (CandidateReading<'_, '_>, &ListenersJob),
) -> Result<Outcome> {
    let path = &config.haproxy_config;
    let live = Live::read(candidate, path)?;
    let old = live.config.text();
    if live.matches(candidate) {
        listeners.not_wanted();
        print_preview(&live, candidate, config, out)?;
        // The run record counts what the candidate serves: from the inventory read already.
        noted.served = Some(reading.finish().served);
        noted.lines.push(match state::interrupted_run(path) {
            Some(why) => format!(
                "would reload HAProxy: {} is unchanged, but {why}",
                path.display()
            ),
            None => match pending_deletions_to_retry(config) {
                Some(servers) => format!(
                    "would leave {} unchanged and retry deleting the servers left in \
                     maintenance by an earlier runtime update: {}",
                    path.display(),
                    servers.join(", ")
                ),
                None => format!("would leave {} unchanged", path.display()),
            },
        });
        return Ok(Outcome::DryRun);
    }
    // Read once: the guard, the counts and the changed backends all count from them. The live
    // side here, while the candidate's is read beside it.
    let before = Inventory::of(&old);
    let live_listeners = refusal::listeners(&old);
    // With a small live file (none in a first run) this side is done long before the
    // candidate's inventory is: it reads the candidate's listeners meanwhile.
    let listeners_here = listeners
        .take()
        .then(|| refusal::listeners(&candidate.config));
    let CandidateSide {
        inventory: after,
        served,
        listeners: listeners_there,
    } = reading.finish();
    let candidate_listeners = listeners_here.or(listeners_there).unwrap_or_default();
    // Every listener the real run would try is tried from here, alongside the rest (trying a
    // bind writes nothing, so an answer this run turns out not to need is just discarded).
    refusal::while_trying_listeners_of(&live_listeners, candidate_listeners, |trying| {
        noted.served = Some(served);
        let refusal = match config.force {
            true => None,
            false => guard::refusal_of(&before, &after, config.max_server_loss_percent),
        };
        // The real run's own decision, from the files alone: it sends nothing to HAProxy.
        let how = match route(config, &live, candidate, &old) {
            Route::Runtime(_) => None,
            Route::Reload(None) => Some("reload: no --haproxy-master-socket".to_string()),
            Route::Reload(Some(why)) => Some(format!("reload needed: {why}")),
        };
        // As in the real run, only a reload is ever deferred, and a deferred change is deferred
        // before it is validated (the run that applies it validates it).
        let deferred = match (&refusal, &how) {
            (None, Some(_)) => deferral(config, SystemTime::now()),
            _ => None,
        };
        let checked = refusal.is_none() && deferred.is_none();
        // What a real run would find before its reload, tried since the candidate was known; with
        // validation, judged after `haproxy -c`'s verdict, as the real run judges them.
        let busy = if checked && !config.skip_validation {
            let started = Instant::now();
            let validated = validate_elsewhere(candidate, config);
            let took = started.elapsed();
            let validated = validated?;
            noted.timings.validate = took;
            if let Err(failure) = validated {
                // A check that could not run (no haproxy, timed out) is not HAProxy's verdict.
                let context = if failure.ran_and_failed() {
                    let alerts = alert_lines(&failure).join(" / ");
                    let said = if alerts.is_empty() {
                        "see its output below"
                    } else {
                        &alerts
                    };
                    format!(
                        "dry run for {}: haproxy -c would reject it: {said}",
                        path.display()
                    )
                } else {
                    format!(
                        "dry run for {}: the candidate could not be checked with haproxy -c, so the \
                         real run would stop here too",
                        path.display()
                    )
                };
                return Err(anyhow::Error::new(failure).context(context))
                    .context(Failure::ValidationFailed);
            }
            trying.busy()
        } else if checked {
            trying.busy()
        } else {
            // Refused or deferred: the real run would try nothing, and the answer is discarded.
            Vec::new()
        };
        if !busy.is_empty() {
            return Err(anyhow::Error::new(ListenersUnavailable(busy)))
                .context(format!(
                    "dry run for {}: would not be applied",
                    path.display()
                ))
                .context(Failure::ReloadFailed);
        }
        print_preview(&live, candidate, config, out)?;
        if let Some(reason) = refusal {
            return Err(anyhow!(
                "dry run for {}: would be refused by the blast-radius guard: {reason}. {}",
                path.display(),
                guard::what_to_do_of(&before, &after)
            ))
            .context(Failure::TooMuchRemoved);
        }
        let counts = summary::counts_of(&before, &after);
        noted.lines.push(match (deferred, how) {
            (Some(Outcome::Deferred { until, .. }), Some(how)) => format!(
                "would defer the change ({counts}) until {} (--min-reload-interval; {how})",
                state::utc_timestamp(until)
            ),
            (_, Some(how)) => format!("would apply: {counts} ({how})"),
            (_, None) => format!("would apply: {counts} (runtime, no reload)"),
        });
        noted
            .lines
            .extend(summary::backend_changes_of(&before, &after, apps));
        Ok(Outcome::DryRun)
    })
}

/// From this many bytes of candidate (~150 apps), the dry run reads the candidate's inventory
/// and listeners on a thread of its own: below, that takes less time than starting one.
const CANDIDATE_THREAD_FROM: usize = 128 * 1024;

/// The candidate's inventory, what it serves and maybe its listeners, read beside the live
/// file and its own (the two sides are ~45% of a dry run's work after the render, and nothing
/// else runs beside them in a steady state, where no listener is new): on a thread from
/// [`CANDIDATE_THREAD_FROM`] bytes, else (or when no thread is to be had) on the caller's, when
/// they are asked for. Its listeners are read after the rest when the [`ListenersJob`] given to
/// [`CandidateReading::start`] is still to be taken.
enum CandidateReading<'scope, 'a> {
    Thread(ScopedJoinHandle<'scope, CandidateSide<'a>>),
    Here(&'a str, &'a BackendApps, &'scope ListenersJob),
}

/// The candidate's inventory, what it serves (the run record's count), and its listeners if
/// this side took their job.
struct CandidateSide<'a> {
    inventory: Inventory<'a>,
    served: Served,
    listeners: Option<Vec<std::net::SocketAddr>>,
}

impl<'a> CandidateSide<'a> {
    /// Read from `text`, its listeners when `listeners` can still be taken once the rest is.
    fn read(text: &'a str, apps: &BackendApps, listeners: &ListenersJob) -> CandidateSide<'a> {
        let inventory = Inventory::of(text);
        let served = Served::of_inventory(&inventory, apps);
        let listeners = listeners.take().then(|| refusal::listeners(text));
        CandidateSide {
            inventory,
            served,
            listeners,
        }
    }
}

/// Reading the candidate's listeners: taken once, by the side free first (the one beside the
/// candidate's inventory when the live file is small), or by neither when the candidate turns
/// out unchanged and needs none.
#[derive(Default)]
struct ListenersJob(AtomicU8);

impl ListenersJob {
    const OPEN: u8 = 0;
    const TAKEN: u8 = 1;
    const NOT_WANTED: u8 = 2;

    /// Whether the caller is the one to read them (then no one else is).
    fn take(&self) -> bool {
        self.0
            .compare_exchange(
                Self::OPEN,
                Self::TAKEN,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// No one need read them; a side already reading them has its answer ignored.
    fn not_wanted(&self) {
        let _ = self.0.compare_exchange(
            Self::OPEN,
            Self::NOT_WANTED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

impl<'scope, 'a: 'scope> CandidateReading<'scope, 'a> {
    fn start(
        scope: &'scope std::thread::Scope<'scope, '_>,
        (text, apps): (&'a str, &'a BackendApps),
        listeners: &'scope ListenersJob,
    ) -> CandidateReading<'scope, 'a> {
        if text.len() < CANDIDATE_THREAD_FROM {
            return CandidateReading::Here(text, apps, listeners);
        }
        let read = move || CandidateSide::read(text, apps, listeners);
        match std::thread::Builder::new()
            .name("candidate".into())
            .spawn_scoped(scope, read)
        {
            Ok(handle) => CandidateReading::Thread(handle),
            Err(_) => CandidateReading::Here(text, apps, listeners),
        }
    }

    /// The candidate's side, with its listeners if it took their job.
    fn finish(self) -> CandidateSide<'a> {
        match self {
            CandidateReading::Thread(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            CandidateReading::Here(text, apps, listeners) => {
                CandidateSide::read(text, apps, listeners)
            }
        }
    }
}

/// The servers a real run would try to delete now (recorded pending deletion), when it would
/// try at all; the dry run does not ask HAProxy whether they still hold connections.
fn pending_deletions_to_retry(config: &ApplyConfig) -> Option<Vec<String>> {
    if config.haproxy_master_socket.is_none() || !config.runtime_api {
        return None;
    }
    state::pending_deletions(&config.haproxy_config).map(|record| record.servers)
}

/// The dry run's stdout: the diff of every file that differs, or the candidate config followed
/// by each companion (map) file under a `# ==> PATH <==` header.
fn print_preview(
    live: &Live,
    candidate: &Candidate,
    config: &ApplyConfig,
    out: &mut dyn Write,
) -> Result<()> {
    let printed = if config.diff {
        live.write_diffs(candidate, ("live", "candidate"), out)
    } else {
        out.write_all(candidate.config.as_bytes()).and_then(|()| {
            candidate.companions.iter().try_for_each(|(path, content)| {
                write!(out, "\n# ==> {} <==\n{content}", path.display())
            })
        })
    };
    printed.context("printing the dry-run output")
}

/// The live config and companions, read under the lock before anything changes.
struct Live {
    config: LiveFile,
    /// In the candidate's order.
    companions: Vec<LiveFile>,
}

impl Live {
    fn read(candidate: &Candidate, haproxy_config: &Path) -> Result<Live> {
        let config = LiveFile::read_config(haproxy_config)?;
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

/// How a change is to reach HAProxy, decided before anything is written.
enum Route {
    /// Server edits through the master CLI, then the file put in place without a reload.
    Runtime(Plan),
    /// A reload; why, when the runtime API was in play (`None`: no master socket).
    Reload(Option<String>),
}

/// Runtime when a master socket is given, runtime updates are on, no earlier run was stopped
/// before HAProxy ran its file (mid-reload or mid-runtime-update: the worker may run an older
/// config than the one on disk, so a diff against the file says nothing about it), no
/// companion (map) file changes, and the classifier finds only server edits it can make live;
/// else a reload and the first reason found.
fn route(config: &ApplyConfig, live: &Live, candidate: &Candidate, old_config: &str) -> Route {
    if config.haproxy_master_socket.is_none() {
        return Route::Reload(None);
    }
    let why = |reason: &str| Route::Reload(Some(reason.to_string()));
    if !config.runtime_api {
        return why("--no-runtime-api");
    }
    if let Some(interrupted) = state::interrupted_run(&config.haproxy_config) {
        return why(interrupted);
    }
    let companion_changed = live
        .companions
        .iter()
        .zip(&candidate.companions)
        .any(|(live, (_, wanted))| !live.holds(wanted.as_bytes()));
    if companion_changed {
        return why("a map file changed");
    }
    match runtime_plan::classify(old_config, &candidate.config) {
        Change::RuntimeOnly(plan) => Route::Runtime(plan),
        Change::ReloadRequired(reason) => Route::Reload(Some(reason.0)),
        Change::NoOp => why("only a map file changed"),
    }
}

/// What [`install_and_reload`] did on success.
struct Installed {
    /// How many companion files changed.
    companions: usize,
    /// `runtime, no reload`, `reloaded` or `reloaded: <why>`.
    how: String,
    /// Applied through the runtime API, without a reload.
    runtime: bool,
    /// Something that went wrong after the change was in place and reloaded.
    warning: Option<String>,
}

/// Steps 4–6: stage, swap companions in, validate, archive, rename, reload; on any failure put
/// everything back.
fn install_and_reload(
    candidate: &Candidate,
    config: &ApplyConfig,
    live: Live,
    route: Route,
    trying: refusal::Trying,
    timings: &mut Timings,
) -> Result<Installed> {
    let path = &config.haproxy_config;
    let Live {
        config: live_config,
        companions,
    } = live;
    let (staged, mut swap) = stage_with_companions(candidate, &live_config, companions)?;

    // The new listeners (a reload's; none for a runtime-only change) have been tried since
    // `apply_noting` chose the route; their answer is judged after `haproxy -c`'s verdict.
    let busy = if config.skip_validation {
        trying.busy()
    } else {
        let started = Instant::now();
        let validated = validate(config, staged.path());
        timings.validate = started.elapsed();
        if let Err(mut e) = validated {
            let kept = keep_rejected(staged, path, &mut e);
            let e = anyhow::Error::new(e).context(format!(
                "checking the candidate for {}; {kept}",
                path.display()
            ));
            return Err(undo(e, &mut swap).context(Failure::ValidationFailed));
        }
        trying.busy()
    };
    if !busy.is_empty() {
        let e = anyhow::Error::new(ListenersUnavailable(busy)).context(format!(
            "the candidate for {} is not applied",
            path.display()
        ));
        return Err(undo(e, &mut swap).context(Failure::ReloadFailed));
    }

    let why = match route {
        Route::Reload(why) => why,
        Route::Runtime(plan) => {
            let started = Instant::now();
            let updated = update_live(config, &plan);
            timings.runtime = started.elapsed();
            match updated {
                Ok(report) => {
                    return put_in_place_after_runtime(
                        config,
                        (staged, &candidate.config),
                        &live_config,
                        &report,
                        timings,
                    )
                }
                Err(e) => Some(format!("the runtime update failed: {e:#}")),
            }
        }
    };
    let how = why.map_or("reloaded".to_string(), |why| format!("reloaded: {why}"));

    // From here until the reload is settled, a killed run must leave a trace: the marker makes
    // the next run reload even when it finds the config unchanged.
    let started = Instant::now();
    let written = state::mark_reload_pending(path)
        .and_then(|()| write::archive(&live_config, config.archive_versions))
        .and_then(|()| write::put_in_place(staged, &live_config.target));
    timings.write = started.elapsed();
    if let Err(e) = written {
        // A failed rename leaves the live file as it was: only the companions need undoing.
        let _ = state::clear_reload_pending(path);
        return Err(undo(e, &mut swap).context(Failure::WriteFailed));
    }

    let started = Instant::now();
    let reloaded = reload(config, "reload");
    if let Err(e) = reloaded {
        let rolled_back = roll_back(config, &live_config, &mut swap);
        if rolled_back.is_ok() {
            let _ = state::clear_runtime_pending(path);
        }
        timings.reload = started.elapsed();
        let _ = record_reload(config);
        let e = match rolled_back {
            Ok(()) => e.context(format!(
                "the reload after installing {} failed; the previous configuration was put back \
                 and reloaded",
                path.display()
            )),
            // Two failures, each with its own framed output: the reload's, then the rollback's.
            Err(rollback) => {
                anyhow!("{e:#}\nthen rolling back failed too: {rollback:#}").context(format!(
                    "the reload after installing {} failed, and so did the rollback",
                    path.display()
                ))
            }
        };
        return Err(e.context(Failure::ReloadFailed));
    }
    timings.reload = started.elapsed();
    let warning = record_reload(config);
    state::settled_after_reload(path);
    Ok(Installed {
        companions: swap.len(),
        how,
        runtime: false,
        warning,
    })
}

/// Marks the runtime update pending, then sends the plan to the master CLI. Any error (the
/// marker, the socket, a reply) means the caller reloads the validated file instead; the
/// marker stays until that reload is settled.
fn update_live(config: &ApplyConfig, plan: &Plan) -> Result<runtime::Report> {
    let socket = config
        .haproxy_master_socket
        .as_ref()
        .ok_or_else(|| anyhow!("no master socket"))?;
    state::mark_runtime_pending(&config.haproxy_config)?;
    let options = runtime::RuntimeOptions {
        timeout: config.command_timeout,
        ..runtime::RuntimeOptions::default()
    };
    Ok(runtime::execute(socket, plan, &options)?)
}

/// After a runtime update: archive, rename, clear the marker. HAProxy already runs the
/// candidate, so if the file cannot be put in place the old file is reloaded, and HAProxy and
/// the file agree again.
fn put_in_place_after_runtime(
    config: &ApplyConfig,
    (staged, staged_config): (tempfile::NamedTempFile, &str),
    live_config: &LiveFile,
    report: &runtime::Report,
    timings: &mut Timings,
) -> Result<Installed> {
    let path = &config.haproxy_config;
    let started = Instant::now();
    let written = write::archive(live_config, config.archive_versions)
        .and_then(|()| write::put_in_place(staged, &live_config.target));
    timings.write = started.elapsed();
    if let Err(e) = written {
        let started = Instant::now();
        let reloaded = reload(config, "reload");
        timings.reload = started.elapsed();
        let _ = record_reload(config);
        let e = match reloaded {
            Ok(()) => {
                state::settled_after_reload(path);
                e.context(format!(
                    "the servers were changed through the runtime API but {} could not be \
                     replaced; HAProxy was reloaded to run the file as it is",
                    path.display()
                ))
            }
            Err(reload) => {
                anyhow!("{e:#}\nthen reloading failed too: {reload:#}").context(format!(
                    "the servers were changed through the runtime API but {} could not be \
                     replaced, and the reload to run it as it is failed",
                    path.display()
                ))
            }
        };
        return Err(e.context(Failure::WriteFailed));
    }
    let _ = state::clear_runtime_pending(path);
    let mut warning = (!report.pending_deletion.is_empty()).then(|| {
        format!(
            "left in maintenance until their connections end, deleted by a later run: {}",
            report.pending_deletion.join(", ")
        )
    });
    if let Err(e) = keep_pending_deletions(config, report, staged_config) {
        let note = format!("{e:#}; they stay in maintenance until the next reload");
        warning = Some(warning.map_or(note.clone(), |w| format!("{w}; {note}")));
    }
    Ok(Installed {
        companions: 0,
        how: "runtime, no reload".to_string(),
        runtime: true,
        warning,
    })
}

/// Records the servers left pending deletion after a runtime update: the ones it could not
/// delete, and those of an earlier record for the same worker that it did not settle (it only
/// touched the backends it changed) and the new file does not want back.
fn keep_pending_deletions(
    config: &ApplyConfig,
    report: &runtime::Report,
    new_config: &str,
) -> Result<()> {
    let path = &config.haproxy_config;
    let mut servers: std::collections::BTreeSet<String> =
        report.pending_deletion.iter().cloned().collect();
    if let Some(earlier) = state::pending_deletions(path).filter(|r| r.worker == report.worker) {
        let wanted = Inventory::of(new_config);
        servers.extend(earlier.servers.into_iter().filter(|what| {
            !report.deleted.contains(what)
                && !report.reused.contains(what)
                && !what
                    .split_once('/')
                    .is_some_and(|(b, s)| wanted.has_server(b, s))
        }));
    }
    let record = state::PendingDeletions {
        worker: report.worker,
        servers: servers.into_iter().collect(),
    };
    state::record_pending_deletions(path, &record)
}

/// Every run with a master socket and runtime updates on, unchanged runs included: deletes the
/// servers an earlier runtime update left in maintenance whose connections have ended, while
/// the worker that holds them still runs (a reload makes the record moot), and only those the
/// live file (`live_config`) no longer has. Says in `noted` what it deleted or left pending; a
/// failure is a warning, never the run's failure, and the record stays for the next run.
/// Never `shutdown sessions`: a server in maintenance takes no new requests anyway.
fn retry_pending_deletions(config: &ApplyConfig, live_config: &str, noted: &mut Noted) {
    let path = &config.haproxy_config;
    let Some(socket) = config.haproxy_master_socket.as_ref() else {
        return;
    };
    let Some(record) = state::pending_deletions(path).filter(|_| config.runtime_api) else {
        return;
    };
    let wanted = Inventory::of(live_config);
    let wanted = |backend: &str, server: &str| wanted.has_server(backend, server);
    let retried = runtime::retry_deletions(
        socket,
        record.worker,
        &record.servers,
        &wanted,
        config.command_timeout,
    );
    let (deleted, pending) = match retried {
        Ok(runtime::Retried::Done { deleted, pending }) => (deleted, pending),
        Ok(runtime::Retried::Reloaded { .. }) => {
            let _ = state::clear_pending_deletions(path);
            return;
        }
        Err(e) => {
            noted.deletion_warning = Some(format!(
                "could not retry deleting the servers left in maintenance by an earlier runtime \
                 update ({}): {e:#}; the next run tries again",
                record.servers.join(", ")
            ));
            return;
        }
    };
    let kept = state::PendingDeletions {
        worker: record.worker,
        servers: pending.clone(),
    };
    if let Err(e) = state::record_pending_deletions(path, &kept) {
        noted.deletion_warning = Some(format!("{e:#}"));
    }
    noted.deletions = deletions_line(&deleted, &pending);
}

/// The one log line about servers left pending deletion: those deleted, those still pending.
fn deletions_line(deleted: &[String], pending: &[String]) -> Option<String> {
    let mut parts = Vec::new();
    if !deleted.is_empty() {
        parts.push(format!(
            "deleted the servers an earlier runtime update left in maintenance: {}",
            deleted.join(", ")
        ));
    }
    if !pending.is_empty() {
        parts.push(format!(
            "still in maintenance until their connections end, deletion retried by the next run: \
             {}",
            pending.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Writes the candidate config to a temp file beside the live one and puts its companions in
/// place, ready for `haproxy -c`.
///
/// Companions (map files) are referenced by the config at their live paths, so `haproxy -c`
/// only sees the candidate's maps if they are already in place. Swapping them in before
/// validating is safe: HAProxy reads map files only when it starts or reloads, and every path
/// that does not end in a successful reload puts the previous ones back (`CompanionSwap`).
fn stage_with_companions(
    candidate: &Candidate,
    live_config: &LiveFile,
    live_companions: Vec<LiveFile>,
) -> Result<(tempfile::NamedTempFile, CompanionSwap)> {
    let staged = write::stage(
        &live_config.target,
        candidate.config.as_bytes(),
        live_config.metadata.as_ref(),
    )
    .context(Failure::WriteFailed)?;
    let mut swap = CompanionSwap::default();
    for (previous, (_, content)) in live_companions.into_iter().zip(&candidate.companions) {
        if previous.holds(content.as_bytes()) {
            continue;
        }
        if let Err(e) = swap.install(previous, content.as_bytes()) {
            return Err(undo(e, &mut swap).context(Failure::WriteFailed));
        }
    }
    Ok((staged, swap))
}

/// `<haproxy_bin> -c -f <candidate>`, bounded by the command timeout.
fn validate(config: &ApplyConfig, candidate: &Path) -> Result<(), CommandError> {
    let mut check = Command::new(&config.haproxy_bin);
    check.arg("-c").arg("-f").arg(candidate);
    command::run(check, "haproxy -c", config.command_timeout)
}

/// Reloads HAProxy, bounded by the command timeout: through the master socket when one is
/// configured (confirmed by `show proc`), else the reload command through `sh -c`.
/// `name` tells the first reload from the rollback's in messages.
fn reload(config: &ApplyConfig, name: &str) -> Result<()> {
    match &config.haproxy_master_socket {
        Some(socket) => master::reload(socket, name, config.command_timeout)?,
        None => {
            let mut shell = Command::new("sh");
            shell.arg("-c").arg(&config.reload_command);
            // The first reload's output is framed as the reload command's, as the flag says.
            let name = if name == "reload" {
                "reload command"
            } else {
                name
            };
            command::run(shell, name, config.command_timeout)?;
        }
    }
    Ok(())
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
    match write::keep_as(staged, &rejected) {
        Ok(()) => {
            let kept = rejected.display().to_string();
            failure.stderr = failure.stderr.replace(&checked, &kept);
            failure.stdout = failure.stdout.replace(&checked, &kept);
            format!("the rejected candidate is kept at {kept}")
        }
        // The temp file is removed when the error drops it.
        Err(e) => format!(
            "could not keep the rejected candidate at {}: {e:#}",
            rejected.display()
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
///
/// Once the previous files are back, the reload-pending marker goes: a failed reload leaves
/// HAProxy on its previous workers, which run what is on disk again, whether or not the
/// rollback's own reload succeeds. If the files could not be put back, it stays.
fn roll_back(config: &ApplyConfig, previous: &LiveFile, swap: &mut CompanionSwap) -> Result<()> {
    let config_back = previous.restore();
    let companions_back = swap.restore();
    config_back.with_context(|| format!("restoring {}", previous.path.display()))?;
    companions_back.context("restoring the companion files")?;
    let _ = state::clear_reload_pending(&config.haproxy_config);
    reload(config, "rollback reload").context("reloading the previous configuration")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_is_read_alike_on_a_thread_and_here() {
        let backend = |n: usize| format!("backend b{n}\n  server s{n} 10.0.0.1:{n}\n");
        let frontend = |n: usize| format!("frontend f{n}\n  bind *:{n}\n");
        let text: String = (0..8000).map(|n| frontend(n) + &backend(n)).collect();
        assert!(text.len() >= CANDIDATE_THREAD_FROM);
        let mut apps = BackendApps::default();
        apps.names.insert("b1".to_string(), "/one".to_string());
        apps.names.insert("b2".to_string(), "/one".to_string());
        apps.names.insert("b3".to_string(), "/three".to_string());
        let read_on_thread = |listeners: &ListenersJob| {
            std::thread::scope(|scope| {
                let reading = CandidateReading::start(scope, (&text, &apps), listeners);
                assert!(matches!(reading, CandidateReading::Thread(_)));
                reading.finish()
            })
        };
        let side = read_on_thread(&ListenersJob::default());
        assert_eq!(side.inventory, Inventory::of(&text));
        assert_eq!(side.served, Served::of_config(&text, &apps));
        assert_eq!(side.served.apps, 2);
        assert_eq!(side.listeners, Some(refusal::listeners(&text)));
        assert_eq!(side.listeners.map(|listeners| listeners.len()), Some(8000));
        // Told the candidate is unchanged, or with the job taken here, the thread reads none.
        let unchanged = ListenersJob::default();
        unchanged.not_wanted();
        let side = read_on_thread(&unchanged);
        assert_eq!(side.inventory, Inventory::of(&text));
        assert_eq!(side.listeners, None);
        assert!(!unchanged.take(), "a job not wanted is not taken");
        let taken_here = ListenersJob::default();
        assert!(taken_here.take());
        assert!(!taken_here.take(), "a job is taken once");
        assert_eq!(read_on_thread(&taken_here).listeners, None);
        let small = frontend(1) + &backend(1);
        let listeners = ListenersJob::default();
        let side = std::thread::scope(|scope| {
            let reading = CandidateReading::start(scope, (&small, &apps), &listeners);
            assert!(matches!(reading, CandidateReading::Here(..)));
            reading.finish()
        });
        assert_eq!(side.inventory, Inventory::of(&small));
        assert_eq!(side.served, Served::of_config(&small, &apps));
        assert_eq!(side.listeners, Some(refusal::listeners(&small)));
    }
}
