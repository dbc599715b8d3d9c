//! The `fs` capability: path resolution and checking, and the file operations.
//!
//! A path is checked *after* resolving symlinks and `..`, against the step's view of the
//! resolved path: a symlink inside an allowed directory that leads elsewhere is judged by
//! where it leads. Writes replace files atomically (temporary file, fsync, rename) and the
//! first change of each file in a run is preceded by a durable backup, so a failed upgrade
//! can be inspected and undone.

mod beneath;

use std::io;
use std::path::{Path, PathBuf};

use globset::GlobMatcher;
use nix::sys::stat::FileStat;

use self::beneath::{Entry, WalkError};
use super::{Denial, FsRules, Grant, PatternError, glob};
use crate::backup::{Backups, Original};
use crate::durable::is_dir;
pub use crate::durable::kind;

use crate::sysroot::Sysroot;

#[derive(Debug, Clone)]
pub(crate) struct CompiledFsRules {
    read: Vec<GlobMatcher>,
    write: Vec<GlobMatcher>,
    create: Vec<GlobMatcher>,
    deny: Vec<GlobMatcher>,
}

impl CompiledFsRules {
    pub(crate) fn new(rules: &FsRules, origin: &str) -> Result<Self, PatternError> {
        let compile = |list: &[String]| list.iter().map(|p| glob(p, true, origin)).collect::<Result<Vec<_>, _>>();
        Ok(Self { read: compile(&rules.read)?, write: compile(&rules.write)?, create: compile(&rules.create)?, deny: compile(&rules.deny)? })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Making a directory (`fs.create-dir`): under the write rules, like a change; an
    /// existing directory needs no check, there is nothing to do.
    CreateDir,
}

impl Access {
    /// What is asked for `path`, as a denial names it.
    fn of(self, path: &str) -> String {
        match self {
            Access::Read => format!("read of {path}"),
            Access::Write => format!("write of {path}"),
            Access::CreateDir => format!("creation of the directory {path}"),
        }
    }
}

/// A checked path: what the step sees, where it really is, and the walk that reached it (the
/// operation uses the walk's descriptor, never the path again: `beneath.rs`).
pub struct Resolved {
    /// The step's view of the resolved path (symlinks and `..` followed).
    pub logical: PathBuf,
    /// The object's directory and name; `None` when a directory on the way does not exist.
    entry: Option<Entry>,
    /// What the object was when checked; `None` when absent.
    stat: Option<FileStat>,
    /// A write may create the file (it did not exist when checked, and `create` allows it).
    pub(crate) creatable: bool,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved").field("logical", &self.logical).field("creatable", &self.creatable).finish()
    }
}

/// Resolves `logical` under the sysroot in one walk on descriptors (`beneath::walk`).
fn resolve(sysroot: &Sysroot, logical: &str) -> Result<Resolved, Denial> {
    let invalid = |why: &str| Denial::Invalid { what: format!("path {logical:?}"), why: why.into() };
    if !logical.starts_with('/') || logical.contains('\0') {
        return Err(invalid("paths must be absolute"));
    }
    let dir = sysroot
        .dir()
        .map_err(|e| Denial::Invalid { what: format!("path {logical}"), why: format!("the sysroot {} cannot be opened: {e}", sysroot.root().display()) })?;
    match beneath::walk(sysroot.root(), dir, Path::new(logical)) {
        Ok(walk) => Ok(Resolved { logical: walk.logical, entry: walk.entry, stat: walk.stat, creatable: false }),
        Err(WalkError::Outside { to }) => Err(Denial::Invalid { what: format!("path {logical}"), why: format!("it leads to {to}, outside the sysroot") }),
        Err(WalkError::Invalid(why)) => Err(invalid(why)),
        Err(WalkError::Io(e)) => Err(Denial::Invalid { what: format!("path {logical}"), why: format!("it cannot be resolved: {e}") }),
    }
}

/// Files that hold the databases' passwords: no step reads or writes them, whatever its
/// declaration and the policy say. canup reads them itself, for the commands whose rule names
/// them as `env_file` and for the database endpoints.
pub const SECRET_FILES: &[&str] = &[super::database::GO_ENGINES_VARS];

