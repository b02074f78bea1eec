//! What one run leaves for the next, since cron runs share no memory: the time of the last
//! reload (`<config>.state`, JSON, for `--min-reload-interval`) and the reload-pending marker
//! (`<config>.reload-pending`, present from just before the rename until the reload is settled,
//! so a run killed in between is finished by the next one), and the runtime-pending marker
//! (`<config>.runtime-pending`, present while servers are changed through the runtime API and
//! until the file matching them is in place; the next run reloads), and the servers a runtime
//! update left in maintenance because connections remained (`<config>.runtime-deletions`, JSON,
//! with the worker that holds them, so later runs delete them once their connections end).
//! Only touched under the lock (read-only by dry runs and `status`), and like every file beside
//! the config, written by temp file and rename, never through a link.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::write;

/// The `<config>.state` file.
#[derive(Debug, Serialize, Deserialize)]
struct Recorded {
    /// When this tool last asked HAProxy to reload, in milliseconds since the Unix epoch.
    last_reload_unix_ms: u64,
}

/// Where the reload time is kept.
pub fn state_path(haproxy_config: &Path) -> PathBuf {
    write::with_suffix(haproxy_config, ".state")
}

/// Where the reload-pending marker lives.
pub fn pending_path(haproxy_config: &Path) -> PathBuf {
    write::with_suffix(haproxy_config, ".reload-pending")
}

/// The last recorded reload. A missing or unreadable state file counts as "no reload
/// recorded", so a damaged file can never hold changes back; so does a time in the future
/// (the clock was set back), which could otherwise defer changes for as long as it was off.
pub fn last_reload(haproxy_config: &Path, now: SystemTime) -> Option<SystemTime> {
    let text = write::read_own(&state_path(haproxy_config)).ok()??;
    let recorded: Recorded = serde_json::from_slice(&text).ok()?;
    let at = UNIX_EPOCH + Duration::from_millis(recorded.last_reload_unix_ms);
    (at <= now).then_some(at)
}

/// Records `at` as the last reload, atomically (temp file, fsync, rename, fsync directory).
pub fn record_reload(haproxy_config: &Path, at: SystemTime) -> Result<()> {
    let path = state_path(haproxy_config);
    let millis = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let recorded = Recorded {
        last_reload_unix_ms: u64::try_from(millis).unwrap_or(u64::MAX),
    };
    let mut text = serde_json::to_vec(&recorded).context("encoding the reload state")?;
    text.push(b'\n');
    write::replace(&path, &text, None)
        .with_context(|| format!("recording the reload time in {}", path.display()))
}

/// True when a previous run installed a config and was stopped before its reload settled.
/// Anything under the marker's name counts, a link too (never followed): at worst one extra
/// reload, after which the name is cleared.
pub fn reload_pending(haproxy_config: &Path) -> bool {
    marker_present(&pending_path(haproxy_config))
}

/// Creates the marker, durably, before the live config is replaced.
pub fn mark_reload_pending(haproxy_config: &Path) -> Result<()> {
    create_marker(&pending_path(haproxy_config))
}

/// Removes the marker once HAProxy runs what is on disk.
pub fn clear_reload_pending(haproxy_config: &Path) -> Result<()> {
    remove_marker(&pending_path(haproxy_config))
}

/// Where the runtime-pending marker lives.
pub fn runtime_pending_path(haproxy_config: &Path) -> PathBuf {
    write::with_suffix(haproxy_config, ".runtime-pending")
}

/// True when a previous run began changing servers through the runtime API and was stopped
/// before the file matching them was in place: HAProxy may run neither file, so reload.
pub fn runtime_pending(haproxy_config: &Path) -> bool {
    marker_present(&runtime_pending_path(haproxy_config))
}

/// Creates the runtime-pending marker before the first runtime command (as the reload one).
pub fn mark_runtime_pending(haproxy_config: &Path) -> Result<()> {
    create_marker(&runtime_pending_path(haproxy_config))
}

/// Removes the runtime-pending marker once HAProxy runs what is on disk.
pub fn clear_runtime_pending(haproxy_config: &Path) -> Result<()> {
    remove_marker(&runtime_pending_path(haproxy_config))
}

/// The `<config>.runtime-deletions` record: servers an earlier runtime update put in
/// maintenance and could not delete yet, because connections remained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingDeletions {
    /// The worker that holds them: any other worker (a reload, ours or anyone's) no longer has
    /// them, and the record is moot.
    pub worker: u32,
    /// `backend/server`, sorted, without duplicates.
    pub servers: Vec<String>,
}

/// Where the servers left pending deletion are recorded.
pub fn deletions_path(haproxy_config: &Path) -> PathBuf {
    write::with_suffix(haproxy_config, ".runtime-deletions")
}

/// The servers an earlier runtime update left pending deletion. A missing, damaged or empty
/// record is `None`; names HAProxy would not allow (a record edited by hand) are dropped, since
/// they are sent to HAProxy's CLI.
pub fn pending_deletions(haproxy_config: &Path) -> Option<PendingDeletions> {
    let text = write::read_own(&deletions_path(haproxy_config)).ok()??;
    let mut record: PendingDeletions = serde_json::from_slice(&text).ok()?;
    record.servers.retain(|what| is_server_path(what));
    record.servers.sort();
    record.servers.dedup();
    (!record.servers.is_empty()).then_some(record)
}

