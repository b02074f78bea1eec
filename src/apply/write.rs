//! File primitives of an apply: read a live file, stage a temp file beside its target (fsynced,
//! with the target's mode and owner), replace atomically, rotate archives, and swap companion
//! files in with a way back. Every temp file is removed on error (`NamedTempFile`'s drop).
//!
//! The tool runs as root in a directory others may be able to write to, so no file it keeps
//! beside the config is ever opened through a symbolic link: every write is a new temp file
//! (`O_EXCL`, which never follows a link) renamed over the name (a rename replaces a link, never
//! its target), every read of a kept file uses `O_NOFOLLOW`, and owner and mode are set on the
//! open file (`fchown`, `fchmod`). The one link followed is the config itself, as the operator
//! asked: its new content is renamed into the link's target, and the link stays.

use std::fs::{self, File, Metadata, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use tempfile::NamedTempFile;

use crate::error::Failure;

/// Mode of a file that did not exist before: what `umask 022` would give.
const NEW_FILE_MODE: u32 = 0o644;

/// Most permissive mode of the run record: it holds error messages (HAProxy's output, Marathon
/// URLs), so others may not read it; the owner and group it was given are kept.
const PRIVATE_FILE_MODE: u32 = 0o640;

/// Most links followed from the config path to the real file (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// A file as it was found before the apply changed anything.
#[derive(Debug)]
pub struct LiveFile {
    /// The name it is known by (diffs, archives, messages).
    pub path: PathBuf,
    /// Where its content lives and is written: `path` itself, except for a config given as a
    /// symbolic link, whose target this is.
    pub target: PathBuf,
    /// `None` when the file does not exist (shown as empty in diffs).
    pub content: Option<Vec<u8>>,
    pub metadata: Option<Metadata>,
}

impl LiveFile {
    /// Reads a file the tool keeps (a map file), refusing a symbolic link in its place.
    pub fn read(path: &Path) -> Result<LiveFile> {
        LiveFile::read_at(path, path.to_path_buf())
    }

    /// Reads the live config, following `path` if it is a symbolic link (see [`config_target`]).
    pub fn read_config(path: &Path) -> Result<LiveFile> {
        LiveFile::read_at(path, config_target(path)?)
    }

    fn read_at(path: &Path, target: PathBuf) -> Result<LiveFile> {
        let found = open_own(&target).and_then(|mut file| {
            let metadata = file.metadata()?;
            let mut content = Vec::with_capacity(metadata.len() as usize);
            io::Read::read_to_end(&mut file, &mut content)?;
            Ok((content, metadata))
        });
        let (content, metadata) = match found {
            Ok((content, metadata)) => (Some(content), Some(metadata)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
            // A link where a map file belongs stops the change before anything is written.
            Err(e) if is_link_refusal(&e) => {
                return Err(own_file_error(e, &target).context(Failure::WriteFailed))
            }
            Err(e) => return Err(own_file_error(e, &target)),
        };
        Ok(LiveFile {
            path: path.to_path_buf(),
            target,
            content,
            metadata,
        })
    }

    /// True when the file exists and holds exactly `wanted`. A missing file never does, not
    /// even an empty candidate: an empty map file must still exist for HAProxy to load it.
    pub fn holds(&self, wanted: &[u8]) -> bool {
        self.content.as_deref() == Some(wanted)
    }

    /// The content as text for diffs and summaries (missing = empty).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        // Borrowed when the file is UTF-8, as a config is: not a second copy of it. Checked
        // with `from_utf8` first: `from_utf8_lossy` walks the text a character at a time
        // without its ASCII fast path (60 M instructions for an 8.6 MB config against ~9 M).
        let content = self.content.as_deref().unwrap_or_default();
        match std::str::from_utf8(content) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(content),
        }
    }

    /// Puts this previous state back: the old content atomically, or no file if there was none.
    pub fn restore(&self) -> Result<()> {
        match &self.content {
            Some(content) => replace(&self.target, content, self.metadata.as_ref()),
            None => match fs::remove_file(&self.target) {
                Ok(()) => sync_dir(&self.target),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("removing {}", self.target.display())),
            },
        }
    }
}

/// Opens `path` for reading without following a symbolic link in its last component.
fn open_own(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// The error for a kept file that could not be opened: a symbolic link in its place is named
/// as such (`O_NOFOLLOW` reports it as ELOOP).
fn own_file_error(error: io::Error, path: &Path) -> anyhow::Error {
    if is_link_refusal(&error) {
        return anyhow!(
            "{} is a symbolic link; haproxy-marathon-sync keeps its own file there and never \
             follows a link to it (running as root, it would read or overwrite whatever the link \
             points to): remove the link",
            path.display()
        );
    }
    anyhow::Error::new(error).context(format!("reading {}", path.display()))
}

fn is_link_refusal(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ELOOP)
}

