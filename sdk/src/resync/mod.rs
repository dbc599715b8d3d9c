//! Three-way resync of the configuration files a vendor ships and an operator edits: the
//! Compose YAML and its dotenv files.
//!
//! The base is the vendor's reference file of the installed release, "theirs" the reference
//! of the target release, "ours" the operator's file. What changed between the two references
//! is applied to the operator's file; what the operator changed is kept; where both changed
//! the same key, nothing is written and every such key is reported with the three values.
//!
//! The models, and what was taken from each:
//! - `git merge-file`: the three inputs and the rule that a change on one side only is taken
//!   as is. Unlike it, conflicts are never written into the file as markers: the operator's
//!   file must stay valid, so a conflict stops the resync before any write.
//! - Helm 3's three-way strategic merge: the merge is on the structure (mapping keys), not on
//!   lines, so formatting, key order or flow style never make a conflict, and an operator's
//!   live change (a port, an extra service) survives an upgrade of the chart.
//! - `rpmconf` and dpkg's conffile prompts: a file the operator changed is never replaced
//!   silently; the answer is in the operator's hands, with the old and new reference values in
//!   front of them (dpkg shows the diff, rpmconf keeps `.rpmnew`).
//!
//! Scalar sequences (ports, volumes, `depends_on`) merge as sets: the items the reference
//! added are appended, the items it removed are removed, and the operator's own items stay.
//! The sequences whose order is their meaning (`command`, `entrypoint`, a health check's
//! `test`, `env_file`, where a later file wins) are one value.

mod env;
mod yaml;

use std::fmt;

pub use env::{entries as env_entries, env};
pub use yaml::{Value, yaml, yaml_value};

/// Both sides changed `key`: the operator's value and the reference's old and new ones
/// (`None`: absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    pub key: String,
    pub ours: Option<String>,
    pub base: Option<String>,
    pub theirs: Option<String>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |v: &Option<String>| v.as_deref().map_or_else(|| "absent".to_owned(), |v| format!("`{v}`"));
        write!(f, "{}: yours is {}; the reference changed it from {} to {}", self.key, shown(&self.ours), shown(&self.base), shown(&self.theirs))
    }
}

/// The operator's file with the reference changes applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Resynced {
    pub text: String,
    /// The reference changes written into the file (`key: old → new`).
    pub applied: Vec<String>,
    /// The operator's changes that stay (`key` and what they did).
    pub kept: Vec<String>,
}

impl Resynced {
    /// True when the operator's file is left as it was.
    pub fn unchanged(&self) -> bool {
        self.applied.is_empty()
    }
}

/// A unified diff (`--- a/PATH`, `+++ b/PATH`, three lines of context) from `old` to `new`:
/// what a resync does to a file, shown before it is done. Empty when they are equal.
pub fn unified_diff(path: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new).unified_diff().context_radius(3).header(&format!("a{path}"), &format!("b{path}")).to_string()
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResyncError {
    /// `which` (base, theirs, ours) is not a file of this kind.
    Parse { which: &'static str, why: String },
    /// Both sides changed these keys; nothing was written.
    Conflicts(Vec<Conflict>),
}

impl fmt::Display for ResyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Parse { which, why } => write!(f, "the {which} file cannot be read: {why}"),
            Self::Conflicts(conflicts) => {
                write!(f, "{} key(s) changed both by you and by the reference:", conflicts.len())?;
                for c in conflicts {
                    write!(f, "\n  {c}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ResyncError {}
