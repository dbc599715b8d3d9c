//! The operator's policy as canup assembles it: where its rules come from, what wins, and
//! what a plan needs beyond it.
//!
//! Rules add up from three places, because each has its own owner and lifetime:
//! - the rules shipped with canup (`/usr/share/canup/policy.toml`), owned by the package and
//!   replaced by each canup upgrade: a new canup brings the rules its new steps need, which a
//!   `canup.toml` kept across upgrades (`%config(noreplace)`) never could;
//! - the drop-ins of `policy.d/` beside canup.toml, one file per `canup policy review`: the
//!   grants the operator accepted for a plan, reviewable and removable one by one;
//! - the operator's own `[policy]` in canup.toml, which canup never edits.
//!
//! The operator's `[deny]` in canup.toml wins over all three: a program, path or endpoint
//! named there is refused to every step whatever any file allows. Checks then intersect the
//! result with each step's declaration (`crate::capabilities`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::capabilities::{CapabilitySet, glob};
use crate::formats::ConfigError;

pub const SHIPPED_POLICY: &str = "/usr/share/canup/policy.toml";
/// The drop-in directory's name, beside canup.toml.
pub const DROP_IN_DIR: &str = "policy.d";

/// What no step may get, whatever a rule allows (canup.toml's `[deny]`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Deny {
    /// Programs (globs) no step runs.
    #[serde(default)]
    pub programs: Vec<String>,
    /// Paths (globs) no step reads, writes or creates.
    #[serde(default)]
    pub paths: Vec<String>,
    /// HTTP and database endpoints no step calls.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

impl Deny {
    fn program(&self, program: &str) -> bool {
        self.programs.iter().any(|p| p == program || glob(p, true, "[deny] programs").is_ok_and(|g| g.is_match(program)))
    }

    fn endpoint(&self, endpoint: &str) -> bool {
        self.endpoints.iter().any(|e| e == endpoint)
    }

    /// Whether a declared path pattern falls under a denied path (its text, as the plan
    /// compares patterns).
    fn path(&self, pattern: &str) -> bool {
        self.paths.iter().any(|p| p == pattern || glob(p, true, "[deny] paths").is_ok_and(|g| g.is_match(pattern)))
    }

    /// The part of `set` this denial leaves: rules of denied programs and endpoints removed,
    /// denied paths added to `fs.deny` (a path glob cannot be subtracted from another; the
    /// checkpoint refuses them).
    pub fn applied_to(&self, set: &CapabilitySet) -> CapabilitySet {
        let mut out = set.clone();
        out.exec.retain(|r| !self.program(&r.program));
        out.http.retain(|r| !self.endpoint(&r.endpoint));
        out.database.retain(|r| !self.endpoint(&r.endpoint));
        out.fs.deny.extend(self.paths.iter().cloned());
        out
    }

    /// The part of `missing` that `[deny]` refuses: no review can grant it.
    pub fn refused(&self, missing: &CapabilitySet) -> CapabilitySet {
        CapabilitySet {
            exec: missing.exec.iter().filter(|r| self.program(&r.program)).cloned().collect(),
            fs: crate::capabilities::FsRules {
                read: missing.fs.read.iter().filter(|p| self.path(p)).cloned().collect(),
                write: missing.fs.write.iter().filter(|p| self.path(p)).cloned().collect(),
                create: missing.fs.create.iter().filter(|p| self.path(p)).cloned().collect(),
                deny: Vec::new(),
            },
            http: missing.http.iter().filter(|r| self.endpoint(&r.endpoint)).cloned().collect(),
            database: missing.database.iter().filter(|r| self.endpoint(&r.endpoint)).cloned().collect(),
            units: Default::default(),
            compose: Default::default(),
        }
    }
}

impl Deny {
    /// `missing` split into what a review may grant and what `[deny]` refuses.
    pub fn split(&self, missing: &CapabilitySet) -> (CapabilitySet, CapabilitySet) {
        let refused = self.refused(missing);
        let keep = |all: &[String], out: &[String]| all.iter().filter(|x| !out.contains(x)).cloned().collect::<Vec<_>>();
        let grantable = CapabilitySet {
            exec: missing.exec.iter().filter(|r| !refused.exec.contains(r)).cloned().collect(),
            fs: crate::capabilities::FsRules {
                read: keep(&missing.fs.read, &refused.fs.read),
                write: keep(&missing.fs.write, &refused.fs.write),
                create: keep(&missing.fs.create, &refused.fs.create),
                deny: Vec::new(),
            },
            http: missing.http.iter().filter(|r| !refused.http.contains(r)).cloned().collect(),
            database: missing.database.iter().filter(|r| !refused.database.contains(r)).cloned().collect(),
            units: Default::default(),
            compose: Default::default(),
        };
        (grantable, refused)
    }
}

/// A policy file: the shipped rules or a drop-in. Only `[policy…]` tables.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
    pub policy: CapabilitySet,
}

/// Where a config's rules came from, for `canup policy review` and messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    /// The files read, in order (the shipped rules, then the drop-ins).
    pub files: Vec<PathBuf>,
    /// Where `canup policy review` writes.
    pub drop_in_dir: PathBuf,
}

