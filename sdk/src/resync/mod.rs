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
        let secret = secret_key(&self.key);
        let shown = |v: &Option<String>| match v.as_deref() {
            None => "absent".to_owned(),
            Some(_) if secret => "`***`".to_owned(),
            Some(v) => format!("`{}`", redact(v)),
        };
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

/// Whether a key names a secret (`RABBITMQ_DEFAULT_PASS`, `…_TOKEN`, `…SECRET…`).
fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_uppercase();
    ["PASS", "SECRET", "TOKEN", "PRIVATE", "CREDENTIAL"].iter().any(|w| k.contains(w))
}

/// Text as it can be shown and logged: the value of a secret-looking key (`…_PASSWORD=x`,
/// `password: x`) and the password of a URL (`amqp://user:x@host`) masked, line by line.
/// Compose files and their env files hold the site's credentials; the resync's diffs,
/// conflicts and notes go to the terminal and the journal.
pub fn redact(text: &str) -> String {
    text.split_inclusive('\n').map(redact_line).collect()
}

fn redact_line(line: &str) -> String {
    let mut out = line.to_owned();
    // KEY=value, KEY: value, - KEY=value (a diff's +/- and a list's dash before the key).
    let body = out.trim_start_matches(['+', '-', ' ', '\t']);
    let start = out.len() - body.len();
    if let Some(sep) = body.find(['=', ':']) {
        let key = body[..sep].trim().trim_matches(['"', '\'']);
        if !key.is_empty() && !key.contains(' ') && secret_key(key) {
            let end = out.trim_end_matches(['\n', '\r']).len();
            let value_start = start + sep + 1;
            if value_start < end && !out[value_start..end].trim().is_empty() {
                out.replace_range(value_start..end, if body.as_bytes()[sep] == b':' { " ***" } else { "***" });
            }
        }
    }
    // scheme://user:password@host
    let mut from = 0;
    while let Some(at) = out[from..].find("://").map(|i| from + i + 3) {
        let rest = &out[at..];
        let authority_end = rest.find(['/', ' ', '"', '\'', '\n']).unwrap_or(rest.len());
        match rest[..authority_end].rfind('@').and_then(|a| rest[..a].find(':').map(|c| (c, a))) {
            Some((colon, a)) => {
                out.replace_range(at + colon + 1..at + a, "***");
                from = at + colon + 4;
            }
            None => from = at,
        }
    }
    out
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
    /// Reference changes the operator's file cannot take where they are written (through a
    /// YAML merge key or alias), each with what to do; nothing was written.
    Unwritable(Vec<String>),
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
            Self::Unwritable(why) => {
                write!(f, "{} reference change(s) cannot be written where your file defines them:", why.len())?;
                for w in why {
                    write!(f, "\n  {w}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ResyncError {}