impl Grant {
    /// The single checkpoint for `fs`.
    pub fn check_fs(&self, sysroot: &Sysroot, path: &str, access: Access) -> Result<Resolved, Denial> {
        let mut resolved = resolve(sysroot, path)?;
        if let Some(secret) = SECRET_FILES.iter().find(|f| resolved.logical == Path::new(f)) {
            return Err(Denial::Forbidden {
                what: access.of(path),
                why: format!(
                    "{secret} holds the databases' passwords: canup exports it to the commands whose rule names it as env_file, and connects the database endpoints with it"
                ),
            });
        }
        if access == Access::CreateDir && resolved.stat.as_ref().is_some_and(is_dir) {
            return Ok(resolved);
        }
        let shown = if resolved.logical == Path::new(path) { path.to_owned() } else { format!("{path} (resolves to {})", resolved.logical.display()) };
        let matches = |list: &[GlobMatcher]| list.iter().any(|g| g.is_match(&resolved.logical));
        if matches(&self.policy.fs.deny) {
            return Err(Denial::NotInPolicy { step: self.step.clone(), what: format!("{} (the operator's [deny] paths in canup.toml)", access.of(&shown)) });
        }
        self.both(
            || access.of(&shown),
            |side| match access {
                Access::Read => matches(&side.fs.read),
                Access::Write | Access::CreateDir => matches(&side.fs.write),
            },
        )?;
        // Creating is granted apart from changing: a new file in a directory of fragments (a
        // systemd drop-in, a conf.d) adds behaviour that no existing file had.
        if access == Access::Write && resolved.stat.is_none() {
            self.both(|| format!("creation of {shown} (a new file)"), |side| matches(&side.fs.create))?;
            resolved.creatable = true;
        }
        Ok(resolved)
    }
}

impl Resolved {
    fn entry(&self) -> io::Result<&Entry> {
        self.entry.as_ref().ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("a directory of {} does not exist", self.logical.display())))
    }
}

/// A file the host itself reads for a step (an exec rule's `env_file`, the databases' URLs in
/// go-engines-vars.conf), walked beneath the sysroot as a step's read is, without a
/// capability check: the declaration and the policy named it, the step never sees it.
pub fn read_for_host(sysroot: &Sysroot, logical: &str, max: usize) -> io::Result<Vec<u8>> {
    let resolved = resolve(sysroot, logical).map_err(|d| io::Error::new(io::ErrorKind::InvalidInput, d.to_string()))?;
    read(&resolved, max)
}

/// What `canup restore-files` does to one path a run changed, on descriptors like a step's
/// change: the path is walked beneath the sysroot again and must still be what the run
/// changed, with no symbolic link on the way (a local user who swapped
/// `/opt/canopsis/etc` for a link once made root write a file where they chose).
pub enum Restore<'a> {
    /// Put back this content, with these permission bits.
    File(&'a [u8], Option<u32>),
    /// Remove the file the run created; `false` when it is already gone.
    Remove,
    /// Remove the directory the run created (only when empty).
    RemoveDir,
}

pub fn restore(sysroot: &Sysroot, logical: &Path, what: Restore<'_>) -> io::Result<bool> {
    let shown = logical.display().to_string();
    let resolved = resolve(sysroot, &shown).map_err(|d| io::Error::new(io::ErrorKind::PermissionDenied, d.to_string()))?;
    if resolved.logical != logical {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{shown} now leads to {} through a symbolic link, which the run did not change: restore it by hand", resolved.logical.display()),
        ));
    }
    if matches!(what, Restore::Remove | Restore::RemoveDir) && resolved.stat.is_none() {
        return Ok(false);
    }
    let entry = resolved.entry()?;
    match what {
        Restore::File(data, mode) => {
            entry.replace(data)?;
            if let Some(mode) = mode {
                entry.set_mode(mode)?;
            }
            Ok(true)
        }
        Restore::Remove => entry.remove().map(|()| true),
        Restore::RemoveDir => entry.remove_dir().map(|()| true),
    }
}

/// The names in a directory the host lists for itself (a content check's project), walked
/// beneath the sysroot like a step's path.
pub fn list_for_host(sysroot: &Sysroot, logical: &str) -> io::Result<Vec<String>> {
    let resolved = resolve(sysroot, logical).map_err(|d| io::Error::new(io::ErrorKind::InvalidInput, d.to_string()))?;
    list(&resolved)
}

