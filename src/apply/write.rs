//! File primitives of an apply: read a live file, stage a temp file beside its target (fsynced,
//! with the target's mode and owner), replace atomically, rotate archives, and swap companion
//! files in with a way back. Every temp file is removed on error (`NamedTempFile`'s drop).

use std::fs::{self, File, Metadata, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

/// Mode of a file that did not exist before: what `umask 022` would give.
const NEW_FILE_MODE: u32 = 0o644;

/// A file as it was found before the apply changed anything.
#[derive(Debug)]
pub struct LiveFile {
    pub path: PathBuf,
    /// `None` when the file does not exist (shown as empty in diffs).
    pub content: Option<Vec<u8>>,
    pub metadata: Option<Metadata>,
}

impl LiveFile {
    pub fn read(path: &Path) -> Result<LiveFile> {
        let found = File::open(path).and_then(|mut file| {
            let metadata = file.metadata()?;
            let mut content = Vec::with_capacity(metadata.len() as usize);
            io::Read::read_to_end(&mut file, &mut content)?;
            Ok((content, metadata))
        });
        match found {
            Ok((content, metadata)) => Ok(LiveFile {
                path: path.to_path_buf(),
                content: Some(content),
                metadata: Some(metadata),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LiveFile {
                path: path.to_path_buf(),
                content: None,
                metadata: None,
            }),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// True when the file exists and holds exactly `wanted`. A missing file never does, not
    /// even an empty candidate: an empty map file must still exist for HAProxy to load it.
    pub fn holds(&self, wanted: &[u8]) -> bool {
        self.content.as_deref() == Some(wanted)
    }

    /// The content as text for diffs and summaries (missing = empty).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(self.content.as_deref().unwrap_or_default()).into_owned()
    }

    /// Puts this previous state back: the old content atomically, or no file if there was none.
    pub fn restore(&self) -> Result<()> {
        match &self.content {
            Some(content) => replace(&self.path, content, self.metadata.as_ref()),
            None => match fs::remove_file(&self.path) {
                Ok(()) => sync_dir(&self.path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
            },
        }
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `<path><suffix>`, e.g. `haproxy.cfg` + `.1` → `haproxy.cfg.1`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// The temp-file name parts [`stage`] uses for `target`: `.<name>.<random>.tmp`.
fn temp_affixes(target: &Path) -> (String, &'static str) {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    (format!(".{name}."), ".tmp")
}

/// Removes temp files that [`stage`] made for `target` and a killed run left behind. Only call
/// it under the lock. Best effort: a file that cannot be removed is left for the next run.
pub fn remove_leftover_temp_files(target: &Path) {
    let (prefix, suffix) = temp_affixes(target);
    let Ok(entries) = fs::read_dir(parent_dir(target)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let random_part = name.len() > prefix.len() + suffix.len();
        if random_part && name.starts_with(&prefix) && name.ends_with(suffix) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Writes `content` to a new temp file in `target`'s directory, with `like`'s mode and owner
/// (or [`NEW_FILE_MODE`]), and fsyncs it. Dropping the result removes the file.
pub fn stage(target: &Path, content: &[u8], like: Option<&Metadata>) -> Result<NamedTempFile> {
    let dir = parent_dir(target);
    let (prefix, suffix) = temp_affixes(target);
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(suffix)
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let written = (|| -> io::Result<()> {
        file.write_all(content)?;
        let mode = like.map_or(NEW_FILE_MODE, |m| m.mode() & 0o7777);
        file.as_file()
            .set_permissions(Permissions::from_mode(mode))?;
        if let Some(like) = like {
            let ours = file.as_file().metadata()?;
            if (ours.uid(), ours.gid()) != (like.uid(), like.gid()) {
                std::os::unix::fs::chown(file.path(), Some(like.uid()), Some(like.gid()))?;
            }
        }
        file.as_file().sync_all()
    })();
    written.with_context(|| format!("writing {}", file.path().display()))?;
    Ok(file)
}

/// Renames a staged file over `target` and fsyncs the directory, so the rename survives a crash.
pub fn put_in_place(staged: NamedTempFile, target: &Path) -> Result<()> {
    let from = staged.path().to_path_buf();
    staged
        .persist(target)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming {} to {}", from.display(), target.display()))?;
    sync_dir(target)
}

/// Atomically replaces `target` with `content`, keeping `like`'s mode and owner.
pub fn replace(target: &Path, content: &[u8], like: Option<&Metadata>) -> Result<()> {
    put_in_place(stage(target, content, like)?, target)
}

/// fsyncs the directory holding `path`, making a rename or removal in it durable.
pub fn sync_dir(path: &Path) -> Result<()> {
    let dir = parent_dir(path);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Keeps `versions` previous configs: `<config>.1` (newest) .. `<config>.N`. Rotates the older
/// ones up by one (the oldest falls off) and writes `previous` as `<config>.1`, atomically.
pub fn archive(previous: &LiveFile, versions: usize) -> Result<()> {
    let Some(content) = &previous.content else {
        return Ok(()); // nothing was live: nothing to keep
    };
    if versions == 0 {
        return Ok(());
    }
    for number in (1..versions).rev() {
        let older = with_suffix(&previous.path, &format!(".{number}"));
        let newer = with_suffix(&previous.path, &format!(".{}", number + 1));
        match fs::rename(&older, &newer) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("rotating {} to {}", older.display(), newer.display())
                })
            }
        }
    }
    replace(
        &with_suffix(&previous.path, ".1"),
        content,
        previous.metadata.as_ref(),
    )
}

/// Companion files (map files) swapped in before validation, with what they replaced, so that a
/// failure later in the apply can put every one of them back.
#[derive(Debug, Default)]
pub struct CompanionSwap {
    replaced: Vec<LiveFile>,
}

impl CompanionSwap {
    /// Atomically puts `content` at `previous.path`, remembering `previous` for [`Self::restore`].
    pub fn install(&mut self, previous: LiveFile, content: &[u8]) -> Result<()> {
        let path = previous.path.clone();
        let like = previous.metadata.clone();
        // Remembered first: restoring a file that the failed write left untouched is harmless.
        self.replaced.push(previous);
        replace(&path, content, like.as_ref())
    }

    /// How many files were swapped in.
    pub fn len(&self) -> usize {
        self.replaced.len()
    }

    /// Puts every swapped file back (newest first), trying all of them even if one fails; the
    /// first failure is returned.
    pub fn restore(&mut self) -> Result<()> {
        let mut first_error = None;
        for previous in self.replaced.drain(..).rev() {
            if let Err(e) = previous.restore() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
