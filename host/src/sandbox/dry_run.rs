//! `canup apply --dry-run`: the real steps, with every change listed instead of made.

use std::path::Path;
use std::sync::{Arc, Mutex};

/// A dry run's record, shared by all its steps: the commands, file changes and requests the
/// real run would make, in order, and the files as the changes listed so far would leave them.
/// Later steps of the dry run read those (`fs.read`, `exists`, `list-dir`, `metadata`, and the
/// directories `create-dir` would make), so that a step whose work an earlier one already did
/// lists nothing, as it will do nothing in the real run.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    lines: Arc<Mutex<Vec<String>>>,
    staged: Arc<Mutex<std::collections::BTreeMap<std::path::PathBuf, Staged>>>,
}

/// A path as a dry run would leave it.
#[derive(Debug, Clone, PartialEq)]
pub enum Staged {
    File(Vec<u8>),
    Removed,
    Dir,
}

impl DryRun {
    pub fn record(&self, line: String) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(line);
        }
    }

    /// What was listed so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// How the listed changes leave `logical` (the step's resolved path); `None`: untouched.
    pub fn staged(&self, logical: &Path) -> Option<Staged> {
        self.staged.lock().ok().and_then(|s| s.get(logical).cloned())
    }

    pub fn stage(&self, logical: &Path, state: Staged) {
        if let Ok(mut s) = self.staged.lock() {
            s.insert(logical.to_owned(), state);
        }
    }

    /// `names` (a directory's entries on disk) as the listed changes leave `dir`, sorted.
    pub fn listing(&self, dir: &Path, mut names: Vec<String>) -> Vec<String> {
        for (name, state) in self.staged_in(dir) {
            names.retain(|n| *n != name);
            if state != Staged::Removed {
                names.push(name);
            }
        }
        names.sort();
        names
    }

    /// The entries staged directly in the directory `dir`: (name, state).
    fn staged_in(&self, dir: &Path) -> Vec<(String, Staged)> {
        let Ok(s) = self.staged.lock() else { return Vec::new() };
        s.iter().filter(|(p, _)| p.parent() == Some(dir)).filter_map(|(p, st)| Some((p.file_name()?.to_string_lossy().into_owned(), st.clone()))).collect()
    }
}
