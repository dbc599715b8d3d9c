//! Content rules: what a step may write into a file whose content root runs.
//!
//! A path rule says *where* a step may write; for some files that is not enough. A systemd
//! unit or drop-in is a command line for PID 1: a step allowed to rewrite one and to run
//! `systemctl daemon-reload` and a restart could add `ExecStartPre=+/bin/sh -c …` (the `+`
//! runs it as root whatever `User=` says), or drop the unit's `User=canopsis`. So a change to
//! any file under systemd's directories is judged by what it adds, against the operator's
//! `[policy.units]`:
//!
//! - every directive the change adds or alters must be one of `directives`;
//! - an `Exec…=` command may carry no `+`, `!` or `@` prefix (root, ambient capabilities, a
//!   chosen argv\[0\]), and its program (behind `/usr/bin/env`, as the vendor's units write it)
//!   must match one of `programs`;
//! - `User=`, `Group=`, `DynamicUser=` and `SupplementaryGroups=` may not change at all: the
//!   lines the file had stay, none is added, none is removed (removing a drop-in that set
//!   `User=` runs the service as root too).
//!
//! Lines the file already had are the operator's (or the vendor's) and stay as they are: a
//! step that removes one option from an operator's unit copy (3.39.0) is judged by the line
//! it rewrote, not by the rest of the file. Without `[policy.units]`, no such change passes.
//!
//! Compose files and the project's `.env` are judged the same way, by `compose.rs`.

pub mod compose;

use std::path::Path;

use globset::GlobMatcher;
use serde::{Deserialize, Serialize};

use super::{Denial, Grant, PatternError, extend, glob};

/// Where systemd reads units and drop-ins from: any file below is judged as one.
const UNIT_DIRS: &[&str] = &["/etc/systemd/", "/run/systemd/", "/usr/lib/systemd/", "/lib/systemd/", "/usr/local/lib/systemd/"];

/// Directives that decide which user a service runs as: never changed by a step.
const IDENTITY: &[&str] = &["User", "Group", "DynamicUser", "SupplementaryGroups"];

/// The operator's bounds on what a step writes into a systemd unit or drop-in.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UnitRules {
    /// Directive names a change may add or alter (`ExecStart`, `Restart`…).
    #[serde(default)]
    pub directives: Vec<String>,
    /// Programs (path globs) an `Exec…=` line a change adds may run.
    #[serde(default)]
    pub programs: Vec<String>,
}

impl UnitRules {
    pub fn is_empty(&self) -> bool {
        self.directives.is_empty() && self.programs.is_empty()
    }

    pub(crate) fn add(&mut self, other: &UnitRules) {
        extend(&mut self.directives, &other.directives);
        extend(&mut self.programs, &other.programs);
    }
}

/// The project files a content check reads beside the changed one, as the host sees them
/// (a dry run's staged changes included): a Compose file's `.env`, the Compose files a
/// `.env` feeds.
pub trait Project {
    fn read(&self, logical: &Path) -> Option<Vec<u8>>;
    fn list(&self, dir: &Path) -> Vec<String>;
}

/// Whether a change to `logical` is judged by its content (see [`Grant::check_content`]).
pub fn is_ruled(logical: &Path) -> bool {
    let name = logical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    is_unit_file(logical) || compose::is_compose_file(&name) || name == ".env"
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledUnitRules {
    directives: Vec<String>,
    programs: Vec<GlobMatcher>,
}

impl CompiledUnitRules {
    pub(crate) fn new(rules: &UnitRules, origin: &str) -> Result<Self, PatternError> {
        for d in &rules.directives {
            if IDENTITY.contains(&d.as_str()) {
                return Err(PatternError {
                    pattern: d.clone(),
                    origin: origin.to_owned(),
                    why: "which user a service runs as is never a step's to change".into(),
                });
            }
        }
        Ok(Self { directives: rules.directives.clone(), programs: rules.programs.iter().map(|p| glob(p, true, origin)).collect::<Result<_, _>>()? })
    }
}

/// A file's bytes as text, invalid UTF-8 replaced.
fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}

/// Whether `logical` is a file systemd reads as a unit or drop-in.
pub fn is_unit_file(logical: &Path) -> bool {
    let text = logical.to_string_lossy();
    UNIT_DIRS.iter().any(|d| text.starts_with(d))
}

/// One `Name=value` of a unit file, with its section (continuation lines joined).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    section: String,
    name: String,
    value: String,
}

fn entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if pending.is_empty() && line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_owned();
            continue;
        }
        // systemd joins a line ending in a backslash with the next one.
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let (name, value) = whole.split_once('=').map_or((whole.as_str(), ""), |(n, v)| (n.trim(), v.trim()));
        out.push(Entry { section: section.clone(), name: name.to_owned(), value: value.to_owned() });
    }
    if !pending.is_empty() {
        let (name, value) = pending.split_once('=').map_or((pending.as_str(), ""), |(n, v)| (n.trim(), v.trim()));
        out.push(Entry { section, name: name.to_owned(), value: value.to_owned() });
    }
    out
}

/// The entries of `new` that `old` does not have (as a multiset).
fn added(old: &[Entry], new: &[Entry]) -> Vec<Entry> {
    let mut left: Vec<&Entry> = old.iter().collect();
    let mut out = Vec::new();
    for e in new {
        match left.iter().position(|o| *o == e) {
            Some(i) => {
                left.remove(i);
            }
            None => out.push(e.clone()),
        }
    }
    out
}

