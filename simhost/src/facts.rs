//! The vendor's facts (`facts/canopsis.toml`): which packages Canopsis ships per release, OS
//! and edition, their requirements, units and configuration. The simulated host is built from
//! them, so that it agrees with the vendor rather than with canup's own assumptions, and
//! `cargo xtask vendor-check` compares them with the vendor's tags.
//!
//! The facts are embedded (a host can be made anywhere), and `CANUP_SIM_FACTS=FILE` adds a file
//! of the same format on top: a vendor adds a new release's facts without building canup-sim
//! again (docs/facts.md).

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// The facts shipped with canup-sim.
pub const EMBEDDED: &str = canopsis_facts::CANOPSIS_TOML;

pub use canopsis_facts::{Version, covers};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Releases {
    #[serde(default)]
    pub untagged: Vec<String>,
    #[serde(default)]
    pub tagged: Vec<String>,
    #[serde(default)]
    pub examples: Vec<String>,
}

/// A package the vendor builds for some OSes, as it is over `from..=to`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub name: String,
    pub os: Vec<String>,
    pub from: String,
    pub to: String,
    /// The `/etc/yum.repos.d` id of the repository that serves it.
    pub repository: String,
    /// Its requirements among Canopsis packages (unversioned, as the vendor's specs write them).
    #[serde(default)]
    pub requires: Vec<String>,
    #[serde(default)]
    pub conflicts: Vec<String>,
    /// Its `%config(noreplace)` entries.
    #[serde(default)]
    pub config: Vec<String>,
    /// Whether it ships `/opt/canopsis/VERSION.txt`.
    #[serde(default)]
    pub version_txt: bool,
    /// The file of the vendor's tag that states it, when it has one.
    pub source: Option<String>,
    /// Where the fact comes from when no tag states it, or what to know about it.
    pub basis: Option<String>,
}

/// What the installation guide installs for an OS and edition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    pub os: String,
    pub edition: String,
    pub from: String,
    pub to: String,
    pub packages: Vec<String>,
    pub source: Option<String>,
    pub basis: Option<String>,
}

/// The systemd units of an edition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Units {
    pub edition: String,
    pub from: String,
    pub to: String,
    /// Unit files in /usr/lib/systemd/system.
    pub files: Vec<String>,
    /// The instances the installation enables.
    #[serde(default)]
    pub enabled: Vec<String>,
    pub source: Option<String>,
    pub basis: Option<String>,
}

/// A configuration file and who owns it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub path: String,
    /// `package` or `operator`.
    pub owner: String,
    pub from: String,
    pub to: String,
    /// The reference file per edition (`core`, `cat`) in the source directory.
    #[serde(default)]
    pub reference: std::collections::BTreeMap<String, String>,
    pub source: Option<String>,
    pub basis: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    #[serde(default)]
    pub releases: Releases,
    #[serde(default, rename = "package")]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub install: Vec<Install>,
    #[serde(default)]
    pub units: Vec<Units>,
    #[serde(default)]
    pub config: Vec<Config>,
}

/// One package of one release, as the simulated repository builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub name: String,
    pub version: String,
    pub repository: String,
    pub requires: Vec<String>,
    pub conflicts: Vec<String>,
    pub version_txt: bool,
    /// The unit files it ships (the Community main package ships Community's).
    pub units: Vec<String>,
}

/// The packages that carry the edition's main role on an OS: what detection and the unit
/// files belong to.
pub const MAIN_PACKAGES: &[&str] = &["canopsis-core", "canopsis", "canopsis-cat", "canopsis-pro"];

impl Facts {
    /// The embedded facts, with `CANUP_SIM_FACTS` (a file of the same format) added on top.
    pub fn load() -> Result<Self> {
        let mut facts = Self::parse(EMBEDDED, "the embedded facts/canopsis.toml")?;
        if let Some(extra) = std::env::var_os("CANUP_SIM_FACTS") {
            let path = std::path::PathBuf::from(extra);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading CANUP_SIM_FACTS {}", path.display()))?;
            facts.extend(Self::parse(&text, &path.display().to_string())?);
        }
        Ok(facts)
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let facts: Self = toml::from_str(text).with_context(|| format!("parsing {origin}"))?;
        facts.check().with_context(|| format!("in {origin}"))?;
        Ok(facts)
    }

