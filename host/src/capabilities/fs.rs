//! The `fs` capability: path resolution and checking, and the file operations.
//!
//! A path is checked *after* resolving symlinks and `..`, against the step's view of the
//! resolved path: a symlink inside an allowed directory that leads elsewhere is judged by
//! where it leads. Writes replace files atomically (temporary file, fsync, rename) and the
//! first change of each file in a run is preceded by a durable backup, so a failed upgrade
//! can be inspected and undone.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use globset::GlobMatcher;

use super::{Denial, FsRules, Grant, PatternError, glob};
use crate::backup::Backups;
use crate::durable::atomic_replace;

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

/// A file's content for a step, at most `max` bytes (`fs_read_kib`).
pub fn read(path: &Resolved, max: usize) -> io::Result<Vec<u8>> {
    read_regular(&path.real, max)
}

/// A regular file's content, checked on the open descriptor rather than by name: opened
/// without following a final symlink and without blocking (a FIFO would hold the run past
/// every limit), then refused unless it is a regular file with one name (another hard link to
/// it may sit outside every glob) and at most `max` bytes.
fn read_regular(real: &Path, max: usize) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW).open(real)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file (steps read regular files only, never FIFOs or devices)"));
    }
    if meta.nlink() > 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the file has {} hard links, and another name for it may be outside what the step may read", meta.nlink()),
        ));
    }
    if meta.len() > max as u64 {
        return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("{} bytes, over the limit of {max} bytes (fs_read_kib in canup.toml)", meta.len())));
    }
    // Exactly the size the descriptor reported: a file growing meanwhile is read as it was,
    // within the bound; one shrinking meanwhile is an error (one read call, the hot path of
    // every step's file access).
    let mut content = vec![0; meta.len() as usize];
    file.read_exact(&mut content)?;
    Ok(content)
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
pub fn append(path: &Resolved, data: &[u8], max: usize, backups: &mut Backups) -> io::Result<()> {
    let mut content = match read_regular(&path.real, max) {
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
    crate::durable::sync_parent(&path.real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_take_regular_files_with_one_name_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, vec![b'x'; 100]).unwrap();
        assert_eq!(read_regular(&file, 100).unwrap().len(), 100);
        assert_eq!(read_regular(&file, 99).unwrap_err().kind(), io::ErrorKind::FileTooLarge);
        std::fs::hard_link(&file, dir.path().join("g")).unwrap();
        let e = read_regular(&file, 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(read_regular(&fifo, 100).unwrap_err().kind(), io::ErrorKind::InvalidInput, "a FIFO is refused, without blocking");
        std::os::unix::fs::symlink(dir.path().join("f"), dir.path().join("link")).unwrap();
        assert!(read_regular(&dir.path().join("link"), 100).is_err(), "a final symlink is not followed");
    }
}
