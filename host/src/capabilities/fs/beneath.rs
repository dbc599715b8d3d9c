//! Resolving a step's path on descriptors, beneath the sysroot, in one walk.
//!
//! The checkpoint judges a path by where it leads (symlinks and `..` followed), and the
//! operation must then touch that very object. Resolving by name (`canonicalize`) and opening
//! by name again leaves a window: whoever can write a directory on the path (another local
//! user, a process the step started) could swap it for a symlink between the check and the
//! use, and the operation would land outside every glob (378 of 20,000 reads did, before
//! descriptors). So the walk here opens each directory of the path from the sysroot's
//! directory with `O_NOFOLLOW`, follows a symlink only by reading it (`readlinkat`) and
//! walking its target the same way, kept beneath the sysroot, and hands the checkpoint the
//! path it really took together with the last directory's descriptor. The operation then
//! works on that descriptor only (`openat`, `fstatat`, `renameat`, `unlinkat`): what was
//! checked is what is used, and a link planted afterwards is never followed.
//!
//! Why a walk of our own rather than `openat2(RESOLVE_BENEATH)`: `openat2` is Linux 5.6, and
//! the hosts canup is for run CentOS 7 (3.10) and RHEL 8 (4.18); one code path that is tested
//! here is the one that runs there. Why not `cap-std`: it would still need the resolved path
//! for the glob check, which it does not give. The walk costs one `openat` per directory of
//! the path (`/opt/canopsis/etc/x`: three) and one `fstatat`, measured in `cargo xtask bench`
//! with the 4 KB read.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, fstat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

use crate::durable::{kind, replace_in, stat_in};

/// How many symlinks one path may go through: the kernel's own limit (`MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// Why a path cannot be walked beneath the sysroot.
#[derive(Debug)]
pub enum WalkError {
    /// The path, through `..` or a symlink, leads out of the sysroot (to `to`).
    Outside {
        to: String,
    },
    /// The path is not one a step may name (the reason).
    Invalid(&'static str),
    Io(io::Error),
}

impl From<Errno> for WalkError {
    fn from(e: Errno) -> Self {
        WalkError::Io(e.into())
    }
}

impl From<io::Error> for WalkError {
    fn from(e: io::Error) -> Self {
        WalkError::Io(e)
    }
}

/// A path walked beneath the sysroot.
pub struct Walk {
    /// The step's view of where the path leads (absolute, symlinks and `..` resolved).
    pub logical: PathBuf,
    /// The object's directory and name; `None` when a directory on the way does not exist.
    pub entry: Option<Entry>,
    /// What the object is (a final symlink is followed, so never one); `None` when absent.
    pub stat: Option<FileStat>,
}

/// Walks the step's absolute path `path` from `root` (the sysroot's canonical directory; `/`
/// on the real host, where `..` at the top stays there as in the kernel).
pub fn walk(root: &Path, root_fd: BorrowedFd<'_>, path: &Path) -> Result<Walk, WalkError> {
    let host = root == Path::new("/");
    // The directories walked below the root, with their names: the logical path so far.
    let mut dirs: Vec<(OwnedFd, OsString)> = Vec::new();
    let mut pending: VecDeque<OsString> = names(path);
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            if dirs.pop().is_none() && !host {
                return Err(WalkError::Outside { to: format!("{}/..", root.display()) });
            }
            continue;
        }
        let dir = dirs.last().map_or(root_fd, |(fd, _)| fd.as_fd());
        let last = pending.is_empty();
        let found = if last {
            stat_in(dir, &name)?
        } else {
            match openat(dir, name.as_os_str(), OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
                Ok(fd) => {
                    dirs.push((fd, name));
                    continue;
                }
                // A symlink (or a file where a directory should be): which one, below.
                Err(Errno::ENOTDIR | Errno::ELOOP) => stat_in(dir, &name)?,
                Err(Errno::ENOENT) => None,
                Err(e) => return Err(e.into()),
            }
        };
        match found {
            Some(st) if kind(&st) == nix::sys::stat::SFlag::S_IFLNK => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(WalkError::Io(io::Error::new(io::ErrorKind::InvalidInput, format!("more than {MAX_LINKS} symlinks on the way"))));
                }
                let target = PathBuf::from(readlinkat(dir, name.as_os_str())?);
                let mut next = if target.is_absolute() {
                    // An absolute target means the same on this machine as for any program:
                    // under a sysroot it must lead back into it.
                    let inside = if host { Some(target.as_path()) } else { target.strip_prefix(root).ok() };
                    let Some(inside) = inside else { return Err(WalkError::Outside { to: target.display().to_string() }) };
                    dirs.clear();
                    names(inside)
                } else {
                    names(&target)
                };
                next.extend(pending);
                pending = next;
            }
            Some(st) if last => {
                return Ok(Walk { logical: logical(&dirs, Some(&name)), entry: Some(Entry { parent: take(dirs, root_fd)?, name }), stat: Some(st) });
            }
            None if last => return Ok(Walk { logical: logical(&dirs, Some(&name)), entry: Some(Entry { parent: take(dirs, root_fd)?, name }), stat: None }),
            // A directory of the path is missing (or is a file): the rest is taken as named.
            _ => {
                if pending.iter().any(|n| n == "..") {
                    return Err(WalkError::Invalid("'..' through a directory that does not exist"));
                }
                let mut logical = logical(&dirs, Some(&name));
                logical.extend(pending);
                return Ok(Walk { logical, entry: None, stat: None });
            }
        }
    }
    // The path ends on a directory already walked (`/`, or a final `..`).
    let logical = logical(&dirs, None);
    let parent = take(dirs, root_fd)?;
    let stat = fstat(&parent)?;
    Ok(Walk { logical, entry: Some(Entry { parent, name: OsString::from(".") }), stat: Some(stat) })
}

