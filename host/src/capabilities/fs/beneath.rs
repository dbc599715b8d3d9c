//! Reaching a checked path again, on descriptors, without following any symlink.
//!
//! The checkpoint judges a path after resolving its symlinks (`resolve` in `mod.rs`). If the
//! operation then opened that path again by name, whoever can write a directory on it (another
//! local user, a process the step started) could swap a directory for a symlink between the
//! check and the use, and the operation would land outside every glob: 378 of 20,000 reads did
//! before this module. So the operation walks the *checked* path from the sysroot's directory
//! one component at a time with `O_NOFOLLOW`, then works on the last directory's descriptor
//! only (`openat`, `fstatat`, `renameat`, `unlinkat`). It reaches the very object that was
//! checked, or fails with "changed while in use"; it never follows a link planted meanwhile.
//!
//! Why a walk rather than `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: `openat2` is Linux
//! 5.6, and the hosts canup is for run CentOS 7 (3.10) and RHEL 8 (4.18); one code path that is
//! tested here is the one that runs there. Why not `cap-std`: it follows symlinks that stay
//! beneath its root, and with the sysroot `/` every swap above stays beneath it. The walk costs
//! one `openat` per directory of the path (`/opt/canopsis/etc/x`: four), measured in
//! `cargo xtask bench` with the 4 KB read.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{FileStat, Mode};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

use crate::durable::{replace_in, stat_in};

/// A checked path's last component and the directory that holds it, reached through real
/// directories only.
pub struct Entry {
    parent: OwnedFd,
    name: OsString,
}

impl Entry {
    /// Walks `real` (a resolved path under `root`, the sysroot's canonical directory) from
    /// `root`. The sysroot itself is the operator's and may be reached through symlinks.
    pub fn locate(root: &Path, real: &Path) -> io::Result<Self> {
        let rest = real.strip_prefix(root).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "outside the sysroot"))?;
        let mut names = Vec::new();
        for component in rest.components() {
            match component {
                Component::Normal(name) => names.push(name),
                // `resolve` hands over canonical paths; anything else is a bug, refused all the same.
                _ => return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a canonical path")),
            }
        }
        let (name, dirs) = match names.split_last() {
            Some((last, dirs)) => ((*last).to_owned(), dirs),
            None => (OsString::from("."), &[][..]),
        };
        // The last directory is opened for reading: the directory fsync after a rename needs a
        // readable descriptor, and `O_PATH` ones are not.
        let access = |last: bool| if last { OFlag::O_RDONLY } else { OFlag::O_PATH };
        let mut parent = open(root, access(dirs.is_empty()) | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
        for (i, dir) in dirs.iter().enumerate() {
            let flags = access(i + 1 == dirs.len()) | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            parent = openat(&parent, *dir, flags, Mode::empty()).map_err(changed)?;
        }
        Ok(Self { parent, name })
    }

    fn name(&self) -> &OsStr {
        &self.name
    }

    /// What the entry is (a symlink is reported as one, not followed); `None` if absent.
    pub fn stat(&self) -> io::Result<Option<FileStat>> {
        stat_in(&self.parent, self.name())
    }

    /// A regular file's content, checked on the open descriptor: opened without following a
    /// symlink and without blocking (a FIFO would hold the run past every limit), then refused
    /// unless it is a regular file with one name (another hard link to it may sit outside
    /// every glob) and at most `max` bytes.
    pub fn read(&self, max: usize) -> io::Result<Vec<u8>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let mut file = fs::File::from(openat(&self.parent, self.name(), flags, Mode::empty()).map_err(changed)?);
        let meta = file.metadata()?;
        single_regular(meta.is_file(), std::os::unix::fs::MetadataExt::nlink(&meta))?;
        if meta.len() > max as u64 {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!("{} bytes, over the limit of {max} bytes (fs_read_kib in canup.toml)", meta.len()),
            ));
        }
        // Exactly the size the descriptor reported: a file growing meanwhile is read as it was,
        // within the bound; one shrinking meanwhile is an error (one read call, the hot path of
        // every step's file access).
        let mut content = vec![0; meta.len() as usize];
        file.read_exact(&mut content)?;
        Ok(content)
    }

    /// The names in a directory, sorted.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let dir = nix::dir::Dir::from_fd(openat(&self.parent, self.name(), flags, Mode::empty()).map_err(changed)?)?;
        let mut names = Vec::new();
        for entry in dir {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name != "." && name != ".." {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Replaces (or creates) the file atomically through the parent's descriptor.
    pub fn replace(&self, data: &[u8]) -> io::Result<()> {
        replace_in(&self.parent, self.name(), data)
    }

    /// Removes a file (never a directory: `unlinkat` without `AT_REMOVEDIR`), durably.
    pub fn remove(&self) -> io::Result<()> {
        unlinkat(&self.parent, self.name(), UnlinkatFlags::NoRemoveDir)?;
        Ok(fsync(&self.parent)?)
    }
}

/// A step reads and changes regular files with one name only.
pub fn single_regular(regular: bool, links: u64) -> io::Result<()> {
    if !regular {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file (steps read and write regular files only, never FIFOs or devices)"));
    }
    if links > 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the file has {links} hard links, and another name for it may be outside what the step may use"),
        ));
    }
    Ok(())
}

