//! Filesystem faults for tests, undone when dropped: a directory made immutable with
//! `chattr +i` (which stops root too) and a small tmpfs mounted over a directory. Both need
//! root, as CI and `scripts/test` run; without it they fail the test, never skip it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// `dir` is immutable until this is dropped.
pub struct Immutable(PathBuf);

impl Immutable {
    pub fn new(dir: &Path) -> Immutable {
        let done = Command::new("chattr").arg("+i").arg(dir).status();
        assert!(
            matches!(done, Ok(status) if status.success()),
            "chattr +i {} failed (the test needs root and chattr): {done:?}",
            dir.display()
        );
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A tmpfs of `size` (e.g. `64k`) mounted on `dir` until this is dropped.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn new(dir: &Path, size: &str) -> SmallDisk {
        let done = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status();
        assert!(
            matches!(done, Ok(status) if status.success()),
            "mounting a tmpfs on {} failed (the test needs root): {done:?}",
            dir.display()
        );
        SmallDisk(dir.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
