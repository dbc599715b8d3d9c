//! Durable file writes: what canup writes (step edits, caches, the root of trust, the
//! repository's metadata) appears whole or not at all, and survives a crash once written.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fsync, unlinkat};

/// Writes `data` to a temporary file beside `target`, fsyncs it and renames it over
/// `target`, then fsyncs the directory so the rename itself survives a crash.
pub fn atomic_replace(target: &Path, data: &[u8]) -> io::Result<()> {
    let dir = target.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let name = target.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let dir = nix::fcntl::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    replace_in(&dir, name, data)
}

/// [`atomic_replace`] of `name` in the directory `dir` is open on: everything happens through
/// that descriptor, so a directory swapped for a symlink meanwhile cannot redirect any of it
/// (the step `fs` capability reaches `dir` without following symlinks). The file keeps its
/// mode and owner, set through the new file's own descriptor; a new one is 0644. Only a
/// regular file is replaced: a symlink, directory or device under that name is an error.
pub fn replace_in(dir: &OwnedFd, name: &OsStr, data: &[u8]) -> io::Result<()> {
    let previous = stat_in(dir, name)?;
    if let Some(st) = &previous
        && !is_regular(st)
    {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file (only regular files are replaced)"));
    }
    // A name nobody can guess, created exclusively: `O_EXCL` never follows a symlink planted
    // under that name, and never reuses a file another writer (or a step) prepared.
    // From the kernel directly: the crypto library's generator costs ~30 ms to seed on its
    // first use in a process (measured on the demo upgrade), for twelve bytes.
    let mut random = [0u8; 12];
    io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut random)?;
    let tmp = format!(".{}.canup-{}", name.to_string_lossy(), hex::encode(random));
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut file = fs::File::from(openat(dir, tmp.as_str(), flags, Mode::from_bits_truncate(0o600))?);
    let written = (|| {
        file.write_all(data)?;
        match &previous {
            Some(st) => {
                file.set_permissions(fs::Permissions::from_mode(st.st_mode & 0o7777))?;
                // Only root can give a file away; otherwise the owner is already ours.
                if nix::unistd::geteuid().is_root() {
                    nix::unistd::fchown(&file, Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid)))?;
                }
            }
            None => file.set_permissions(fs::Permissions::from_mode(0o644))?,
        }
        file.sync_all()?;
        Ok::<_, io::Error>(renameat(dir, tmp.as_str(), dir, name)?)
    })();
    if written.is_err() {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written?;
    Ok(fsync(dir)?)
}

/// What `name` in `dir` is, without following a symlink; `None` when there is nothing.
pub fn stat_in(dir: impl AsFd, name: &OsStr) -> io::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The file type bits of `st` (`S_IFREG`, `S_IFDIR`, `S_IFLNK`, …).
pub fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

pub fn is_regular(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFREG
}

pub fn is_dir(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFDIR
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Symlinks planted under the names the temporary file used to take (`.NAME.canup-PID-N`,
    /// N up to 200): the writes land in the target only.
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
}
