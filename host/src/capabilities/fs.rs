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
    let file = fs::OpenOptions::new().read(true).custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW).open(real)?;
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
    let too_large = |len: u64| io::Error::new(io::ErrorKind::FileTooLarge, format!("{len} bytes, over the limit of {max} bytes (fs_read_kib in canup.toml)"));
    if meta.len() > max as u64 {
        return Err(too_large(meta.len()));
    }
    let mut content = Vec::with_capacity(meta.len() as usize);
    file.take(max as u64 + 1).read_to_end(&mut content)?;
    if content.len() > max {
        return Err(too_large(content.len() as u64));
    }
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
    sync_parent(&path.real)
}

/// Writes `data` to a temporary file beside `target`, fsyncs it and renames it over
/// `target`, then fsyncs the directory so the rename itself survives a crash.
pub fn atomic_replace(target: &Path, data: &[u8]) -> io::Result<()> {
    let dir = target.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let name = target.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let previous = fs::metadata(target).ok();
    // A name nobody can guess, created exclusively: `O_EXCL` never follows a symlink planted
    // under that name, and never reuses a file another writer (or a step) prepared.
    let mut random = [0u8; 12];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| io::Error::other("no randomness for a temporary file name"))?;
    let tmp = dir.join(format!(".{}.canup-{}", name.to_string_lossy(), hex::encode(random)));
    let mut file = fs::OpenOptions::new().write(true).create_new(true).custom_flags(nix::libc::O_NOFOLLOW).mode(0o600).open(&tmp)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Symlinks planted under every name the temporary file used to take (`.NAME.canup-PID-N`)
    /// and under a few random-looking ones: the write lands in the target only.
    #[test]
    fn a_planted_temporary_never_redirects_an_atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "root's file\n").unwrap();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        let target = etc.join("webserver.conf");
        std::fs::write(&target, "old\n").unwrap();
        for n in 0..200 {
            std::os::unix::fs::symlink(&outside, etc.join(format!(".webserver.conf.canup-{}-{n}", std::process::id()))).unwrap();
        }
        for _ in 0..20 {
            atomic_replace(&target, b"new\n").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "root's file\n", "the write went through a planted symlink");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new\n");
        assert!(std::fs::symlink_metadata(&target).unwrap().file_type().is_file());
    }

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