/// A symlink (`ELOOP`) or a non-directory (`ENOTDIR`) where the check saw none: the path
/// changed between the check and the use.
fn changed(e: Errno) -> io::Error {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => {
            io::Error::other("the path changed while canup was using it (a symlink appeared where the check saw none); nothing was done")
        }
        e => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(root: &Path, rel: &str) -> io::Result<Entry> {
        Entry::locate(root, &root.join(rel))
    }

    #[test]
    fn reads_take_regular_files_with_one_name_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("f"), vec![b'x'; 100]).unwrap();
        assert_eq!(entry(&root, "f").unwrap().read(100).unwrap().len(), 100);
        assert_eq!(entry(&root, "f").unwrap().read(99).unwrap_err().kind(), io::ErrorKind::FileTooLarge);
        std::fs::hard_link(root.join("f"), root.join("g")).unwrap();
        let e = entry(&root, "f").unwrap().read(100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(entry(&root, "fifo").unwrap().read(100).unwrap_err().kind(), io::ErrorKind::InvalidInput, "a FIFO is refused, without blocking");
        std::os::unix::fs::symlink(root.join("f"), root.join("link")).unwrap();
        assert!(entry(&root, "link").unwrap().read(100).is_err(), "a final symlink is not followed");
    }

    /// A directory of the path swapped for a symlink after the check: the walk stops there.
    #[test]
    fn a_symlink_anywhere_on_the_path_stops_the_walk() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("outside/etc")).unwrap();
        std::fs::write(root.join("outside/etc/secret"), "secret").unwrap();
        std::fs::create_dir_all(root.join("opt")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("opt/canopsis")).unwrap();
        let e = entry(&root, "opt/canopsis/etc/secret").err().unwrap();
        assert!(e.to_string().contains("changed while canup was using it"), "{e}");
        std::os::unix::fs::symlink(root.join("outside/etc"), root.join("etc")).unwrap();
        let e = entry(&root, "etc/secret").err().unwrap();
        assert!(e.to_string().contains("changed while canup was using it"), "{e}");
        std::os::unix::fs::symlink(root.join("outside/etc/secret"), root.join("secret")).unwrap();
        let e = entry(&root, "secret").unwrap().read(100).unwrap_err();
        assert!(e.to_string().contains("changed while canup was using it"), "a final symlink: {e}");
        assert!(entry(&root, "etc").unwrap().list().is_err(), "a listing does not follow a symlink either");
    }

    #[test]
    fn replace_remove_and_list_work_in_the_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        entry(&root, "a/b/new.conf").unwrap().replace(b"x=1\n").unwrap();
        assert_eq!(std::fs::read(root.join("a/b/new.conf")).unwrap(), b"x=1\n");
        assert_eq!(entry(&root, "a/b").unwrap().list().unwrap(), ["new.conf"]);
        assert_eq!(entry(&root, "").unwrap().list().unwrap(), ["a"]);
        assert!(entry(&root, "a/b").unwrap().remove().is_err(), "a directory is not removed");
        assert!(root.join("a/b").is_dir());
        entry(&root, "a/b/new.conf").unwrap().remove().unwrap();
        assert!(entry(&root, "a/b/new.conf").unwrap().stat().unwrap().is_none());
    }
}