    /// Every range is made of versions, and every version listed parses.
    fn check(&self) -> Result<()> {
        let ranges = self
            .packages
            .iter()
            .map(|p| (&p.from, &p.to))
            .chain(self.install.iter().map(|i| (&i.from, &i.to)))
            .chain(self.units.iter().map(|u| (&u.from, &u.to)))
            .chain(self.config.iter().map(|c| (&c.from, &c.to)));
        for (from, to) in ranges {
            if Version::parse(from).map_err(anyhow::Error::msg)? > Version::parse(to).map_err(anyhow::Error::msg)? {
                bail!("the range {from}..={to} is empty");
            }
        }
        for v in self.versions() {
            Version::parse(&v).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// Adds `other`'s releases and facts; a release `other` lists again is not listed twice.
    pub fn extend(&mut self, other: Self) {
        let known: BTreeSet<String> = self.versions().into_iter().collect();
        let fresh = |list: Vec<String>| list.into_iter().filter(|v| !known.contains(v)).collect::<Vec<_>>();
        self.releases.untagged.extend(fresh(other.releases.untagged));
        self.releases.tagged.extend(fresh(other.releases.tagged));
        self.releases.examples.extend(fresh(other.releases.examples));
        self.packages.extend(other.packages);
        self.install.extend(other.install);
        self.units.extend(other.units);
        self.config.extend(other.config);
    }

    /// Every version the facts know, ascending.
    pub fn versions(&self) -> Vec<String> {
        let mut all: Vec<String> = self.releases.untagged.iter().chain(&self.releases.tagged).chain(&self.releases.examples).cloned().collect();
        all.sort_by_key(|v| Version::parse(v).ok());
        all.dedup();
        all
    }

    pub fn knows(&self, version: &str) -> bool {
        self.versions().iter().any(|v| v == version)
    }

    /// The facts of `version` or an error that says how to add them.
    fn known(&self, version: &str) -> Result<()> {
        if self.knows(version) {
            return Ok(());
        }
        bail!(
            "the facts know no Canopsis {version}: add it to [releases] of facts/canopsis.toml with its packages, installs and units \
             (or in a file of the same format named by CANUP_SIM_FACTS=FILE; docs/facts.md)"
        )
    }

    /// Every package built for `os` at `version`, the main packages first.
    pub fn packages(&self, version: &str, os: &str) -> Result<Vec<Built>> {
        self.known(version)?;
        let mut out: Vec<Built> = Vec::new();
        for p in self.packages.iter().filter(|p| p.os.iter().any(|o| o == os) && covers(&p.from, &p.to, version)) {
            if out.iter().any(|b| b.name == p.name) {
                bail!("two facts give package {} for {os} at {version}", p.name);
            }
            // Community's units come with its main package, and with Pro's where Pro's replaces
            // it (`canopsis-pro` conflicts with `canopsis`).
            let community_units = matches!(p.name.as_str(), "canopsis-core" | "canopsis" | "canopsis-pro");
            // Pro's own unit files (the SNMP engine from 23.10) come with canopsis-pro.
            let pro_units = if p.name == "canopsis-pro" { self.unit_files(version, "cat") } else { Vec::new() };
            out.push(Built {
                name: p.name.clone(),
                version: version.to_owned(),
                repository: p.repository.clone(),
                requires: p.requires.clone(),
                conflicts: p.conflicts.clone(),
                version_txt: p.version_txt,
                units: if community_units { self.unit_files(version, "core").into_iter().chain(pro_units).collect() } else { Vec::new() },
            });
        }
        out.sort_by_key(|b| (!MAIN_PACKAGES.contains(&b.name.as_str()), b.name.clone()));
        Ok(out)
    }

    /// What the guide installs for `os` and `edition` at `version`; an error when the facts
    /// give no installation there (Canopsis 24.04 on CentOS 7, say).
    pub fn install(&self, version: &str, os: &str, edition: &str) -> Result<Vec<String>> {
        self.known(version)?;
        self.install
            .iter()
            .find(|i| i.os == os && i.edition == edition && covers(&i.from, &i.to, version))
            .map(|i| i.packages.clone())
            .ok_or_else(|| anyhow::anyhow!("the facts give no {edition} installation of Canopsis {version} on {os}"))
    }

    /// The installed packages for `os` and `edition` at `version`: the guide's and their
    /// requirements, each checked to be built there.
    pub fn installed(&self, version: &str, os: &str, edition: &str) -> Result<Vec<Built>> {
        let built = self.packages(version, os)?;
        let mut wanted: Vec<String> = self.install(version, os, edition)?;
        let mut out: Vec<Built> = Vec::new();
        while let Some(name) = wanted.pop() {
            if out.iter().any(|b| b.name == name) {
                continue;
            }
            let package = built
                .iter()
                .find(|b| b.name == name)
                .ok_or_else(|| anyhow::anyhow!("Canopsis {version} on {os} needs package {name}, which the facts do not build there"))?;
            wanted.extend(package.requires.iter().cloned());
            out.push(package.clone());
        }
        out.sort_by_key(|b| (!MAIN_PACKAGES.contains(&b.name.as_str()), b.name.clone()));
        Ok(out)
    }

    fn unit_files(&self, version: &str, edition: &str) -> Vec<String> {
        self.units.iter().filter(|u| u.edition == edition && covers(&u.from, &u.to, version)).flat_map(|u| u.files.clone()).collect()
    }

    /// The unit instances an installation of `edition` enables: Community's, and Pro's on top.
    pub fn enabled_units(&self, version: &str, edition: &str) -> Vec<String> {
        let editions: &[&str] = if edition == "cat" { &["core", "cat"] } else { &["core"] };
        self.units.iter().filter(|u| editions.contains(&u.edition.as_str()) && covers(&u.from, &u.to, version)).flat_map(|u| u.enabled.clone()).collect()
    }

    /// The file the operator owns for settings that would otherwise go in a package's file.
    pub fn operator_config(&self, version: &str) -> Option<&str> {
        self.config.iter().find(|c| c.owner == "operator" && covers(&c.from, &c.to, version)).map(|c| c.path.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts::parse(EMBEDDED, "embedded").unwrap()
    }

    #[test]
    fn the_installations_of_each_era_are_the_vendors() {
        let f = facts();
        let names = |v, os, ed| f.installed(v, os, ed).unwrap().into_iter().map(|b| b.name).collect::<Vec<_>>();
        assert_eq!(names("4.3.5", "centos7", "core"), ["canopsis-core", "canopsis-engines-go"]);
        assert_eq!(names("4.5.5", "centos7", "core"), ["canopsis-core", "canopsis-engines-go", "canopsis-webui"]);
        assert_eq!(names("4.5.5", "centos7", "cat"), ["canopsis-cat", "canopsis-core", "canopsis-engines-go", "canopsis-engines-go-cat", "canopsis-webui"]);
        assert_eq!(names("23.04.8", "rhel8", "core"), ["canopsis", "canopsis-common", "canopsis-webui"]);
        assert_eq!(names("23.10.2", "rhel8", "cat"), ["canopsis-pro", "canopsis-webui"]);
        assert_eq!(names("24.04.3", "rhel9", "cat"), ["canopsis-pro", "canopsis-common", "canopsis-webui"]);
        assert!(f.installed("24.04.3", "centos7", "core").is_err(), "24.04 is not installed on CentOS 7");
    }

    #[test]
    fn an_unknown_release_names_the_way_to_add_it() {
        let err = facts().packages("24.10.0", "rhel8").unwrap_err().to_string();
        assert!(err.contains("facts know no Canopsis 24.10.0") && err.contains("CANUP_SIM_FACTS"), "{err}");
    }

    #[test]
    fn a_facts_file_adds_a_release() {
        let mut f = facts();
        let extra = r#"
[releases]
tagged = ["24.10.0"]
[[package]]
name = "canopsis"
os = ["rhel9"]
from = "24.10.0"
to = "24.10.0"
repository = "canopsis"
[[install]]
os = "rhel9"
edition = "core"
from = "24.10.0"
to = "24.10.0"
packages = ["canopsis"]
"#;
        f.extend(Facts::parse(extra, "extra").unwrap());
        assert_eq!(f.installed("24.10.0", "rhel9", "core").unwrap()[0].name, "canopsis");
    }

    #[test]
    fn units_follow_the_era() {
        let f = facts();
        assert!(f.enabled_units("23.04.5", "core").iter().any(|u| u == "canopsis-engine-go@engine-service"));
        assert!(!f.enabled_units("23.10.5", "core").iter().any(|u| u == "canopsis-engine-go@engine-service"), "23.10 dropped engine-service");
        assert!(f.enabled_units("23.10.5", "cat").iter().any(|u| u == "canopsis-engine-go@engine-webhook"));
        assert_eq!(f.operator_config("4.6.0"), Some("/opt/canopsis/etc/conf.d/canopsis-override.toml"));
        assert_eq!(f.operator_config("4.5.5"), None);
    }
}
