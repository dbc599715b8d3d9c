//! Planning: which steps an upgrade from the installed version C to a target T runs, in which
//! order, and whether canup may run it at all.
//!
//! The releases are C < R ≤ T in semver order (pre-releases only when targeted; withdrawn
//! intermediates skipped, a withdrawn target refused). Steps are filtered by the install's
//! method and edition and grouped by phase. `pre-update` and `post-update` come from every
//! release, ascending (each release note's actions in turn); within a release, by `order`,
//! then id. `preflight`, `update`, `finalize` and `verify` act once: a step every release
//! carries (the standard procedure, the broadcast, the checks) comes from the target's
//! release only, while a step only an intermediate release carries (22.10.3's notice before
//! the downtime, 23.04.8's one start of engine-service) still runs, for that release; these
//! phases run by `order`, then release, then id, so that 23.04.8's step (order 20) follows the
//! target's finalize (order 10) whatever the target. `detect` runs before planning and is not
//! part of it.

use semver::Version;
use serde::Serialize;
use thiserror::Error;

use crate::capabilities::CapabilitySet;
use crate::manifest::{Edition, Method, Phase};
use crate::repository::{Barrier, Index, IndexStep};
use crate::version::text;

/// The major version of a Canopsis release: the first number up to 4.x, YY.MM from 22.10 on
/// (`numeros-version-canopsis.md`).
pub fn major_of(v: &Version) -> (u64, Option<u64>) {
    if v.major >= 22 { (v.major, Some(v.minor)) } else { (v.major, None) }
}

fn show_major(v: &Version) -> String {
    match major_of(v) {
        (m, Some(n)) => format!("{m}.{n:02}"),
        (m, None) => m.to_string(),
    }
}

#[derive(Debug, Error, PartialEq)]
pub enum PlanError {
    #[error(
        "the installed version {} is not in the repository, so canup cannot tell which release notes apply; check the detected version (canup status) or the repository",
        text(.0)
    )]
    UnknownInstalled(Version),
    #[error("{} → {} is a major upgrade: follow the migration guide for Canopsis {major}; canup only runs regular upgrades", text(installed), text(target))]
    Major { installed: Version, target: Version, major: String },
    #[error("{0}")]
    Barrier(Box<Crossing>),
    #[error("{} is older than the installed {}: canup does not downgrade; restore a backup instead", text(target), text(installed))]
    Downgrade { installed: Version, target: Version },
    #[error("release {} is not in the repository; `canup status` lists the reachable targets", text(.0))]
    NotInRepository(Version),
    #[error("release {} was withdrawn by the vendor: {reason}", text(version))]
    Withdrawn { version: Version, reason: String },
    #[error("no regular release newer than {} is in the repository", text(.0))]
    NoTarget(Version),
}

impl PlanError {
    /// Distinct exit codes, one per refusal (documented in `--help`).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        use crate::exit::ExitCode;
        match self {
            PlanError::Major { .. } | PlanError::Barrier(_) => ExitCode::MajorTarget,
            PlanError::Downgrade { .. } => ExitCode::Downgrade,
            PlanError::NotInRepository(_) | PlanError::NoTarget(_) => ExitCode::NotInRepository,
            PlanError::Withdrawn { .. } => ExitCode::Withdrawn,
            PlanError::UnknownInstalled(_) => ExitCode::UnknownInstalled,
        }
    }
}

/// A plan that would cross a migration barrier.
#[derive(Debug, PartialEq)]
pub struct Crossing {
    pub installed: Version,
    pub target: Version,
    /// The release that carries the barrier.
    pub at: Version,
    pub barrier: Barrier,
}

impl std::fmt::Display for Crossing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (from, to, at) = (text(&self.installed), text(&self.target), text(&self.at));
        // The target itself may be the release of the guide: then the path reaches it.
        let how = if self.at == self.target { "reaches" } else { "crosses" };
        write!(
            f,
            "{from} → {to} {how} {at}, which needs the migration guide \"{}\" ({}): {}. canup never plans across a migration guide: follow it by hand up to {at}; canup plans from there",
            self.barrier.guide, self.barrier.url, self.barrier.reason
        )
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlannedStep {
    pub release: Version,
    pub phase: Phase,
    pub step: IndexStep,
    /// What the journal calls this run of the step (see [`assign_keys`]).
    pub key: String,
}

