//! What the step is running for: versions, edition, method, dry run.

use semver::Version;

use crate::bindings::canup::step::context as wit;

#[derive(Debug, Clone, PartialEq)]
pub struct Context {
    /// Canopsis version installed before this upgrade.
    pub installed: Version,
    /// Version the upgrade goes to.
    pub target: Version,
    /// Release this step belongs to.
    pub release: Version,
    /// `core` (Community) or `cat` (Pro); empty while detecting.
    pub edition: String,
    /// `packages` or `compose`; empty while detecting.
    pub method: String,
    /// The phase the step runs in (`detect`, `preflight`, `pre-update`, ...).
    pub phase: String,
    pub dry_run: bool,
    pub step_id: String,
}

/// The version as Canopsis writes it, for package names, image tags and messages: from 22.10
/// on the month has two digits (`23.04.1`), which semver (`23.4.1`) drops.
pub fn version_text(v: &Version) -> String {
    match v.major {
        0..22 => v.to_string(),
        _ if v.pre.is_empty() => format!("{}.{:02}.{}", v.major, v.minor, v.patch),
        _ => format!("{}.{:02}.{}-{}", v.major, v.minor, v.patch, v.pre),
    }
}

/// Reads a version as Canopsis writes it (`23.04.1`) or as semver does (`23.4.1`).
pub fn parse_version(s: &str) -> Option<Version> {
    let s = s.trim();
    Version::parse(s).ok().or_else(|| {
        let (core, rest) = s.split_at(s.find(['-', '+']).unwrap_or(s.len()));
        let parts: Vec<u64> = core.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        let [major, minor, patch] = parts[..] else { return None };
        Version::parse(&format!("{major}.{minor}.{patch}{rest}")).ok()
    })
}

fn version(s: &str) -> Version {
    // The host validates versions before it runs anything; 0.0.0 means "unknown" (detect).
    Version::parse(s).unwrap_or(Version::new(0, 0, 0))
}

/// The context of the running step.
pub fn get() -> Context {
    let i = wit::get();
    Context {
        installed: version(&i.installed),
        target: version(&i.target),
        release: version(&i.release),
        edition: i.edition,
        method: i.method,
        phase: i.phase,
        dry_run: i.dry_run,
        step_id: i.step_id,
    }
}

/// An operator setting (`[settings]` in canup.toml), or `None`.
pub fn setting(name: &str) -> Option<String> {
    wit::setting(name)
}

/// Names of the data files the vendor signed with this step's release (for example
/// `compose/docker-compose.yml`), sorted.
pub fn data_files() -> Vec<String> {
    wit::data_files()
}

/// One data file of this step's release. Reading it needs no capability: it is vendor
/// content verified with the release, like the step's own code.
pub fn data(name: &str) -> crate::Result<Vec<u8>> {
    Ok(wit::data(name)?)
}
