//! Durable file writes: what canup writes (step edits, caches, the root of trust, the
//! repository's metadata) appears whole or not at all, and survives a crash once written.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `data` to a temporary file beside `target`, fsyncs it and renames it over
/// `target`, then fsyncs the directory so the rename itself survives a crash.
pub fn atomic_replace(target: &Path, data: &[u8]) -> io::Result<()> {
    let dir = target.parent().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no parent directory"))?;
    let name = target.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let previous = fs::metadata(target).ok();
    // A name nobody can guess, created exclusively: `O_EXCL` never follows a symlink planted
    // under that name, and never reuses a file another writer (or a step) prepared.
    // From the kernel directly: the crypto library's generator costs ~30 ms to seed on its
    // first use in a process (measured on the demo upgrade), for twelve bytes.
    let mut random = [0u8; 12];
    io::Read::read_exact(&mut fs::File::open("/dev/urandom")?, &mut random)?;
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

pub fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
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