/// Names each planned step for the journal, its receipts and resuming: its id, or
/// `id@release` when the plan runs the same step for several releases (a shared step of
/// `pre-update` or `post-update`, such as the MongoDB scripts of 4.5.5, 4.5.6 and 4.5.7).
/// Keyed by id alone, the second release's run would be taken for done once the first one
/// was, and would replay the first one's receipts. Deterministic, so that a resumed run
/// rebuilt from the journal gets the same keys.
pub fn assign_keys(steps: &mut [PlannedStep]) {
    let mut count: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for p in steps.iter() {
        *count.entry(p.step.manifest.id.clone()).or_default() += 1;
    }
    for p in steps.iter_mut() {
        p.key = match count.get(&p.step.manifest.id) {
            Some(n) if *n > 1 => format!("{}@{}", p.step.manifest.id, text(&p.release)),
            _ => p.step.manifest.id.clone(),
        };
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Plan {
    pub installed: Version,
    pub target: Version,
    pub edition: Edition,
    pub method: Method,
    /// Releases the upgrade goes through, ascending.
    pub releases: Vec<Version>,
    /// Withdrawn releases on the way, skipped, with the vendor's reason.
    pub skipped: Vec<(Version, String)>,
    pub steps: Vec<PlannedStep>,
}

/// The newest regular (non-pre-release, not withdrawn) release of the installed major
/// before the next migration barrier.
pub fn newest_target(index: &Index, installed: &Version) -> Option<Version> {
    let barrier = next_barrier(index, installed).map(|(v, _)| v);
    index
        .releases
        .iter()
        .filter(|r| r.version.pre.is_empty() && r.withdrawn.is_none() && major_of(&r.version) == major_of(installed))
        .filter(|r| barrier.is_none_or(|b| r.version < *b))
        .map(|r| r.version.clone())
        .max()
}

/// The first release after `installed` that carries a migration barrier, withdrawn or not:
/// a withdrawn release's guide still stands between the versions around it.
pub fn next_barrier<'a>(index: &'a Index, installed: &Version) -> Option<(&'a Version, &'a Barrier)> {
    index.releases.iter().filter(|r| r.version > *installed).find_map(|r| r.barrier.as_ref().map(|b| (&r.version, b)))
}

pub fn plan(index: &Index, installed: &Version, target: Option<&Version>, edition: Edition, method: Method) -> Result<Plan, PlanError> {
    if index.release(installed).is_none() {
        return Err(PlanError::UnknownInstalled(installed.clone()));
    }
    let target = match target {
        Some(t) => t.clone(),
        None => newest_target(index, installed).ok_or_else(|| PlanError::NoTarget(installed.clone()))?,
    };
    if target < *installed {
        return Err(PlanError::Downgrade { installed: installed.clone(), target });
    }
    // A migration guide the vendor named says more than "a major upgrade": it comes first.
    if let Some((at, barrier)) = next_barrier(index, installed).filter(|(at, _)| **at <= target) {
        return Err(PlanError::Barrier(Box::new(Crossing { installed: installed.clone(), target, at: at.clone(), barrier: barrier.clone() })));
    }
    if major_of(&target) != major_of(installed) {
        return Err(PlanError::Major { major: show_major(&target), installed: installed.clone(), target });
    }
    let target_release = index.release(&target).ok_or_else(|| PlanError::NotInRepository(target.clone()))?;
    if let Some(reason) = &target_release.withdrawn {
        return Err(PlanError::Withdrawn { version: target.clone(), reason: reason.clone() });
    }
    let mut releases = Vec::new();
    let mut skipped = Vec::new();
    for r in index.releases.iter().filter(|r| r.version > *installed && r.version <= target) {
        if !r.version.pre.is_empty() && r.version != target {
            continue;
        }
        match &r.withdrawn {
            Some(reason) => skipped.push((r.version.clone(), reason.clone())),
            None => releases.push(r),
        }
    }
    let applies = |s: &IndexStep| s.manifest.serves(method, edition);
    let mut steps = Vec::new();
    let target_ids: std::collections::BTreeSet<&str> =
        releases.iter().filter(|r| r.version == target).flat_map(|r| r.steps.iter().map(|s| s.manifest.id.as_str())).collect();
    for phase in [Phase::Preflight, Phase::PreUpdate, Phase::Update, Phase::Finalize, Phase::PostUpdate, Phase::Verify] {
        let once = !matches!(phase, Phase::PreUpdate | Phase::PostUpdate);
        let mut chosen: Vec<PlannedStep> = releases
            .iter()
            .flat_map(|r| r.steps.iter().map(move |s| (r, s)))
            .filter(|(_, s)| s.manifest.phase == phase && applies(s))
            .filter(|(r, s)| !once || r.version == target || !target_ids.contains(s.manifest.id.as_str()))
            .map(|(r, s)| PlannedStep { release: r.version.clone(), phase, step: s.clone(), key: String::new() })
            .collect();
        match once {
            true => {
                chosen.sort_by(|a, b| (a.step.manifest.order, &a.release, &a.step.manifest.id).cmp(&(b.step.manifest.order, &b.release, &b.step.manifest.id)))
            }
            false => {
                chosen.sort_by(|a, b| (&a.release, a.step.manifest.order, &a.step.manifest.id).cmp(&(&b.release, b.step.manifest.order, &b.step.manifest.id)))
            }
        }
        steps.extend(chosen);
    }
    assign_keys(&mut steps);
    Ok(Plan { installed: installed.clone(), target, edition, method, releases: releases.iter().map(|r| r.version.clone()).collect(), skipped, steps })
}

/// What each step of the plan declares beyond `policy`: the step and the rules it lacks, for
/// every step that lacks any (a step shared by several releases once).
pub fn missing_grants<'a>(plan: &'a Plan, policy: &CapabilitySet) -> Vec<(&'a PlannedStep, CapabilitySet)> {
    let mut seen = std::collections::BTreeSet::new();
    plan.steps
        .iter()
        .filter(|p| seen.insert(p.step.manifest.id.as_str()))
        .map(|p| (p, p.step.manifest.capabilities.missing_from(policy)))
        .filter(|(_, missing)| !missing.is_empty())
        .collect()
}

