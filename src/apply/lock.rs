//! The exclusive run lock: an `fs2` (flock) lock on a separate, stable lock file, waited for with
//! a bounded, polling backoff. Never the config itself: a rename replaces the config's inode, so
//! a lock on it would protect nothing.
//!
//! `flock` needs only a read-only descriptor, so anyone who can open the lock file can hold it
//! and freeze every update. The file is therefore created 0600 (and an older, looser one is
//! tightened to 0600), opened without following a symbolic link, and refused unless it is a
//! regular file belonging to the user running the tool.

use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use fs2::FileExt;

use crate::error::Failure;

/// The lock file's mode: only its owner may open it, so only its owner may hold the lock.
pub const LOCK_FILE_MODE: u32 = 0o600;

/// Held until dropped: closing the file releases the lock. Rust opens files close-on-exec, so
/// a daemon started by the reload command cannot inherit and keep it.
#[derive(Debug)]
pub struct Held {
    _file: File,
}

/// Takes the lock on `path` (created if missing), waiting at most `timeout`.
pub fn acquire(path: &Path, timeout: Duration) -> Result<Held> {
    let file = open(path)?;
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

/// Opens (or creates, 0600) the lock file, refusing a link, anything but a regular file, and a
/// file someone else owns: each would let another user hold or redirect the lock. A refusal
/// counts as the lock not being taken (exit 5).
fn open(path: &Path) -> Result<File> {
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(LOCK_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused(path, "it is a symbolic link"));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("opening lock file {}", path.display()))
                .context(Failure::WriteFailed)
        }
    };
    let metadata = file
        .metadata()
        .with_context(|| format!("reading lock file {}", path.display()))
        .context(Failure::WriteFailed)?;
    if !metadata.is_file() {
        return Err(refused(path, "it is not a regular file"));
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    let ours = unsafe { libc::geteuid() };
    if metadata.uid() != ours {
        let why = format!(
            "it belongs to uid {}, not to uid {ours} running this tool",
            metadata.uid()
        );
        return Err(refused(path, &why));
    }
    if metadata.mode() & 0o777 != LOCK_FILE_MODE {
        // A lock file made by an older version (0644): from now on nobody else can open it.
        file.set_permissions(Permissions::from_mode(LOCK_FILE_MODE))
            .with_context(|| format!("making lock file {} mode 0600", path.display()))
            .context(Failure::WriteFailed)?;
    }
    Ok(file)
}

fn refused(path: &Path, why: &str) -> anyhow::Error {
    anyhow!(
        "refusing the lock file {}: {why}; remove it (the next run creates it again, mode 0600) \
         and check who can write to its directory; nothing was changed",
        path.display()
    )
    .context(Failure::LockTimeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_lock_file_is_0600_and_a_fifo_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("haproxy.cfg.lock");
        drop(acquire(&lock, Duration::ZERO).unwrap());
        let mode = std::fs::metadata(&lock).unwrap().mode() & 0o7777;
        assert_eq!(mode, LOCK_FILE_MODE);

        let fifo = dir.path().join("fifo.lock");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo touches nothing else.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let error = acquire(&fifo, Duration::ZERO).unwrap_err();
        assert_eq!(crate::error::classify(&error), Some(Failure::LockTimeout));
        assert!(
            format!("{error:#}").contains("it is not a regular file"),
            "{error:#}"
        );
    }
}
