//! Running one published step outside `canup apply`, for the tests of the step catalogue.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use canup::audit::{AuditLog, AuditRecord};
use canup::backup::Backups;
use canup::capabilities::http::Endpoints;
use canup::capabilities::{CapabilitySet, Grant};
use canup::manifest::{Edition, Method, Phase, ReleaseSteps, StepManifest};
use canup::repository::ReleaseData;
use canup::sandbox::{LoadedStep, Sandbox, StepContext, StepEnv, StepReport};
use canup::sysroot::Sysroot;
use canup::ui::{ConsoleUi, Level};
use semver::Version;

/// What a step sees: versions, install and the operator's endpoints and settings.
#[derive(Clone)]
pub struct Setting {
    pub installed: Version,
    pub target: Version,
    pub release: Version,
    pub edition: Edition,
    pub method: Method,
    pub endpoints: Endpoints,
    pub settings: BTreeMap<String, String>,
    /// The data files of the step's release (what `canup repo add-release` publishes).
    pub data: ReleaseData,
}

/// A step crate under `steps/`: its manifest and its built module, loaded.
pub fn load(sandbox: &Sandbox, crate_dir: &str, step_id: &str) -> anyhow::Result<(StepManifest, LoadedStep, Version)> {
    let dir = crate::workspace_dir().join("steps").join(crate_dir);
    let steps = ReleaseSteps::load(&dir.join("step.toml"))?;
    let manifest = steps.select(Some(step_id), &dir)?.clone();
    let source = crate::step_sources()?.into_iter().find(|s| s.dir == dir).ok_or_else(|| anyhow::anyhow!("no step source {crate_dir}"))?;
    let module = source.module.ok_or_else(|| anyhow::anyhow!("{crate_dir} has no crate"))?;
    let loaded = sandbox.load(step_id, &std::fs::read(module)?, &steps.api)?;
    Ok((manifest, loaded, steps.api))
}

/// Runs `step` on the simulated host at `root` with its declared capabilities as the policy,
/// and the shipped policy's content rules (what a unit or Compose change may say), which a
/// declaration does not carry.
pub async fn run(sandbox: &Sandbox, loaded: &LoadedStep, step: &StepManifest, root: &Path, state: &Path, s: &Setting) -> (StepReport, Vec<AuditRecord>) {
    let audit = Arc::new(AuditLog::in_memory("steprun"));
    // As canup reads a manifest: `{compose_dir}` is the operator's project (the setting, else
    // the default).
    let compose_dir = s.settings.get("compose_dir").cloned().unwrap_or_else(|| canup::capabilities::DEFAULT_COMPOSE_DIR.to_owned());
    let caps = &step.capabilities.at_compose_dir(&compose_dir);
    let context = StepContext {
        step_id: step.id.clone(),
        phase: step.phase,
        installed: s.installed.clone(),
        target: s.target.clone(),
        release: s.release.clone(),
        edition: (step.phase != Phase::Detect).then_some(s.edition),
        method: (step.phase != Phase::Detect).then_some(s.method),
        dry_run: false,
    };
    let shipped = crate::shipped_policy();
    let policy = CapabilitySet { units: shipped.units, compose: shipped.compose, ..caps.clone() };
    let grant = Grant::new(&step.id, caps, &policy).expect("valid capabilities");
    let ui = Arc::new(ConsoleUi { assume_yes: true, accept_manual: true, min_level: Some(Level::Warn) });
    let env = StepEnv {
        endpoints: Arc::new(s.endpoints.clone()),
        settings: Arc::new(s.settings.clone()),
        data: Arc::new(s.data.clone()),
        ..StepEnv::new(grant, Sysroot::new(root).expect("sysroot"), Backups::open(state, "steprun").expect("backups"), audit.clone(), ui, context)
    };
    let report = sandbox.run(loaded, env).await;
    (report, audit.records())
}
