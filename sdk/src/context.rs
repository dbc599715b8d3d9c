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

impl Context {
    /// The Canopsis packages of this edition, pinned to exactly the target version
    /// (`canopsis-core-3.40.0`, plus `canopsis-cat-3.40.0` for Pro): never "latest".
    pub fn pinned_packages(&self) -> Vec<String> {
        let mut packages = vec![format!("canopsis-core-{}", self.target)];
        if self.edition == "cat" {
            packages.push(format!("canopsis-cat-{}", self.target));
        }
        packages
    }
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