/// Admission: every step of the plan must get what it declared. A step that wants more than
/// the operator's policy allows stops the plan here, before anything runs; every grant the
/// plan lacks is named at once, with the step that needs it and what the step is for.
pub fn admit(plan: &Plan, policy: &CapabilitySet) -> Result<(), Vec<String>> {
    let refusals: Vec<String> = missing_grants(plan, policy)
        .into_iter()
        .map(|(p, missing)| {
            let m = &p.step.manifest;
            let lines: Vec<String> = missing.describe().iter().map(|l| format!("\n      {l}")).collect();
            format!("step {} ({}) needs, beyond the policy:{}", m.id, m.description, lines.concat())
        })
        .collect();
    if refusals.is_empty() { Ok(()) } else { Err(refusals) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::{ExecRule, FsRules};
    use crate::manifest::StepManifest;
    use crate::repository::{Release, index::INDEX_FORMAT};

    fn step(id: &str, phase: Phase, order: u32, methods: &[Method], editions: &[Edition]) -> IndexStep {
        IndexStep {
            api: Version::new(1, 0, 0),
            module: "m.wasm".into(),
            sha256: String::new(),
            length: 0,
            manifest: StepManifest { order, methods: methods.to_vec(), editions: editions.to_vec(), ..StepManifest::bare(id, phase) },
        }
    }

    /// Each release ships the standard procedure (the same steps in every release, as shared
    /// steps are) and its own notes.
    fn release(v: &str, extra: Vec<IndexStep>) -> Release {
        use Edition::*;
        use Method::*;
        let mut steps = vec![
            step("broadcast", Phase::Preflight, 0, &[Packages, Compose], &[Core, Cat]),
            step("yum", Phase::Update, 0, &[Packages], &[Core, Cat]),
            step("compose", Phase::Update, 0, &[Compose], &[Core, Cat]),
            step("canopsinit", Phase::Finalize, 10, &[Packages], &[Core, Cat]),
            step("drain", Phase::Verify, 0, &[Packages, Compose], &[Core, Cat]),
        ];
        steps.extend(extra);
        Release {
            version: Version::parse(v).unwrap(),
            published: "2020-01-01".into(),
            withdrawn: None,
            barrier: None,
            steps,
            no_update: None,
            data: Vec::new(),
            waived: Default::default(),
        }
    }

    fn index() -> Index {
        use Edition::*;
        use Method::*;
        Index {
            format: INDEX_FORMAT,
            requires: Vec::new(),
            releases: vec![
                release("3.37.0", vec![]),
                release("3.38.0", vec![step("3.38.0/mongo-rename", Phase::PreUpdate, 0, &[Packages, Compose], &[Core, Cat])]),
                release(
                    "3.39.0",
                    vec![
                        step("3.39.0/unbind-che", Phase::PostUpdate, 20, &[Packages], &[Core, Cat]),
                        step("3.39.0/enable-fifo", Phase::PostUpdate, 10, &[Packages], &[Core, Cat]),
                        step("3.39.0/fifo-compose", Phase::PostUpdate, 10, &[Compose], &[Core, Cat]),
                        step("3.39.0/cat-only", Phase::PostUpdate, 30, &[Packages], &[Cat]),
                    ],
                ),
                release(
                    "3.39.1",
                    vec![
                        step("3.39.1/notice", Phase::Preflight, 50, &[Packages, Compose], &[Core, Cat]),
                        step("3.39.1/once-more", Phase::Finalize, 20, &[Packages], &[Core, Cat]),
                    ],
                ),
                release("3.40.0", vec![step("3.40.0/webserver", Phase::PostUpdate, 10, &[Packages], &[Core, Cat])]),
                release("3.41.0-rc.1", vec![step("3.41.0-rc.1/x", Phase::PostUpdate, 0, &[Packages], &[Core, Cat])]),
                release("4.0.0", vec![]),
            ],
            shared: Vec::new(),
        }
    }

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    fn ids(p: &Plan) -> Vec<&str> {
        p.steps.iter().map(|s| s.step.manifest.id.as_str()).collect()
    }

    #[test]
    fn phases_in_order_once_or_per_release() {
        let p = plan(&index(), &v("3.37.0"), Some(&v("3.40.0")), Edition::Core, Method::Packages).unwrap();
        assert_eq!(p.releases, [v("3.38.0"), v("3.39.0"), v("3.39.1"), v("3.40.0")]);
        assert_eq!(
            ids(&p),
            [
                "broadcast",
                "3.39.1/notice",
                "3.38.0/mongo-rename",
                "yum",
                "canopsinit",
                "3.39.1/once-more",
                "3.39.0/enable-fifo",
                "3.39.0/unbind-che",
                "3.40.0/webserver",
                "drain",
            ]
        );
        // The standard steps act once, from the target; an intermediate release's own step of
        // such a phase runs once too, for its release, after the target's steps of lower order.
        let release_of = |id: &str| p.steps.iter().find(|s| s.step.manifest.id == id).map(|s| s.release.to_string());
        assert_eq!(release_of("yum").as_deref(), Some("3.40.0"));
        assert_eq!(release_of("3.39.1/once-more").as_deref(), Some("3.39.1"));
    }

    #[test]
    fn a_step_run_for_several_releases_is_journaled_once_per_release() {
        use Edition::*;
        use Method::*;
        let mut i = index();
        for r in i.releases.iter_mut().filter(|r| r.version == v("3.39.0") || r.version == v("3.40.0")) {
            r.steps.push(step("mongodb-scripts", Phase::PostUpdate, 5, &[Packages], &[Core, Cat]));
        }
        let p = plan(&i, &v("3.38.0"), Some(&v("3.40.0")), Core, Packages).unwrap();
        let keys: Vec<&str> = p.steps.iter().filter(|s| s.step.manifest.id == "mongodb-scripts").map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["mongodb-scripts@3.39.0", "mongodb-scripts@3.40.0"]);
        assert!(p.steps.iter().filter(|s| s.step.manifest.id != "mongodb-scripts").all(|s| s.key == s.step.manifest.id), "a step run once keeps its id");
    }

    #[test]
    fn method_and_edition_filter() {
        let p = plan(&index(), &v("3.38.0"), Some(&v("3.40.0")), Edition::Cat, Method::Compose).unwrap();
        assert_eq!(ids(&p), ["broadcast", "3.39.1/notice", "compose", "3.39.0/fifo-compose", "drain"]);
        let p = plan(&index(), &v("3.38.0"), Some(&v("3.40.0")), Edition::Cat, Method::Packages).unwrap();
        assert!(ids(&p).contains(&"3.39.0/cat-only"));
    }

    #[test]
    fn default_target_is_the_newest_regular_release_of_the_major() {
        let p = plan(&index(), &v("3.38.0"), None, Edition::Core, Method::Packages).unwrap();
        assert_eq!(p.target, v("3.40.0"), "neither the pre-release nor 4.0.0");
        assert!(!p.releases.contains(&v("3.41.0-rc.1")));
    }

    #[test]
    fn a_pre_release_runs_only_when_targeted() {
        let p = plan(&index(), &v("3.40.0"), Some(&v("3.41.0-rc.1")), Edition::Core, Method::Packages).unwrap();
        assert_eq!(p.releases, [v("3.41.0-rc.1")]);
    }

    #[test]
    fn refusals_have_distinct_codes_and_clear_messages() {
        let i = index();
        let e = plan(&i, &v("3.40.0"), Some(&v("4.0.0")), Edition::Core, Method::Packages).unwrap_err();
        assert_eq!(e.to_string(), "3.40.0 → 4.0.0 is a major upgrade: follow the migration guide for Canopsis 4; canup only runs regular upgrades");
        let d = plan(&i, &v("3.40.0"), Some(&v("3.39.0")), Edition::Core, Method::Packages).unwrap_err();
        assert!(matches!(d, PlanError::Downgrade { .. }));
        let n = plan(&i, &v("3.38.0"), Some(&v("3.45.0")), Edition::Core, Method::Packages).unwrap_err();
        assert!(matches!(n, PlanError::NotInRepository(_)));
        let u = plan(&i, &v("3.20.0"), Some(&v("3.40.0")), Edition::Core, Method::Packages).unwrap_err();
        assert!(matches!(u, PlanError::UnknownInstalled(_)));
        let mut withdrawn = i.clone();
        withdrawn.releases[4].withdrawn = Some("breaks axe".into());
        let w = plan(&withdrawn, &v("3.38.0"), Some(&v("3.40.0")), Edition::Core, Method::Packages).unwrap_err();
        assert_eq!(w.to_string(), "release 3.40.0 was withdrawn by the vendor: breaks axe");
        let codes: std::collections::HashSet<u8> = [e, d, n, u, w].iter().map(|e| e.exit_code().code()).collect();
        assert_eq!(codes.len(), 5);
    }

    #[test]
    fn yy_mm_is_the_major_from_22_10_on() {
        assert_eq!(major_of(&v("22.10.3")), (22, Some(10)));
        assert_ne!(major_of(&v("22.10.3")), major_of(&v("23.3.0")));
        assert_eq!(major_of(&v("4.5.7")), major_of(&v("4.6.0")));
        let mut i = index();
        i.releases.push(release("22.10.0", vec![]));
        i.releases.push(release("22.10.1", vec![]));
        i.releases.push(release("23.3.0", vec![]));
        assert!(plan(&i, &v("22.10.0"), Some(&v("22.10.1")), Edition::Core, Method::Packages).is_ok());
        let e = plan(&i, &v("22.10.1"), Some(&v("23.3.0")), Edition::Core, Method::Packages).unwrap_err();
        assert!(e.to_string().contains("migration guide for Canopsis 23.03"), "{e}");
    }

    /// Canopsis 4.6.0 needs its migration guide: canup upgrades up to 4.5.7 and from 4.6.0,
    /// never across, even when 4.6.0 itself is withdrawn.
    #[test]
    fn a_migration_barrier_is_never_crossed() {
        let mut i = index();
        for r in ["4.5.7", "4.6.0", "4.6.1", "4.6.2"] {
            i.releases.push(release(r, vec![]));
        }
        let guide = Barrier {
            guide: "Guide de migration vers Canopsis 4.6.0".into(),
            url: "https://doc.canopsis.net/migration/migration-4.6.0/".into(),
            reason: "new MongoDB collections".into(),
        };
        i.releases.iter_mut().find(|r| r.version == v("4.6.0")).unwrap().barrier = Some(guide.clone());
        let e = plan(&i, &v("4.5.7"), Some(&v("4.6.2")), Edition::Core, Method::Packages).unwrap_err();
        assert_eq!(e.exit_code().code(), 10);
        assert_eq!(
            e.to_string(),
            "4.5.7 → 4.6.2 crosses 4.6.0, which needs the migration guide \"Guide de migration vers Canopsis 4.6.0\" (https://doc.canopsis.net/migration/migration-4.6.0/): new MongoDB collections. canup never plans across a migration guide: follow it by hand up to 4.6.0; canup plans from there"
        );
        assert!(
            matches!(plan(&i, &v("4.5.7"), Some(&v("4.6.0")), Edition::Core, Method::Packages), Err(PlanError::Barrier(c)) if c.to_string().starts_with("4.5.7 → 4.6.0 reaches 4.6.0, which needs")),
            "the barrier release itself"
        );
        assert_eq!(newest_target(&i, &v("4.5.7")), Some(v("4.5.7")), "nothing newer before the barrier");
        assert_eq!(next_barrier(&i, &v("4.5.7")).map(|(at, _)| at), Some(&v("4.6.0")));
        let p = plan(&i, &v("4.6.0"), Some(&v("4.6.2")), Edition::Core, Method::Packages).unwrap();
        assert_eq!(p.releases, [v("4.6.1"), v("4.6.2")], "at the barrier, planning is normal");
        assert_eq!(newest_target(&i, &v("4.6.0")), Some(v("4.6.2")));
        i.releases.iter_mut().find(|r| r.version == v("4.6.0")).unwrap().withdrawn = Some("superseded by 4.6.1".into());
        let e = plan(&i, &v("4.5.7"), Some(&v("4.6.2")), Edition::Core, Method::Packages).unwrap_err();
        assert!(matches!(&e, PlanError::Barrier(c) if c.at == v("4.6.0")), "a withdrawn barrier release still stands: {e}");
        let p = plan(&i, &v("4.5.7"), None, Edition::Core, Method::Packages).unwrap();
        assert!(p.target == v("4.5.7") && p.steps.is_empty(), "no default target across it either: {p:?}");
    }

    #[test]
    fn withdrawn_intermediate_releases_are_skipped_with_their_reason() {
        let mut i = index();
        i.releases[3].withdrawn = Some("superseded".into());
        let p = plan(&i, &v("3.38.0"), Some(&v("3.40.0")), Edition::Core, Method::Packages).unwrap();
        assert_eq!(p.skipped, [(v("3.39.1"), "superseded".to_owned())]);
    }

    #[test]
    fn admission_refuses_a_step_wanting_more_than_the_policy() {
        let mut i = index();
        i.releases[4].steps[5].manifest.capabilities = CapabilitySet {
            exec: vec![ExecRule {
                program: "/usr/bin/canoctl".into(),
                args: vec!["restart".into()],
                env: vec![],
                users: vec![],
                readonly: false,
                shell: false,
                timeout_seconds: None,
                env_file: None,
            }],
            fs: FsRules {
                read: vec!["/opt/canopsis/etc/webserver.conf".into()],
                write: vec!["/opt/canopsis/etc/webserver.conf".into()],
                create: vec![],
                deny: vec![],
            },
            http: vec![],
            database: vec![],
            units: Default::default(),
            compose: Default::default(),
        };
        let p = plan(&i, &v("3.39.0"), Some(&v("3.40.0")), Edition::Core, Method::Packages).unwrap();
        let broad: CapabilitySet = toml::from_str(
            "[[exec]]\nprogram = \"/usr/bin/canoctl\"\nargs = [\"**\"]\n[fs]\nread = [\"/opt/canopsis/**\"]\nwrite = [\"/opt/canopsis/etc/*.conf\"]\n",
        )
        .unwrap();
        assert_eq!(admit(&p, &broad), Ok(()));
        let narrow: CapabilitySet = toml::from_str(
            "[[exec]]\nprogram = \"/usr/bin/canoctl\"\nargs = [\"status\"]\n[fs]\nread = [\"/opt/canopsis/**\"]\nwrite = [\"/opt/canopsis/etc/*.conf\"]\n",
        )
        .unwrap();
        let refusals = admit(&p, &narrow).unwrap_err();
        assert_eq!(refusals.len(), 1, "{refusals:?}");
        assert!(refusals[0].starts_with("step 3.40.0/webserver ("), "{refusals:?}");
        assert!(refusals[0].ends_with("needs, beyond the policy:\n      exec of /usr/bin/canoctl with arguments [\"restart\"]"), "{refusals:?}");
    }
}