/// A path's names, `.` and empty ones dropped (`..` kept: the walk interprets it).
fn names(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn logical(dirs: &[(OwnedFd, OsString)], name: Option<&OsStr>) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(dirs.iter().map(|(_, n)| n.as_os_str()).chain(name));
    p
}

/// The last directory walked, as an owned descriptor (the sysroot's own, duplicated).
fn take(mut dirs: Vec<(OwnedFd, OsString)>, root: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    match dirs.pop() {
        Some((fd, _)) => Ok(fd),
        None => root.try_clone_to_owned(),
    }
}

/// A walked path's last component and the directory that holds it, reached through real
/// directories only (the descriptor is `O_PATH`: usable as a directory to open in, not for
/// reading or syncing, which [`Entry::writable`] reopens for).
pub struct Entry {
    parent: OwnedFd,
    name: OsString,
}

impl Entry {
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
        replace_in(&self.writable()?, self.name(), data)
    }

    /// Removes a file (never a directory: `unlinkat` without `AT_REMOVEDIR`), durably.
    pub fn remove(&self) -> io::Result<()> {
        let dir = self.writable()?;
        unlinkat(&dir, self.name(), UnlinkatFlags::NoRemoveDir)?;
        Ok(fsync(&dir)?)
    }

    /// Sets a regular file's permission bits through its own descriptor (never a symlink's
    /// target: opened `O_NOFOLLOW`).
    pub fn set_mode(&self, mode: u32) -> io::Result<()> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let file = openat(&self.parent, self.name(), flags, Mode::empty()).map_err(changed)?;
        Ok(nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(mode & 0o7777))?)
    }

    /// Removes an empty directory, durably.
    pub fn remove_dir(&self) -> io::Result<()> {
        let dir = self.writable()?;
        unlinkat(&dir, self.name(), UnlinkatFlags::RemoveDir)?;
        Ok(fsync(&dir)?)
    }

    /// Makes the directory with `mode` exactly (not masked by the umask) and the owner of the
    /// directory it is made in, set through its own descriptor; the parent is then synced.
    pub fn make_dir(&self, mode: u32) -> io::Result<()> {
        let dir = self.writable()?;
        nix::sys::stat::mkdirat(&dir, self.name(), Mode::from_bits_truncate(0o700))?;
        let made = openat(&dir, self.name(), OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()).map_err(changed)?;
        let parent = fstat(&dir)?;
        if nix::unistd::geteuid().is_root() {
            nix::unistd::fchown(&made, Some(nix::unistd::Uid::from_raw(parent.st_uid)), Some(nix::unistd::Gid::from_raw(parent.st_gid)))?;
        }
        nix::sys::stat::fchmod(&made, Mode::from_bits_truncate(mode & 0o777))?;
        fsync(&made)?;
        Ok(fsync(&dir)?)
    }

    /// The directory opened again, readable: a rename or unlink is made durable by an fsync of
    /// the directory, which an `O_PATH` descriptor cannot do. Opening `.` through the
    /// descriptor reaches the same directory, whatever happened to its path since.
    fn writable(&self) -> io::Result<OwnedFd> {
        Ok(openat(&self.parent, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?)
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

    fn walk(root: &Path, path: &Path) -> Result<Walk, WalkError> {
        super::walk(root, crate::sysroot::open_root(root).unwrap().as_fd(), path)
    }

    fn at(root: &Path, path: &str) -> Walk {
        walk(root, Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e:?}"))
    }

    fn entry(root: &Path, path: &str) -> Entry {
        at(root, path).entry.unwrap()
    }

    #[test]
    fn reads_take_regular_files_with_one_name_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("f"), vec![b'x'; 100]).unwrap();
        assert_eq!(entry(&root, "/f").read(100).unwrap().len(), 100);
        assert_eq!(entry(&root, "/f").read(99).unwrap_err().kind(), io::ErrorKind::FileTooLarge);
        std::fs::hard_link(root.join("f"), root.join("g")).unwrap();
        let e = entry(&root, "/f").read(100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(entry(&root, "/fifo").read(100).unwrap_err().kind(), io::ErrorKind::InvalidInput, "a FIFO is refused, without blocking");
    }

    /// Symlinks and `..` are judged by where they lead, and that is what the walk reports.
    #[test]
    fn the_walk_reports_where_links_and_dots_lead() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("data/etc")).unwrap();
        std::fs::write(root.join("data/etc/x.conf"), "x").unwrap();
        std::fs::create_dir_all(root.join("opt")).unwrap();
        std::os::unix::fs::symlink("../data", root.join("opt/canopsis")).unwrap();
        std::os::unix::fs::symlink(root.join("data/etc/x.conf"), root.join("abs")).unwrap();
        let w = at(&root, "/opt/canopsis/etc/x.conf");
        assert_eq!(w.logical, Path::new("/data/etc/x.conf"));
        assert_eq!(w.entry.unwrap().read(10).unwrap(), b"x");
        assert_eq!(at(&root, "/abs").logical, Path::new("/data/etc/x.conf"), "an absolute target inside the sysroot");
        assert_eq!(at(&root, "/data/etc/../etc/./x.conf").logical, Path::new("/data/etc/x.conf"));
        let missing = at(&root, "/data/new/sub/file");
        assert_eq!((missing.logical.as_path(), missing.entry.is_none(), missing.stat.is_none()), (Path::new("/data/new/sub/file"), true, true));
        let new = at(&root, "/data/etc/new.conf");
        assert!(new.entry.is_some() && new.stat.is_none(), "a new file in an existing directory");
        assert!(matches!(walk(&root, Path::new("/data/new/../x")), Err(WalkError::Invalid(_))));
        assert_eq!(at(&root, "/").logical, Path::new("/"));
    }

    #[test]
    fn nothing_leads_out_of_the_sysroot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let root = root.canonicalize().unwrap();
        std::fs::write(dir.path().join("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("etc/abs")).unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("etc/rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("etc/loop")).unwrap();
        for path in ["/../secret", "/etc/../../secret", "/etc/abs", "/etc/rel"] {
            assert!(matches!(walk(&root, Path::new(path)), Err(WalkError::Outside { .. })), "{path}");
        }
        assert!(matches!(walk(&root, Path::new("/etc/loop")), Err(WalkError::Io(_))), "a symlink loop ends");
    }

    /// A directory swapped for a symlink after the walk: the operation still uses the
    /// directory that was walked, or fails; it never reaches the symlink's target.
    #[test]
    fn a_swap_after_the_walk_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("outside")).unwrap();
        std::fs::write(root.join("outside/x.conf"), "OUTSIDE").unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/x.conf"), "inside").unwrap();
        let w = at(&root, "/etc/x.conf");
        std::fs::rename(root.join("etc"), root.join("old-etc")).unwrap();
        std::os::unix::fs::symlink(root.join("outside"), root.join("etc")).unwrap();
        let entry = w.entry.unwrap();
        assert_eq!(entry.read(100).unwrap(), b"inside", "the walked directory, not the new symlink");
        entry.replace(b"new").unwrap();
        assert_eq!(std::fs::read(root.join("outside/x.conf")).unwrap(), b"OUTSIDE");
        assert_eq!(std::fs::read(root.join("old-etc/x.conf")).unwrap(), b"new");
        // A final symlink planted after the walk is not followed either.
        let w = at(&root, "/outside/y.conf");
        std::os::unix::fs::symlink(root.join("outside/x.conf"), root.join("outside/y.conf")).unwrap();
        let e = w.entry.unwrap().read(100).unwrap_err();
        assert!(e.to_string().contains("changed while canup was using it"), "{e}");
    }

    #[test]
    fn replace_remove_and_list_work_in_the_parent_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        entry(&root, "/a/b/new.conf").replace(b"x=1\n").unwrap();
        assert_eq!(std::fs::read(root.join("a/b/new.conf")).unwrap(), b"x=1\n");
        assert_eq!(entry(&root, "/a/b").list().unwrap(), ["new.conf"]);
        assert_eq!(entry(&root, "/").list().unwrap(), ["a"]);
        assert!(entry(&root, "/a/b").remove().is_err(), "a directory is not removed");
        assert!(root.join("a/b").is_dir());
        entry(&root, "/a/b/new.conf").remove().unwrap();
        assert!(entry(&root, "/a/b/new.conf").stat().unwrap().is_none());
    }
}