/// Why an `Exec…=` value is refused, if it is: a privileged prefix, or a program outside
/// `programs` (looked for behind `/usr/bin/env`, which the vendor's units start engines with).
fn exec_refusal(value: &str, programs: &[GlobMatcher]) -> Option<String> {
    let mut rest = value.trim_start();
    if rest.is_empty() {
        return None; // `ExecStart=` empties the list: it adds no command.
    }
    loop {
        match rest.chars().next() {
            Some(c @ ('+' | '!' | '@')) => return Some(format!("the prefix {c:?} (it runs the command with privileges or a chosen name)")),
            Some('-' | ':' | '|') => rest = &rest[1..],
            _ => break,
        }
    }
    let mut words = rest.split_whitespace();
    let mut program = words.next().unwrap_or_default();
    if program == "/usr/bin/env" || program == "/bin/env" {
        match words.next() {
            Some(w) if !w.starts_with('-') && !w.contains('=') => program = w,
            Some(w) => return Some(format!("env's argument {w:?} (an option or a variable)")),
            None => return Some("env without a program".into()),
        }
    }
    if !program.starts_with('/') {
        return Some(format!("the program {program:?}, not an absolute path"));
    }
    if !programs.iter().any(|g| g.is_match(program)) {
        return Some(format!("the program {program}, not among [policy.units] programs"));
    }
    None
}

impl Grant {
    /// The checkpoint for a change to a file whose content root runs: `old` is what the file
    /// holds now (`None`: absent), `new` what the change leaves (`None`: removed). Files that
    /// are no such file pass.
    pub fn check_content(&self, logical: &Path, old: Option<&[u8]>, new: Option<&[u8]>, project: &dyn Project) -> Result<(), Denial> {
        if is_unit_file(logical) {
            return self.check_unit(logical, old, new);
        }
        let name = logical.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let dir = logical.parent().unwrap_or(Path::new("/"));
        let refused = |file: &Path, why: String| Denial::NotInPolicy {
            step: self.step.clone(),
            what: format!("the change to the Compose file {}: {why}", file.display()),
        };
        let env_of = |b: Option<&[u8]>| compose::parse_env(&text(b).unwrap_or_default());
        if compose::is_compose_file(&name) {
            let env = env_of(project.read(&dir.join(".env")).as_deref());
            let (old, new) = (text(old), text(new).unwrap_or_default());
            return compose::judge(&self.policy.compose, old.as_deref().map(|o| (o, &env)), (&new, &env)).map_err(|why| refused(logical, why));
        }
        if name == ".env" {
            let (old_env, new_env) = (env_of(old), env_of(new));
            for file in project.list(dir).into_iter().filter(|n| compose::is_compose_file(n)) {
                let path = dir.join(&file);
                let Some(content) = text(project.read(&path).as_deref()) else { continue };
                compose::judge(&self.policy.compose, Some((&content, &old_env)), (&content, &new_env))
                    .map_err(|why| refused(&path, format!("{why} (with the variables of {} as the change leaves it)", logical.display())))?;
            }
        }
        Ok(())
    }

    fn check_unit(&self, logical: &Path, old: Option<&[u8]>, new: Option<&[u8]>) -> Result<(), Denial> {
        let refused =
            |why: String| Denial::NotInPolicy { step: self.step.clone(), what: format!("the change to the systemd unit file {}: {why}", logical.display()) };
        let (old, new) = (entries(&text(old).unwrap_or_default()), entries(&text(new).unwrap_or_default()));
        let identity = |list: &[Entry]| list.iter().filter(|e| IDENTITY.contains(&e.name.as_str())).cloned().collect::<Vec<_>>();
        if identity(&old) != identity(&new) {
            return Err(refused(
                "it changes which user or group the service runs as (User=, Group=, DynamicUser=, SupplementaryGroups=), which no step may".into(),
            ));
        }
        let rules = &self.policy.units;
        for e in added(&old, &new) {
            if !rules.directives.contains(&e.name) {
                return Err(refused(format!("{}={} sets the directive {}, not among [policy.units] directives", e.name, e.value, e.name)));
            }
            if e.name.starts_with("Exec")
                && let Some(why) = exec_refusal(&e.value, &rules.programs)
            {
                return Err(refused(format!("{}={} has {why}", e.name, e.value)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_lines_and_sections_are_read_as_systemd_reads_them() {
        let e = entries("# c\n[Service]\nExecStart=/usr/bin/env \\\n  /opt/canopsis/bin/engine-che\n; x\n[Install]\nWantedBy=multi-user.target\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].value, "/usr/bin/env  /opt/canopsis/bin/engine-che");
        assert_eq!((e[1].section.as_str(), e[1].name.as_str()), ("Install", "WantedBy"));
    }

    #[test]
    fn exec_lines_are_judged_by_prefix_and_program() {
        let programs = vec![glob("/opt/canopsis/bin/*", true, "t").unwrap()];
        assert_eq!(exec_refusal("", &programs), None);
        assert_eq!(exec_refusal("/usr/bin/env /opt/canopsis/bin/%i", &programs), None);
        assert_eq!(exec_refusal("-/opt/canopsis/bin/engine-service -recomputeAllOnInit", &programs), None);
        for bad in [
            "+/bin/sh -c 'id > /pwned'",
            "!/opt/canopsis/bin/x",
            "-+/bin/sh",
            "@/opt/canopsis/bin/x sh",
            "/bin/sh -c x",
            "sh -c x",
            "/usr/bin/env sh",
            "/usr/bin/env LD_PRELOAD=/x /opt/canopsis/bin/x",
            "/opt/canopsis/bin/../../bin/sh",
        ] {
            assert!(exec_refusal(bad, &programs).is_some(), "{bad}");
        }
    }
}