/// Reads a small file the tool keeps (run record, reload state); `None` when absent. A
/// symbolic link in its place is an error, never followed.
pub fn read_own(path: &Path) -> Result<Option<Vec<u8>>> {
    let read = open_own(path).and_then(|mut file| {
        if !file.metadata()?.is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        let mut content = Vec::new();
        io::Read::read_to_end(&mut file, &mut content)?;
        Ok(content)
    });
    match read {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(own_file_error(e, path)),
    }
}

/// Atomically replaces a file the tool keeps (metrics textfile), keeping the mode and owner of
/// the regular file found there; a link found there is replaced, never followed.
pub fn replace_own(path: &Path, content: &[u8]) -> Result<()> {
    replace(path, content, own_metadata(path).as_ref())
}

/// [`replace_own`] for the run record: its mode is at most [`PRIVATE_FILE_MODE`] (0640), so
/// only its owner and group may read it.
pub fn replace_private(path: &Path, content: &[u8]) -> Result<()> {
    let like = own_metadata(path);
    let mode = like
        .as_ref()
        .map_or(PRIVATE_FILE_MODE, |m| m.mode() & PRIVATE_FILE_MODE);
    let owner = like.as_ref().map(|m| (m.uid(), m.gid()));
    put_in_place(stage_as(path, content, mode, owner)?, path)
}

/// The metadata of the regular file at `path`, never of what a link there points to.
fn own_metadata(path: &Path) -> Option<Metadata> {
    fs::symlink_metadata(path).ok().filter(Metadata::is_file)
}

/// Where the config's content really lives: `path`, or, when `path` is a symbolic link (a
/// chain of them), the file it ends at, which need not exist yet. The new config is renamed
/// into that file's directory, so the link stays and points to the updated file (as
/// consul-template does).
///
/// A link is followed only when it belongs to the user running the tool (root) or to the
/// owner of the directory holding it: the rule Linux's `fs.protected_symlinks` applies in
/// sticky directories, here applied everywhere, since a rename does not ask the kernel to
/// follow anything. A link someone else planted could otherwise point root's writes at any file.
pub fn config_target(path: &Path) -> Result<PathBuf> {
    let mut current = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        let metadata = match fs::symlink_metadata(&current) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(current),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", current.display()));
            }
        };
        if !metadata.file_type().is_symlink() {
            return Ok(current);
        }
        check_link_owner(&current, &metadata)?;
        let points_to = fs::read_link(&current)
            .with_context(|| format!("reading the symbolic link {}", current.display()))?;
        current = parent_dir(&current).join(points_to);
    }
    bail!(
        "{} leads through more than {MAX_LINK_HOPS} symbolic links",
        path.display()
    )
}

/// Refuses to follow `link` unless it belongs to us or to the owner of its directory.
fn check_link_owner(link: &Path, metadata: &Metadata) -> Result<()> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    let ours = unsafe { libc::geteuid() };
    let dir = parent_dir(link);
    let dir_owner = fs::metadata(dir)
        .with_context(|| format!("reading directory {}", dir.display()))?
        .uid();
    if metadata.uid() == ours || metadata.uid() == dir_owner {
        return Ok(());
    }
    Err(anyhow!(
        "not following the symbolic link {}: it belongs to uid {}, neither to the user running \
         this tool (uid {ours}) nor to the owner of {} (uid {dir_owner}); a link someone else \
         made could point root's writes at any file",
        link.display(),
        metadata.uid(),
        dir.display()
    ))
    .context(Failure::WriteFailed)
}

/// One warning per directory the apply writes in (the config's, its link target's, the lock
/// file's) that users other than its owner may write to (group or others write bit, sticky or
/// not): whoever can write there can plant names the tool, running as root, is about to create
/// (a lock file held open, a map file, a link). Each directory is named once; one that cannot
/// be read is skipped (the apply itself reports it).
pub fn directory_warnings(haproxy_config: &Path, lock_file: &Path) -> Vec<String> {
    let target = config_target(haproxy_config).unwrap_or_else(|_| haproxy_config.to_path_buf());
    let dirs = [
        parent_dir(haproxy_config),
        parent_dir(&target),
        parent_dir(lock_file),
    ];
    let mut seen: Vec<&Path> = Vec::new();
    let mut warnings = Vec::new();
    for dir in dirs {
        if seen.contains(&dir) {
            continue;
        }
        seen.push(dir);
        let Ok(metadata) = fs::metadata(dir) else {
            continue;
        };
        let mode = metadata.mode() & 0o7777;
        if mode & 0o022 == 0 {
            continue;
        }
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and others",
            (true, false) => "its group",
            _ => "others",
        };
        let sticky = if mode & 0o1000 != 0 {
            " (the sticky bit keeps them from removing files, not from creating the names the \
             tool is about to use)"
        } else {
            ""
        };
        warnings.push(format!(
            "{} (mode {mode:04o}) may be written by {who}{sticky}: anyone who can write there can \
             plant files the tool, running as root, then uses; make it writable by its owner \
             alone (chmod go-w {})",
            dir.display(),
            dir.display()
        ));
    }
    warnings
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

