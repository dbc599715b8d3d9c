//! The `fs` capability: path resolution and checking, and the file operations.
//!
//! A path is checked *after* resolving symlinks and `..`, against the step's view of the
//! resolved path: a symlink inside an allowed directory that leads elsewhere is judged by
//! where it leads. Writes replace files atomically (temporary file, fsync, rename) and the
//! first change of each file in a run is preceded by a durable backup, so a failed upgrade
//! can be inspected and undone.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use globset::GlobMatcher;

use super::{Denial, FsRules, Grant, PatternError, glob};
use crate::backup::Backups;
use crate::sysroot::Sysroot;

#[derive(Debug, Clone)]
pub(crate) struct CompiledFsRules {
    read: Vec<GlobMatcher>,
    write: Vec<GlobMatcher>,
}

impl CompiledFsRules {
    pub(crate) fn new(rules: &FsRules, origin: &str) -> Result<Self, PatternError> {
        let compile = |list: &[String]| list.iter().map(|p| glob(p, true, origin)).collect::<Result<Vec<_>, _>>();
        Ok(Self { read: compile(&rules.read)?, write: compile(&rules.write)? })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    fn label(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// A checked path: what the step sees and where it really is.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The step's view of the resolved path (symlinks and `..` followed).
    pub logical: PathBuf,
    pub real: PathBuf,
}

/// Resolves `logical` under the sysroot: the longest existing prefix is canonicalised
/// (following symlinks and `..`), and the rest, which does not exist yet, is appended.
fn resolve(sysroot: &Sysroot, logical: &str) -> Result<Resolved, Denial> {
    let invalid = |why: &str| Denial::Invalid { what: format!("path {logical:?}"), why: why.into() };
    if !logical.starts_with('/') || logical.contains('\0') {
        return Err(invalid("paths must be absolute"));
    }
    let mapped = sysroot.map(Path::new(logical));
    let mut existing = mapped.as_path();
    let mut rest = Vec::new();
    let base = loop {
        match existing.canonicalize() {
            Ok(p) => break p,
            Err(_) => {
                let name = existing.file_name().ok_or_else(|| invalid("no existing ancestor"))?;
                rest.push(name.to_owned());
                existing = existing.parent().ok_or_else(|| invalid("no existing ancestor"))?;
            }
        }
    };
    let mut real = base;
    for name in rest.iter().rev() {
        if matches!(Path::new(name).components().next(), Some(Component::ParentDir | Component::CurDir)) {
            return Err(invalid("'..' through a directory that does not exist"));
        }
        real.push(name);
    }
    let step_view = sysroot
        .unmap(&real)
        .ok_or_else(|| Denial::Invalid { what: format!("path {logical}"), why: format!("it resolves to {}, outside the sysroot", real.display()) })?;
    Ok(Resolved { logical: step_view, real })
}

impl Grant {
    /// The single checkpoint for `fs`.
    pub fn check_fs(&self, sysroot: &Sysroot, path: &str, access: Access) -> Result<Resolved, Denial> {
        let resolved = resolve(sysroot, path)?;
        let shown = if resolved.logical == Path::new(path) { path.to_owned() } else { format!("{path} (resolves to {})", resolved.logical.display()) };
        self.both(
            || format!("{} of {shown}", access.label()),
            |side| {
                let list = match access {
                    Access::Read => &side.fs.read,
                    Access::Write => &side.fs.write,
                };
                list.iter().any(|g| g.is_match(&resolved.logical))
            },
        )?;
        Ok(resolved)
    }
}

pub fn read(path: &Resolved) -> io::Result<Vec<u8>> {
    fs::read(&path.real)
}

pub fn exists(path: &Resolved) -> bool {
    path.real.exists()
}

pub fn list(path: &Resolved) -> io::Result<Vec<String>> {
    let mut names = fs::read_dir(&path.real)?.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned())).collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

pub fn metadata(path: &Resolved) -> io::Result<fs::Metadata> {
    fs::symlink_metadata(&path.real)
}

/// Replaces the file's content atomically, keeping its mode and owner.
pub fn write(path: &Resolved, data: &[u8], backups: &mut Backups) -> io::Result<()> {
    backups.save(&path.logical, &path.real)?;
    atomic_replace(&path.real, data)
}

/// Appends by rewriting the whole file atomically: a crash leaves either the old or the new
/// content, never half a line.
pub fn append(path: &Resolved, data: &[u8], backups: &mut Backups) -> io::Result<()> {
    let mut content = match fs::read(&path.real) {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    content.extend_from_slice(data);
    backups.save(&path.logical, &path.real)?;
    atomic_replace(&path.real, &content)
}

pub fn remove(path: &Resolved, backups: &mut Backups) -> io::Result<()> {
    if fs::symlink_metadata(&path.real)?.is_dir() {
        return Err(io::Error::new(io::ErrorKind::IsADirectory, "steps remove files, not directories"));
    }
    backups.save(&path.logical, &path.real)?;
    fs::remove_file(&path.real)?;
    sync_parent(&path.real)
}

/// Writes `data` to a temporary file beside `target`, fsyncs it and renames it over
/// `target`, then fsyncs the directory so the rename itself survives a crash.
pub fn atomic_replace(target: &Path, data: &[u8]) -> io::Result<()> {
    let dir = target.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let name = target.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let previous = fs::metadata(target).ok();
    // Unique per call, not only per process: canup fetches several targets at once, and two
    // writers of one file must not share (and steal) a temporary.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{}.canup-{}-{seq}", name.to_string_lossy(), std::process::id()));
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    let written = (|| {
        file.write_all(data)?;
        match &previous {
            Some(meta) => {
                file.set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))?;
                // Only root can give a file away; otherwise the owner is already ours.
                if nix::unistd::geteuid().is_root() {
                    std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid()))?;
                }
            }
            None => file.set_permissions(fs::Permissions::from_mode(0o644))?,
        }
        file.sync_all()?;
        fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_parent(target)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
