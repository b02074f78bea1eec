//! The exclusive run lock: an `fs2` (flock) lock on a separate, stable lock file, waited for with
//! a bounded, polling backoff. Never the config itself: a rename replaces the config's inode, so
//! a lock on it would protect nothing.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use fs2::FileExt;

use crate::error::Failure;

/// Held until dropped: closing the file releases the lock. Rust opens files close-on-exec, so
/// a daemon started by the reload command cannot inherit and keep it.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Takes the lock on `path` (created if missing), waiting at most `timeout`.
pub fn acquire(path: &Path, timeout: Duration) -> Result<Held> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))
        .context(Failure::WriteFailed)?;
    let contended = fs2::lock_contended_error().raw_os_error();
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match file.try_lock_exclusive() {
            Ok(()) => return Ok(Held { _file: file }),
            Err(e) if e.raw_os_error() == contended => {}
            Err(e) => {
                return Err(e).with_context(|| format!("locking {}", path.display()));
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(anyhow!(
                "another run held the lock {} for longer than {:?}; nothing was changed",
                path.display(),
                timeout
            ))
            .context(Failure::LockTimeout);
        }
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
