//! One apply (or rollback) at a time per state directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::JournalError;

/// Held for the whole of an apply.
pub struct ApplyLock {
    _file: fs::File,
}

impl ApplyLock {
    /// Takes the lock or says who holds it. A lock file left by a dead process is not held
    /// (the kernel released it), and is taken over with a message naming the old pid.
    pub fn acquire(state_dir: &Path) -> Result<Self, JournalError> {
        let path = state_dir.join("lock");
        let err = |source| JournalError::Io { path: path.display().to_string(), source };
        fs::create_dir_all(state_dir).map_err(err)?;
        let mut file = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(&path).map_err(err)?;
        let previous = fs::read_to_string(&path).unwrap_or_default().trim().to_owned();
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked { pid: if previous.is_empty() { "?".into() } else { previous }, state: state_dir.display().to_string() });
            }
            Err(fs::TryLockError::Error(e)) => return Err(err(e)),
        }
        if !previous.is_empty() && previous != std::process::id().to_string() {
            eprintln!("canup: taking over the lock left by pid {previous}, which is no longer running");
        }
        file.set_len(0).map_err(err)?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(err)?;
        file.sync_data().map_err(err)?;
        Ok(Self { _file: file })
    }
}

impl Drop for ApplyLock {
    fn drop(&mut self) {
        // Clear the pid so the next canup does not report a takeover after a clean exit.
        let _ = self._file.set_len(0);
    }
}
