//! `cargo xtask vendor-check DIR`: compares every fact of `facts/*.toml` that names a
//! source with the vendor's tag of each release it covers, in DIR (a checkout or a bare clone
//! of GitHub capensis/canopsis), and prints the agreement tag by tag.
//!
//! Both ways: what a fact states must be in the tag (a package's requirements, conflicts and
//! configuration in its spec, the units of the systemd directory, the packages an
//! installation guide installs), and what the tag declares must be in the facts (every package
//! of every spec, every unit file). CI has no network, so the facts are committed and the
//! README shows the last result, as for `xtask tuf-conformance`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use canup_tests::simhost::facts::{Facts, covers};

/// The spec files of the vendor's tree and the OS each builds for.
const SPECS: &[(&str, &str)] = &[
    ("community/docker/packaging/centos-7-canopsis-core.spec", "centos7"),
    ("community/dist/canopsis.spec", "rhel8"),
    ("community/dist/canopsis-el7.spec", "centos7"),
    ("community/dist/canopsis-el8.spec", "rhel8"),
    ("community/dist/canopsis-almalinux-8-x86_64.spec", "rhel8"),
    ("community/dist/canopsis-almalinux-9-x86_64.spec", "rhel9"),
];

/// A checkout or bare clone, read through git.
pub struct Vendor<'a> {
    dir: &'a Path,
}

impl Vendor<'_> {
    fn git(&self, args: &[&str]) -> Result<Option<String>> {
        let out = Command::new("git").arg("-C").arg(self.dir).args(args).output().context("running git")?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    fn has_tag(&self, tag: &str) -> Result<bool> {
        Ok(self.git(&["rev-parse", "--verify", "--quiet", &format!("refs/tags/{tag}^{{commit}}")])?.is_some())
    }

    /// The file at `path` in `tag`, a symbolic link followed (AlmaLinux 9's spec is one).
    pub fn file(&self, tag: &str, path: &str) -> Result<Option<String>> {
        let Some(entry) = self.git(&["ls-tree", tag, "--", path])? else { return Ok(None) };
        let Some(mode) = entry.split_whitespace().next() else { return Ok(None) };
        let text = self.git(&["show", &format!("{tag}:{path}")])?;
        match (mode, text) {
            ("120000", Some(target)) => {
                let parent = Path::new(path).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
                self.git(&["show", &format!("{tag}:{parent}/{}", target.trim())])
            }
            (_, text) => Ok(text),
        }
    }

    /// The names of the files directly in `dir` at `tag`.
    pub fn list(&self, tag: &str, dir: &str) -> Result<BTreeSet<String>> {
        let out = self.git(&["ls-tree", "--name-only", tag, &format!("{dir}/")])?.unwrap_or_default();
        Ok(out.lines().filter_map(|l| l.rsplit('/').next()).map(str::to_owned).collect())
    }
}

/// One package a spec declares.
#[derive(Debug, Default)]
struct Declared {
    name: String,
    requires: BTreeSet<String>,
    conflicts: BTreeSet<String>,
    config: BTreeSet<String>,
}