/// A file's content for a step, at most `max` bytes (`fs_read_kib`).
pub fn read(path: &Resolved, max: usize) -> io::Result<Vec<u8>> {
    path.entry()?.read(max)
}

/// Whether the path led to something when it was checked (a walk that just happened).
pub fn exists(path: &Resolved) -> io::Result<bool> {
    Ok(path.stat.is_some())
}

pub fn list(path: &Resolved) -> io::Result<Vec<String>> {
    path.entry()?.list()
}

/// What the path leads to, as the walk that checked it found it (a final symlink followed,
/// as for a read).
pub fn metadata(path: &Resolved) -> io::Result<FileStat> {
    path.stat.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
}

/// Replaces the file's content atomically, keeping its mode and owner.
pub fn write(path: &Resolved, data: &[u8], max: usize, backups: &mut Backups) -> io::Result<()> {
    let entry = path.entry()?;
    let original = original(entry, path, max)?;
    backups.save(&path.logical, original.as_ref())?;
    entry.replace(data)
}

/// Appends by rewriting the whole file atomically: a crash leaves either the old or the new
/// content, never half a line. The result is bounded like a read (`fs_read_kib`).
pub fn append(path: &Resolved, data: &[u8], max: usize, backups: &mut Backups) -> io::Result<()> {
    let entry = path.entry()?;
    let original = original(entry, path, max)?;
    let mut content = original.as_ref().map(|o| o.content.clone()).unwrap_or_default();
    if content.len() + data.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{} bytes after the append, over the limit of {max} bytes (fs_read_kib in canup.toml)", content.len() + data.len()),
        ));
    }
    content.extend_from_slice(data);
    backups.save(&path.logical, original.as_ref())?;
    entry.replace(&content)
}

/// Makes one directory whose parent exists (`mode`, the parent's owner), recorded first in the
/// run's backups so that `restore-files` can take it away again; `false` when it already was
/// a directory.
pub fn create_dir(path: &Resolved, mode: u32, backups: &mut Backups) -> io::Result<bool> {
    match &path.stat {
        Some(st) if is_dir(st) => Ok(false),
        Some(_) => Err(io::Error::new(io::ErrorKind::AlreadyExists, "it exists and is not a directory")),
        None => {
            let entry = path.entry()?;
            backups.save_created_dir(&path.logical)?;
            entry.make_dir(mode)?;
            Ok(true)
        }
    }
}

/// The directories of `path` (absolute, no `.` or `..`) that do not exist, outermost first:
/// what `mkdir -p` would make. Judged by the same walk as every other path, not checked.
pub fn missing_dirs(sysroot: &Sysroot, path: &str) -> Result<Vec<String>, Denial> {
    let invalid = |why: &str| Denial::Invalid { what: format!("directory {path:?}"), why: why.into() };
    if !path.starts_with('/') || path.split('/').any(|c| c == "." || c == "..") {
        return Err(invalid("give an absolute path without '.' or '..'"));
    }
    let mut prefix = String::new();
    let mut missing = Vec::new();
    for name in path.split('/').filter(|c| !c.is_empty()) {
        prefix.push('/');
        prefix.push_str(name);
        if !missing.is_empty() || resolve(sysroot, &prefix)?.stat.is_none() {
            missing.push(prefix.clone());
        }
    }
    Ok(missing)
}

pub fn remove(path: &Resolved, max: usize, backups: &mut Backups) -> io::Result<()> {
    let entry = path.entry()?;
    if entry.stat()?.as_ref().is_some_and(is_dir) {
        return Err(io::Error::new(io::ErrorKind::IsADirectory, "steps remove files, not directories"));
    }
    let original = original(entry, path, max)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
    backups.save(&path.logical, Some(&original))?;
    entry.remove()
}

/// What a file held before a change, for its backup: read like a step's read (regular, one
/// name, bounded), through the descriptor the change will use. `None` when there is no file,
/// which only a path the checkpoint found creatable may be.
fn original(entry: &Entry, path: &Resolved, max: usize) -> io::Result<Option<Original>> {
    match entry.stat()? {
        None if path.creatable => Ok(None),
        None => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} was removed since it was checked, and creating it is not granted", path.logical.display()),
        )),
        Some(st) => Ok(Some(Original { content: entry.read(max)?, mode: st.st_mode & 0o7777 })),
    }
}