fn read_policy_file(path: &Path) -> Result<Option<CapabilitySet>, ConfigError> {
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConfigError::Read { path: shown, source }),
    };
    let file: PolicyFile = crate::formats::strict_toml(&text).map_err(|source| ConfigError::Parse { path: shown.clone(), source })?;
    validate(&file.policy, &shown)?;
    Ok(Some(file.policy))
}

/// Refuses a policy source that says what no rule may say (a network program, a variable by
/// pattern or a forbidden one, a bad glob), naming the file: compiling it is that check.
pub fn validate(rules: &CapabilitySet, origin: &str) -> Result<(), ConfigError> {
    crate::capabilities::Policy::compile(rules).map(drop).map_err(|e| ConfigError::Invalid {
        path: origin.to_owned(),
        what: format!("the rule {:?}", e.pattern),
        why: e.why,
    })
}

/// The rules of the shipped file and of every `*.toml` of `drop_in_dir` (in name order),
/// and the files they came from. Missing files and directories add nothing.
pub fn read_sources(shipped: &Path, drop_in_dir: &Path) -> Result<(CapabilitySet, Vec<PathBuf>), ConfigError> {
    let mut paths = vec![shipped.to_path_buf()];
    match std::fs::read_dir(drop_in_dir) {
        Ok(entries) => {
            let mut drop_ins: Vec<PathBuf> = entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
            drop_ins.sort();
            paths.extend(drop_ins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(ConfigError::Read { path: drop_in_dir.display().to_string(), source }),
    }
    let mut rules = CapabilitySet::default();
    let mut read = Vec::new();
    for path in paths {
        if let Some(set) = read_policy_file(&path)? {
            rules.add(&set);
            read.push(path);
        }
    }
    Ok((rules, read))
}

/// The drop-in `canup policy review` writes: the grants, with a header saying what they are
/// for, as a file canup reads back ([`PolicyFile`]).
pub fn drop_in_text(grants: &CapabilitySet, header: &[String]) -> Result<String, toml::ser::Error> {
    let body = toml::to_string(&PolicyFile { policy: grants.clone() })?;
    let mut text: String = header.iter().map(|l| format!("# {l}\n")).collect();
    text.push('\n');
    text.push_str(&body);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> CapabilitySet {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn deny_wins_over_every_source_and_names_what_review_cannot_grant() {
        let deny = Deny { programs: vec!["/usr/bin/docker*".into()], paths: vec!["/etc/systemd/**".into()], endpoints: vec!["mongo".into()] };
        let rules = set(
            "[[exec]]\nprogram = \"/usr/bin/docker\"\n[[exec]]\nprogram = \"/usr/bin/rpm\"\n[[database]]\nendpoint = \"mongo\"\nwrite = true\n[[database]]\nendpoint = \"postgres\"\n",
        );
        let left = deny.applied_to(&rules);
        assert_eq!(left.exec.iter().map(|r| r.program.as_str()).collect::<Vec<_>>(), ["/usr/bin/rpm"]);
        assert_eq!(left.database.iter().map(|r| r.endpoint.as_str()).collect::<Vec<_>>(), ["postgres"]);
        assert_eq!(left.fs.deny, ["/etc/systemd/**"]);
        let missing = set("[fs]\nwrite = [\"/etc/systemd/system/x.conf\", \"/opt/canopsis/etc/y\"]\n[[exec]]\nprogram = \"/usr/bin/docker-compose\"\n");
        let refused = deny.refused(&missing);
        assert_eq!(refused.fs.write, ["/etc/systemd/system/x.conf"]);
        assert_eq!(refused.exec.len(), 1);
    }

    #[test]
    fn a_drop_in_reads_back_as_the_grants_it_was_written_from() {
        let grants = set(
            "[[exec]]\nprogram = \"/usr/bin/systemctl\"\nargs = [\"restart\", \"x\"]\n[fs]\nread = [\"/opt/x\"]\n[[database]]\nendpoint = \"postgres\"\nwrite = true\n",
        );
        let text = drop_in_text(&grants, &["granted for 24.04.9".into()]).unwrap();
        assert!(text.starts_with("# granted for 24.04.9\n"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(DROP_IN_DIR)).unwrap();
        std::fs::write(dir.path().join(DROP_IN_DIR).join("review.toml"), &text).unwrap();
        std::fs::write(dir.path().join(DROP_IN_DIR).join("notes.txt"), "not a policy").unwrap();
        let (read, files) = read_sources(&dir.path().join("absent.toml"), &dir.path().join(DROP_IN_DIR)).unwrap();
        assert_eq!(read, grants);
        assert_eq!(files.len(), 1);
        std::fs::write(dir.path().join(DROP_IN_DIR).join("bad.toml"), "[policy.fs]\nreed = []\n").unwrap();
        let e = read_sources(&dir.path().join("absent.toml"), &dir.path().join(DROP_IN_DIR)).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("reed"), "{e}");
    }
}