/// Records the servers left pending deletion, or removes the record when there are none.
pub fn record_pending_deletions(haproxy_config: &Path, record: &PendingDeletions) -> Result<()> {
    if record.servers.is_empty() {
        return clear_pending_deletions(haproxy_config);
    }
    let path = deletions_path(haproxy_config);
    let mut text = serde_json::to_vec(record).context("encoding the pending deletions")?;
    text.push(b'\n');
    write::replace(&path, &text, None).with_context(|| format!("writing {}", path.display()))
}

/// Removes the record (after a reload, which leaves no server of the old worker behind).
pub fn clear_pending_deletions(haproxy_config: &Path) -> Result<()> {
    remove_marker(&deletions_path(haproxy_config))
}

/// Why a previous run left HAProxy possibly running something other than the file on disk —
/// stopped after putting a config in place and before its reload was confirmed, or during a
/// runtime update — or `None` when it did not. Every such run's next run reloads.
pub fn interrupted_run(haproxy_config: &Path) -> Option<&'static str> {
    if reload_pending(haproxy_config) {
        Some("a previous run was stopped before its reload was confirmed")
    } else if runtime_pending(haproxy_config) {
        Some("a previous run was stopped during a runtime update")
    } else {
        None
    }
}

/// After HAProxy confirmed a reload of the file on disk: it runs that file, so no earlier
/// reload or runtime update is left unfinished and the new worker has no server left pending
/// deletion. Best effort: a marker left behind costs one needless reload, never a wrong one.
pub fn settled_after_reload(haproxy_config: &Path) {
    let _ = clear_reload_pending(haproxy_config);
    let _ = clear_runtime_pending(haproxy_config);
    let _ = clear_pending_deletions(haproxy_config);
}

/// `backend/server` with both names made of what HAProxy allows in a name (letters, digits,
/// `-`, `_`, `.`, `:`).
fn is_server_path(what: &str) -> bool {
    let name = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    };
    what.split_once('/')
        .is_some_and(|(backend, server)| name(backend) && name(server))
}

fn marker_present(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}

/// An empty temp file renamed into place, so a link planted under the marker's name is
/// replaced, never written through.
fn create_marker(path: &Path) -> Result<()> {
    write::replace(path, b"", None).with_context(|| format!("creating {}", path.display()))
}

fn remove_marker(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => write::sync_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

/// `2026-11-25T10:31:07Z`: UTC, to the second.
pub fn utc_timestamp(at: SystemTime) -> String {
    crate::clock::utc_seconds(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661);
        assert_eq!(utc_timestamp(leap_day), "2000-02-29T01:01:01Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_602_667);
        assert_eq!(utc_timestamp(later), "2026-11-25T10:31:07Z");
    }

    #[test]
    fn recorded_reload_reads_back_and_damage_or_the_future_counts_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        let now = SystemTime::now();
        assert_eq!(last_reload(&config, now), None);
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        record_reload(&config, at).unwrap();
        assert_eq!(last_reload(&config, now), Some(at));
        assert_eq!(
            last_reload(&config, UNIX_EPOCH),
            None,
            "future reload ignored"
        );
        fs::write(state_path(&config), "{\"last_reload_unix").unwrap();
        assert_eq!(last_reload(&config, now), None);
    }

    #[test]
    fn pending_marker_comes_and_goes() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        assert!(!reload_pending(&config));
        mark_reload_pending(&config).unwrap();
        assert!(reload_pending(&config));
        clear_reload_pending(&config).unwrap();
        clear_reload_pending(&config).unwrap();
        assert!(!reload_pending(&config));
        mark_runtime_pending(&config).unwrap();
        assert!(runtime_pending(&config) && !reload_pending(&config));
        clear_runtime_pending(&config).unwrap();
        clear_runtime_pending(&config).unwrap();
        assert!(!runtime_pending(&config));
    }

    #[test]
    fn pending_deletions_read_back_and_hand_edited_names_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        assert_eq!(pending_deletions(&config), None);
        let record = PendingDeletions {
            worker: 42,
            servers: vec!["web_10000/127_0_0_1_4000".into()],
        };
        record_pending_deletions(&config, &record).unwrap();
        assert_eq!(pending_deletions(&config), Some(record));
        fs::write(
            deletions_path(&config),
            r#"{"worker":7,"servers":["b/s; shutdown sessions b/s","b/s","b/s","nobackend"]}"#,
        )
        .unwrap();
        let read = pending_deletions(&config).unwrap();
        assert_eq!((read.worker, read.servers), (7, vec!["b/s".to_string()]));
        let none = PendingDeletions {
            worker: 7,
            servers: vec![],
        };
        record_pending_deletions(&config, &none).unwrap();
        assert!(!deletions_path(&config).exists());
        fs::write(deletions_path(&config), "{\"worker\"").unwrap();
        assert_eq!(pending_deletions(&config), None);
    }
}
