//! File backups: before a run changes a file for the first time, its previous content (or
//! the fact that it did not exist) is saved durably under the state directory. Only the first
//! version matters: it is what the operator had before canup touched anything, and what an
//! undo restores (`restore-files`, and `canup rollback`'s files stage).
//!
//! Below everything that changes the host: nothing here knows the sysroot or runs a command.
//! The run's backup set (packages, configuration directories, database dumps) is the
//! upgrade's: `crate::upgrade::backups`.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One line of `index.jsonl` in a run's backup directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupEntry {
    /// The file as the step named it (resolved).
    pub path: PathBuf,
    pub existed: bool,
    pub mode: Option<u32>,
    /// Where the saved copy lives, relative to the run's backup directory.
    pub copy: Option<PathBuf>,
    /// A directory the run created (`fs.create-dir`): restoring removes it when empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub directory: bool,
}

#[derive(Debug)]
pub struct Backups {
    dir: PathBuf,
    saved: HashSet<PathBuf>,
    index: fs::File,
}

impl Backups {
    /// Opens (or resumes) the backups of one run. Entries already saved by an earlier,
    /// interrupted attempt are kept: the pre-run content must not be overwritten by a
    /// half-upgraded one.
    pub fn open(state_dir: &Path, run: &str) -> io::Result<Self> {
        let dir = state_dir.join("backups").join(run);
        fs::create_dir_all(dir.join("files"))?;
        let index_path = dir.join("index.jsonl");
        let saved = match fs::File::open(&index_path) {
            Ok(f) => io::BufReader::new(f).lines().map_while(Result::ok).filter_map(|l| serde_json::from_str::<BackupEntry>(&l).ok()).map(|e| e.path).collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        let index = fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&index_path)?;
        Ok(Self { dir, saved, index })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Saves what `logical` held before this run first changed it (`None`: it did not
    /// exist), unless this run already did. The caller reads it through the descriptor the
    /// change will use (see `capabilities/fs/beneath.rs`), never by name here.
    pub fn save(&mut self, logical: &Path, original: Option<&Original>) -> io::Result<()> {
        if self.saved.contains(logical) {
            return Ok(());
        }
        let entry = match original {
            Some(original) => {
                let copy = Path::new("files").join(logical.strip_prefix("/").unwrap_or(logical));
                let dest = self.dir.join(&copy);
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent)?;
                }
                let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&dest)?;
                f.write_all(&original.content)?;
                f.sync_all()?;
                BackupEntry { path: logical.to_owned(), existed: true, mode: Some(original.mode), copy: Some(copy), directory: false }
            }
            None => BackupEntry { path: logical.to_owned(), existed: false, mode: None, copy: None, directory: false },
        };
        self.record(entry)
    }

    /// Records, before it is made, a directory this run creates.
    pub fn save_created_dir(&mut self, logical: &Path) -> io::Result<()> {
        if self.saved.contains(logical) {
            return Ok(());
        }
        self.record(BackupEntry { path: logical.to_owned(), existed: false, mode: None, copy: None, directory: true })
    }

    fn record(&mut self, entry: BackupEntry) -> io::Result<()> {
        let mut line = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.index.write_all(&line)?;
        self.index.sync_all()?;
        self.saved.insert(entry.path);
        Ok(())
    }
}

/// A file's content and permission bits before a change.
#[derive(Debug, Clone)]
pub struct Original {
    pub content: Vec<u8>,
    pub mode: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_version_only_even_across_reopen() {
        let state = tempfile::tempdir().unwrap();
        let original = |text: &str| Original { content: text.as_bytes().to_vec(), mode: 0o644 };
        let logical = Path::new("/opt/canopsis/etc/webserver.conf");
        let mut b = Backups::open(state.path(), "run-1").unwrap();
        b.save(logical, Some(&original("original\n"))).unwrap();
        b.save(logical, Some(&original("changed\n"))).unwrap();
        drop(b);
        let mut b = Backups::open(state.path(), "run-1").unwrap();
        b.save(logical, Some(&original("changed again\n"))).unwrap();
        let copy = b.dir().join("files/opt/canopsis/etc/webserver.conf");
        assert_eq!(fs::read_to_string(copy).unwrap(), "original\n");
        let index = fs::read_to_string(b.dir().join("index.jsonl")).unwrap();
        assert_eq!(index.lines().count(), 1);
    }

    #[test]
    fn records_files_that_did_not_exist() {
        let state = tempfile::tempdir().unwrap();
        let mut b = Backups::open(state.path(), "r").unwrap();
        b.save(Path::new("/new.conf"), None).unwrap();
        let index = fs::read_to_string(b.dir().join("index.jsonl")).unwrap();
        let e: BackupEntry = serde_json::from_str(index.trim()).unwrap();
        assert!(!e.existed && e.copy.is_none());
    }
}
