//! Fuzz targets: the parsers and matchers that read what canup does not control (the
//! repository's index and manifests, the operator's configuration, versions, argument
//! patterns). Each takes arbitrary input and must never panic; the planner and the pattern
//! matcher also check properties that must hold for every input.
//!
//! They run as proptests in `cargo xtask test` (`tests/tests/fuzz.rs`), for a set time each
//! with `cargo xtask fuzz SECONDS`, and under libFuzzer with `cargo +nightly fuzz run TARGET`
//! from `fuzz/`.

use semver::Version;

use crate::capabilities::exec::ExecRequest;
use crate::capabilities::{CapabilitySet, ExecRule, Grant, Policy};
use crate::config::Config;
use crate::manifest::{Edition, Method, Phase, ReleaseSteps, StepManifest};
use crate::plan::{self, PlanError};
use crate::repository::{Index, IndexStep, Release};

/// The release index as downloaded (before or after TUF: it must not panic either way).
pub fn index(bytes: &[u8]) {
    if let Ok(index) = Index::parse(bytes) {
        let _ = serde_json::to_vec(&index);
    }
}

/// A crate's or a repository's `step.toml`.
pub fn manifest(text: &str) {
    if let Ok(steps) = toml::from_str::<ReleaseSteps>(text) {
        for step in &steps.steps {
            let _ = Grant::new(&step.id, &step.capabilities, &step.capabilities);
        }
    }
}

/// The operator's `canup.toml`, its policy compiled and its limits resolved.
pub fn config(text: &str) {
    if let Ok(config) = Config::parse(text, "fuzz") {
        let _ = Policy::compile(&config.policy);
        let _ = config.limits.resolve();
        let _ = config.state_dir();
    }
}

/// The planner over an index of the given versions (some withdrawn, some pre-releases),
/// from `installed` to `target`. Whatever the input, a plan goes up and through releases
/// strictly between `installed` and `target`, in order, never across a major.
pub fn planner(versions: &[(u64, u64, u64, u8)], installed: (u64, u64, u64), target: Option<(u64, u64, u64)>) {
    let mut index = Index { format: crate::repository::index::INDEX_FORMAT, ..Default::default() };
    for &(major, minor, patch, flags) in versions {
        let mut version = Version::new(major, minor, patch);
        if flags & 1 == 1 {
            version.pre = semver::Prerelease::new("rc.1").unwrap_or(semver::Prerelease::EMPTY);
        }
        let withdrawn = (flags & 2 == 2).then(|| "withdrawn by the fuzzer".to_owned());
        let steps = [Phase::Update, Phase::PostUpdate].into_iter().map(|phase| step(&version, phase)).collect();
        index.upsert(Release {
            version,
            published: "2020-01-01".into(),
            withdrawn,
            barrier: None,
            steps,
            no_update: None,
            data: Vec::new(),
            waived: Default::default(),
        });
    }
    let installed = Version::new(installed.0, installed.1, installed.2);
    let target = target.map(|t| Version::new(t.0, t.1, t.2));
    match plan::plan(&index, &installed, target.as_ref(), Edition::Core, Method::Packages) {
        Ok(p) => {
            assert!(p.target >= p.installed, "a plan never goes down: {} → {}", p.installed, p.target);
            assert_eq!(plan::major_of(&p.target), plan::major_of(&p.installed), "a plan never crosses a major");
            assert!(p.releases.windows(2).all(|w| w[0] < w[1]), "releases in order: {:?}", p.releases);
            assert!(p.releases.iter().all(|r| *r > p.installed && *r <= p.target), "releases within ({}, {}]: {:?}", p.installed, p.target, p.releases);
            assert!(p.steps.iter().all(|s| p.releases.contains(&s.release)), "every step belongs to a planned release");
        }
        Err(PlanError::Downgrade { installed: i, target: t }) => assert!(t < i),
        Err(_) => {}
    }
}

fn step(version: &Version, phase: Phase) -> IndexStep {
    IndexStep {
        api: crate::manifest::STEP_API,
        module: format!("release-{version}.wasm"),
        sha256: String::new(),
        length: 0,
        manifest: StepManifest::bare(format!("{version}/{phase}"), phase),
    }
}

/// An argument pattern and the arguments of a request. An argument list equal to the
/// patterns' text is always allowed; a request with more arguments than patterns and no `**`
/// is never allowed; an option never passes a pattern that does not start with '-'.
pub fn patterns(patterns: &[String], args: &[String]) {
    let rule = ExecRule {
        program: "/usr/bin/x".into(),
        args: patterns.to_vec(),
        env: vec![],
        users: vec![],
        readonly: false,
        timeout_seconds: None,
        shell: false,
        env_file: None,
    };
    let set = CapabilitySet { exec: vec![rule], ..CapabilitySet::default() };
    let Ok(grant) = Grant::new("fuzz", &set, &set) else { return };
    let request = |args: &[String]| ExecRequest { program: "/usr/bin/x".into(), args: args.to_vec(), ..Default::default() };
    let verdict = grant.check_exec(&request(args));
    if args.len() > patterns.len() && !patterns.iter().any(|p| p == "**") {
        assert!(verdict.is_err(), "{args:?} has more arguments than {patterns:?} and was allowed");
    }
    assert!(grant.check_exec(&request(patterns)).is_ok(), "the patterns' own text {patterns:?} was refused");
    // An option passes only a pattern (or an alternative) that itself starts with '-', or the
    // pattern's own text.
    for (i, a) in args.iter().enumerate() {
        let pattern = patterns.get(i).or(patterns.last().filter(|p| *p == "**"));
        if a.starts_with('-') && pattern.is_some_and(|p| p != a && !p.split('|').any(|alt| alt.starts_with('-'))) {
            assert!(verdict.is_err(), "option {a:?} passed pattern {pattern:?} in {patterns:?}");
        }
    }
}