/// [`remove_leftover_temp_files`] for the real file behind a config given as a symbolic link
/// (its temp files sit in the target's directory). Nothing when the config is no link.
pub fn remove_leftover_target_temp_files(haproxy_config: &Path) {
    if let Ok(target) = config_target(haproxy_config) {
        if target != haproxy_config {
            remove_leftover_temp_files(&target);
        }
    }
}

/// Writes `content` to a new temp file in `target`'s directory, with `like`'s mode and owner
/// (or [`NEW_FILE_MODE`]), and fsyncs it. Dropping the result removes the file.
pub fn stage(target: &Path, content: &[u8], like: Option<&Metadata>) -> Result<NamedTempFile> {
    let mode = like.map_or(NEW_FILE_MODE, |m| m.mode() & 0o7777);
    stage_as(target, content, mode, like.map(|m| (m.uid(), m.gid())))
}

/// [`stage`] with an explicit mode and, when given, owner and group. The temp file is created
/// with `O_EXCL` (a name already taken, a link included, is never opened), and mode and owner
/// are set on the open file, never by path.
fn stage_as(
    target: &Path,
    content: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<NamedTempFile> {
    let dir = parent_dir(target);
    let (prefix, suffix) = temp_affixes(target);
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(suffix)
        .tempfile_in(dir)
        .with_context(|| format!("creating a temp file in {}", dir.display()))?;
    let written = (|| -> io::Result<()> {
        file.write_all(content)?;
        let open = file.as_file();
        if let Some((uid, gid)) = owner {
            let ours = open.metadata()?;
            if (ours.uid(), ours.gid()) != (uid, gid) {
                std::os::unix::fs::fchown(open, Some(uid), Some(gid))?;
            }
        }
        // After fchown, which clears set-id bits.
        open.set_permissions(Permissions::from_mode(mode))?;
        open.sync_all()
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

/// Keeps a staged file under the name `to` (beside the config, while the staged file sits in
/// the directory of the config's link target, which may be another filesystem: then it is
/// copied there atomically instead).
pub fn keep_as(staged: NamedTempFile, to: &Path) -> Result<()> {
    match staged.persist(to) {
        Ok(_) => sync_dir(to),
        Err(e) if e.error.raw_os_error() == Some(libc::EXDEV) => {
            let staged = e.file;
            let content = fs::read(staged.path())
                .with_context(|| format!("reading {}", staged.path().display()))?;
            replace(to, &content, staged.as_file().metadata().ok().as_ref())
        }
        Err(e) => Err(e.error).with_context(|| format!("renaming to {}", to.display())),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn config_target_follows_a_chain_of_our_links_to_a_file_that_need_not_exist() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        assert_eq!(config_target(&config).unwrap(), config, "no file: itself");
        fs::create_dir(dir.path().join("real")).unwrap();
        symlink("middle.cfg", &config).unwrap();
        symlink("real/haproxy.cfg", dir.path().join("middle.cfg")).unwrap();
        let target = dir.path().join("real/haproxy.cfg");
        assert_eq!(config_target(&config).unwrap(), target);
        fs::write(&target, "x").unwrap();
        assert_eq!(config_target(&config).unwrap(), target);
    }

    #[test]
    fn config_target_gives_up_on_a_loop() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        symlink(&b, &a).unwrap();
        symlink(&a, &b).unwrap();
        let error = config_target(&a).unwrap_err().to_string();
        assert!(error.contains("more than 40 symbolic links"), "{error}");
    }

    #[test]
    fn a_link_is_replaced_by_a_write_and_refused_by_a_read() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        let kept = dir.path().join("haproxy.cfg.status");
        symlink(&victim, &kept).unwrap();
        let refused = format!("{:#}", read_own(&kept).unwrap_err());
        assert!(refused.contains("is a symbolic link"), "{refused}");
        let refused = format!("{:#}", LiveFile::read(&kept).unwrap_err());
        assert!(refused.contains("is a symbolic link"), "{refused}");
        replace_private(&kept, b"record").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(fs::read(&kept).unwrap(), b"record");
        let metadata = fs::symlink_metadata(&kept).unwrap();
        assert!(metadata.is_file());
        assert_eq!(metadata.mode() & 0o7777, PRIVATE_FILE_MODE);
        assert_eq!(read_own(&kept).unwrap().unwrap(), b"record");
        assert_eq!(read_own(&dir.path().join("absent")).unwrap(), None);
    }

    #[test]
    fn only_directories_others_may_write_are_named_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("haproxy.cfg");
        let lock = dir.path().join("haproxy.cfg.lock");
        fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        assert!(directory_warnings(&config, &lock).is_empty());
        fs::set_permissions(dir.path(), Permissions::from_mode(0o757)).unwrap();
        let warnings = directory_warnings(&config, &lock);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!(
                "{} (mode 0757) may be written by others: ",
                dir.path().display()
            )),
            "{warnings:?}"
        );
        fs::set_permissions(dir.path(), Permissions::from_mode(0o700)).unwrap();
    }
}