/// The packages of a spec: its own (`Name:`) and its subpackages (`%package X` is
/// `NAME-X`, `%package -n X` is `X`), each with its Canopsis requirements and conflicts and
/// the `%config(noreplace)` entries of its `%files`.
fn parse_spec(text: &str) -> Vec<Declared> {
    let mut packages: Vec<Declared> = Vec::new();
    let mut main = String::new();
    // The package the current preamble or %files section belongs to.
    let mut current = 0usize;
    let canopsis_words = |v: &str| -> Vec<String> { v.split([' ', ',', '\t']).filter(|w| w.starts_with("canopsis")).map(str::to_owned).collect() };
    let section_owner = |rest: &str, main: &str| -> String {
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["-n", name, ..] => (*name).to_owned(),
            [sub, ..] if !sub.starts_with('-') => format!("{main}-{sub}"),
            _ => main.to_owned(),
        }
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix("Name:") {
            main = name.trim().to_owned();
            packages.push(Declared { name: main.clone(), ..Declared::default() });
            current = packages.len() - 1;
        } else if let Some(rest) = line.strip_prefix("%package") {
            let name = section_owner(rest, &main);
            packages.push(Declared { name, ..Declared::default() });
            current = packages.len() - 1;
        } else if let Some(rest) = line.strip_prefix("%files") {
            let name = section_owner(rest, &main);
            current = packages.iter().position(|p| p.name == name).unwrap_or(current);
        } else if let Some(value) = line.strip_prefix("Requires:") {
            if let Some(p) = packages.get_mut(current) {
                p.requires.extend(canopsis_words(value));
            }
        } else if let Some(value) = line.strip_prefix("Conflicts:") {
            if let Some(p) = packages.get_mut(current) {
                p.conflicts.extend(canopsis_words(value));
            }
        } else if let Some(rest) = line.strip_prefix("%config(noreplace)")
            && let Some(p) = packages.get_mut(current)
            && let Some(path) = rest.split_whitespace().next()
        {
            p.config.insert(path.to_owned());
        }
    }
    packages
}

/// What one tag says against the facts: (facts checked, disagreements).
fn check_tag(vendor: &Vendor, facts: &Facts, tag: &str) -> Result<(usize, Vec<String>)> {
    let mut checked = 0;
    let mut wrong = Vec::new();
    // Packages, both ways.
    for (spec, os) in SPECS {
        let Some(text) = vendor.file(tag, spec)? else { continue };
        let declared = parse_spec(&text);
        let stated: Vec<_> = facts.packages.iter().filter(|p| p.source.as_deref() == Some(*spec) && covers(&p.from, &p.to, tag)).collect();
        for d in &declared {
            checked += 1;
            let Some(fact) = stated.iter().find(|p| p.name == d.name) else {
                wrong.push(format!("{spec} declares package {} that no fact with this source states for {tag}", d.name));
                continue;
            };
            if !fact.os.iter().any(|o| o == os) {
                wrong.push(format!("{spec} builds {} for {os}, the facts say {:?}", d.name, fact.os));
            }
            let set = |v: &Vec<String>| v.iter().cloned().collect::<BTreeSet<_>>();
            for (what, facts_say, tag_says) in [
                ("requires", set(&fact.requires), &d.requires),
                ("conflicts", set(&fact.conflicts), &d.conflicts),
                ("%config(noreplace)", set(&fact.config), &d.config),
            ] {
                if &facts_say != tag_says {
                    wrong.push(format!("{spec}: {} {what} {tag_says:?}, the facts say {facts_say:?}", d.name));
                }
            }
        }
        for fact in stated.iter().filter(|p| !declared.iter().any(|d| d.name == p.name)) {
            wrong.push(format!("the facts state package {} from {spec}, which does not declare it", fact.name));
        }
    }
    for fact in facts.packages.iter().filter(|p| covers(&p.from, &p.to, tag)) {
        if let Some(source) = &fact.source
            && vendor.file(tag, source)?.is_none()
        {
            wrong.push(format!("the facts state package {} from {source}, which {tag} does not have", fact.name));
        }
    }
    // The installation guides' `yum|dnf install` lines.
    for install in facts.install.iter().filter(|i| covers(&i.from, &i.to, tag)) {
        let Some(source) = &install.source else { continue };
        checked += 1;
        let Some(guide) = vendor.file(tag, source)? else {
            wrong.push(format!("the facts take the {} {} installation from {source}, which {tag} does not have", install.os, install.edition));
            continue;
        };
        let installed: BTreeSet<&str> = guide
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix("yum install ").or_else(|| l.strip_prefix("dnf install "))
            })
            .flat_map(str::split_whitespace)
            .collect();
        for package in install.packages.iter().filter(|p| !installed.contains(p.as_str())) {
            wrong.push(format!("{source} installs no {package} ({} {} installation)", install.os, install.edition));
        }
    }
    // Unit files of the systemd directory, both ways.
    for units in facts.units.iter().filter(|u| covers(&u.from, &u.to, tag)) {
        let Some(source) = &units.source else { continue };
        checked += 1;
        let in_tag: BTreeSet<String> = vendor.list(tag, source)?.into_iter().filter(|f| f.ends_with(".service")).collect();
        let stated: BTreeSet<String> = units.files.iter().cloned().collect();
        if in_tag != stated {
            let missing: Vec<_> = in_tag.difference(&stated).collect();
            let extra: Vec<_> = stated.difference(&in_tag).collect();
            wrong.push(format!("{source}: units the facts lack {missing:?}, units the tag lacks {extra:?}"));
        }
    }
    // Configuration: the operator's override file named by reconfigure, the reference files.
    for config in facts.config.iter().filter(|c| covers(&c.from, &c.to, tag)) {
        let Some(source) = &config.source else { continue };
        checked += 1;
        if config.reference.is_empty() {
            let text = vendor.file(tag, source)?.unwrap_or_default();
            if !text.contains(&config.path) {
                wrong.push(format!("{source} does not name {}", config.path));
            }
        } else {
            let files = vendor.list(tag, source)?;
            for (edition, file) in &config.reference {
                if !files.contains(file) {
                    wrong.push(format!("{source} has no {file} ({edition}'s {})", config.path));
                }
            }
        }
    }
    Ok((checked, wrong))
}

