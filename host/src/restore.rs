//! `canup restore-files`: the files a run changed put back from its backups.
//!
//! Above both the backups (what was saved, `crate::backup`) and the file-system capability
//! (how a path is walked and changed beneath the sysroot, `crate::capabilities::fs`): a
//! restore changes files as root, so it walks each path on descriptors as a step's change
//! does, never by path.

use std::io;
use std::path::Path;

use crate::backup::BackupEntry;
use crate::capabilities::fs::{self, Restore};
use crate::sysroot::Sysroot;

/// Why a run's files could not all be put back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The run changed no file through a step (or its backups are gone).
    #[error("no backups in {dir}: {source}")]
    NoBackups { dir: String, source: io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("line {line} of the backup index: {source}")]
    Index { line: usize, source: serde_json::Error },
}

/// Puts back every file run `run` changed, from the copies taken before the change; removes
/// the files it created. Returns what it did, a line per file.
pub fn restore(state_dir: &Path, sysroot: &Sysroot, run: &str) -> Result<Vec<String>, RestoreError> {
    let io_err = |what: String| move |source| RestoreError::Io { what, source };
    let dir = state_dir.join("backups").join(run);
    let index = std::fs::read_to_string(dir.join("index.jsonl")).map_err(|source| RestoreError::NoBackups { dir: dir.display().to_string(), source })?;
    let mut done = Vec::new();
    let mut created_dirs = Vec::new();
    for (n, line) in index.lines().enumerate() {
        let entry: BackupEntry = serde_json::from_str(line).map_err(|source| RestoreError::Index { line: n + 1, source })?;
        if entry.directory {
            created_dirs.push(entry.path);
            continue;
        }
        let shown = entry.path.display().to_string();
        match (&entry.copy, entry.existed) {
            (Some(copy), true) => {
                let data = std::fs::read(dir.join(copy)).map_err(io_err(format!("reading the backup of {shown}")))?;
                fs::restore(sysroot, &entry.path, Restore::File(&data, entry.mode)).map_err(io_err(format!("restoring {shown}")))?;
                done.push(format!("restored {shown}"));
            }
            _ => {
                if fs::restore(sysroot, &entry.path, Restore::Remove).map_err(io_err(format!("removing {shown}")))? {
                    done.push(format!("removed {shown} (created by the run)"));
                }
            }
        }
    }
    // Innermost first, once the files the run made in them are gone; a directory something
    // else has filled since is left, and said so.
    for path in created_dirs.iter().rev() {
        let shown = path.display().to_string();
        match fs::restore(sysroot, path, Restore::RemoveDir) {
            Ok(true) => done.push(format!("removed directory {shown} (created by the run)")),
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => done.push(format!("kept directory {shown} (created by the run, not empty now)")),
            Err(e) => return Err(RestoreError::Io { what: format!("removing directory {shown}"), source: e }),
        }
    }
    Ok(done)
}
