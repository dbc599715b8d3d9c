//! `--sysroot DIR`: every absolute path a step names, for files and programs alike, is taken
//! under DIR. This is how the simulated host and staging rehearsals run real steps without
//! touching the machine. Steps never see the mapping; they keep naming `/opt/canopsis/...`.

use std::io;
use std::path::{Component, Path, PathBuf};

/// The sysroot's directory, opened once per sysroot (`O_PATH`): the start of every walk
/// beneath it (`capabilities/fs/beneath.rs`), which sits above this module.
pub fn open_root(root: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{OFlag, open};
    Ok(open(root, OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())?)
}

#[derive(Debug, Clone)]
pub struct Sysroot {
    /// Canonical root; `/` for the real host.
    root: PathBuf,
    /// The root's directory, opened on first use and kept: every `fs` call walks from it, and
    /// opening it by path each time was the costliest `openat` of the walk.
    dir: std::sync::Arc<std::sync::OnceLock<std::os::fd::OwnedFd>>,
}

impl Default for Sysroot {
    fn default() -> Self {
        Self::host()
    }
}

impl Sysroot {
    /// The machine itself.
    pub fn host() -> Self {
        Self { root: PathBuf::from("/"), dir: Default::default() }
    }

    /// A directory standing in for `/`. It must exist; it is canonicalised so that later
    /// prefix checks compare resolved paths with a resolved root.
    pub fn new(dir: &Path) -> io::Result<Self> {
        let root = dir.canonicalize().map_err(|e| io::Error::new(e.kind(), format!("sysroot {}: {e}", dir.display())))?;
        Ok(Self { root, dir: Default::default() })
    }

    /// The root's directory descriptor (see `capabilities/fs/beneath.rs`).
    pub fn dir(&self) -> io::Result<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        if self.dir.get().is_none() {
            let _ = self.dir.set(open_root(&self.root)?);
        }
        self.dir.get().map(|fd| fd.as_fd()).ok_or_else(|| io::Error::other("the sysroot's directory could not be kept open"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_host(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The operating system's name as it says it (`PRETTY_NAME` of `/etc/os-release`, else
    /// the first line of `/etc/redhat-release`), for the operator: which Canopsis procedure
    /// applies depends on it (yum on CentOS 7, dnf on RHEL 8). Read by canup itself, not a step.
    pub fn os_name(&self) -> Option<String> {
        let read = |p: &str| std::fs::read_to_string(self.map(Path::new(p))).ok();
        read("/etc/os-release")
            .and_then(|text| text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim().trim_matches('"').to_owned())))
            .or_else(|| read("/etc/redhat-release").and_then(|t| t.lines().next().map(|l| l.trim().to_owned())))
            .filter(|name| !name.is_empty())
    }

    /// Where a step's absolute path lives on this machine. `logical` must be absolute;
    /// `..` is not interpreted here (callers resolve and re-check the result).
    pub fn map(&self, logical: &Path) -> PathBuf {
        let relative: PathBuf = logical.components().filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_))).collect();
        self.root.join(relative)
    }

    /// The step's view of a resolved path, or `None` when the path is outside the sysroot.
    pub fn unmap(&self, real: &Path) -> Option<PathBuf> {
        let rest = real.strip_prefix(&self.root).ok()?;
        Some(Path::new("/").join(rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_unmaps_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sysroot::new(dir.path()).unwrap();
        let real = s.map(Path::new("/opt/canopsis/VERSION.txt"));
        assert_eq!(real, dir.path().canonicalize().unwrap().join("opt/canopsis/VERSION.txt"));
        assert_eq!(s.unmap(&real).unwrap(), Path::new("/opt/canopsis/VERSION.txt"));
        assert_eq!(s.unmap(Path::new("/etc/passwd")), None);
    }

    #[test]
    fn host_sysroot_is_identity() {
        let s = Sysroot::host();
        assert_eq!(s.map(Path::new("/etc/hosts")), Path::new("/etc/hosts"));
        assert_eq!(s.unmap(Path::new("/etc/hosts")).unwrap(), Path::new("/etc/hosts"));
    }
}