pub fn run(dir: &Path) -> Result<()> {
    let facts = Facts::parse(canup_tests::simhost::facts::EMBEDDED, "facts/canopsis.toml")?;
    let compose = canopsis_facts::compose::ComposeFacts::embedded().map_err(anyhow::Error::msg)?;
    let vendor = Vendor { dir };
    if vendor.git(&["rev-parse", "--git-dir"])?.is_none() {
        bail!("{} is not a git checkout or clone of capensis/canopsis (fetch it with `git clone https://github.com/capensis/canopsis`)", dir.display());
    }
    let (mut agreeing, mut total_checked, mut failures) = (0, 0, 0);
    for tag in &facts.releases.tagged {
        if !vendor.has_tag(tag)? {
            println!("{tag}: NO TAG in {}", dir.display());
            failures += 1;
            continue;
        }
        let (mut checked, mut wrong) = check_tag(&vendor, &facts, tag)?;
        let (compose_checked, compose_wrong) = crate::vendor_compose::check_tag(&vendor, &compose, tag)?;
        checked += compose_checked;
        wrong.extend(compose_wrong);
        total_checked += checked;
        if wrong.is_empty() {
            agreeing += 1;
            println!("{tag}: agrees ({checked} facts)");
        } else {
            failures += 1;
            println!("{tag}: DISAGREES");
            for w in wrong {
                println!("  - {w}");
            }
        }
    }
    println!(
        "vendor-check: {agreeing} of {} tags agree ({total_checked} facts checked); {} releases without a tag take their facts from the notes and guides",
        facts.releases.tagged.len(),
        facts.releases.untagged.len()
    );
    if failures > 0 {
        bail!("{failures} tags disagree with facts/canopsis.toml or facts/compose.toml");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_declares_its_packages_and_subpackages() {
        let spec = "Name: canopsis\nRequires: canopsis-common\nConflicts: canopsis-pro\n%package common\nSummary: x\n%package webui\nRequires: nginx >= 1:1.20\n\
                    %files\n%config(noreplace) /opt/canopsis/etc\n%files webui\n%config(noreplace) /etc/nginx/cors.inc\n%files common\n";
        let p = parse_spec(spec);
        let names: Vec<&str> = p.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["canopsis", "canopsis-common", "canopsis-webui"]);
        assert_eq!(p[0].requires.iter().collect::<Vec<_>>(), ["canopsis-common"]);
        assert_eq!(p[0].conflicts.iter().collect::<Vec<_>>(), ["canopsis-pro"]);
        assert!(p[2].requires.is_empty(), "nginx is not a Canopsis package");
        assert_eq!(p[2].config.iter().collect::<Vec<_>>(), ["/etc/nginx/cors.inc"]);
        assert_eq!(p[0].config.iter().collect::<Vec<_>>(), ["/opt/canopsis/etc"]);
    }
}
