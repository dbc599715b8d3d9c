//! `canup step run`: one step module run as canup would during an upgrade, for step authors.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use canup::audit::AuditLog;
use canup::backup::Backups;
use canup::capabilities::Grant;
use canup::exit::ExitCode;
use canup::manifest::ReleaseSteps;
use canup::repository::{self, publish};
use canup::sandbox::{Sandbox, SandboxError, StepContext, StepEnv};
use canup::ui::ConsoleUi;
use semver::Version;

use super::args::StepRunArgs;
use super::print;
use super::settings::Settings;
use super::{Failure, usage};

pub async fn run(settings: &Settings, args: StepRunArgs) -> Result<(), Failure> {
    let (config, state_dir) = (&settings.config, &settings.state_dir);
    let release = ReleaseSteps::load(&args.manifest).map_err(usage)?;
    let mut manifest = release.select(args.step.as_deref(), &args.manifest).map_err(usage)?.clone();
    manifest.capabilities = manifest.capabilities.at_compose_dir(&config.compose_dir());
    let wasm = std::fs::read(&args.module).with_context(|| format!("cannot read module {}", args.module.display())).map_err(usage)?;
    // Admitted as `apply` admits a plan: a declaration the policy does not cover is refused
    // whole, before anything runs, rather than denied call by call halfway through.
    if let Some(what) = manifest.capabilities.uncovered_by(&config.policy) {
        return Err(Failure::new(
            ExitCode::Admission,
            anyhow::anyhow!("step {} needs {what}, which the policy does not allow; nothing ran (widen the policy or narrow the manifest)", manifest.id),
        ));
    }
    let grant = Grant::new(&manifest.id, &manifest.capabilities, &config.policy).map_err(usage)?;

    let refused = |e: SandboxError| Failure::new(e.exit_code(), e);
    let sandbox = Sandbox::new(Some(&state_dir.join("cache/compiled")))
        .map_err(refused)?
        .with_max_module(config.limits.resolve().module)
        .with_max_compile(config.limits.resolve().compile);
    let load_start = std::time::Instant::now();
    let loaded = sandbox.load(&manifest.id, &wasm, &release.api).map_err(refused)?;
    let load_time = load_start.elapsed();

    let run = run_id("step-run");
    let audit =
        Arc::new(AuditLog::open(&state_dir.join("audit.jsonl"), &run).map_err(|e| usage(anyhow::anyhow!("audit log in {}: {e}", state_dir.display())))?);
    let backups = Backups::open(state_dir, &run).map_err(|e| usage(anyhow::anyhow!("backups in {}: {e}", state_dir.display())))?;
    let ui = Arc::new(ConsoleUi { assume_yes: args.yes, accept_manual: args.accept_manual, min_level: None });
    let context = StepContext {
        step_id: manifest.id.clone(),
        phase: manifest.phase,
        installed: args.installed.clone(),
        target: args.target.clone().or_else(|| release.release.clone()).unwrap_or(Version::new(0, 0, 0)),
        release: release.release.clone().unwrap_or(Version::new(0, 0, 0)),
        edition: Some(args.edition),
        method: Some(args.method),
        dry_run: false,
    };
    // The release's data files sit in `data/` beside its step.toml, as `canup repo add-release` publishes them.
    let data_dir = args.manifest.parent().map(|d| d.join("data")).filter(|d| d.is_dir());
    let data = match &data_dir {
        Some(d) => publish::read_data_dir(d).map_err(usage)?.into_iter().collect(),
        None => repository::ReleaseData::new(),
    };
    let env = StepEnv {
        endpoints: Arc::new(config.endpoints.clone()),
        databases: Arc::new(config.databases.clone()),
        limits: config.limits.resolve(),
        settings: Arc::new(config.settings.clone()),
        answers: Arc::new(config.answers.clone()),
        data: Arc::new(data),
        ..StepEnv::new(grant, settings.sysroot.clone(), backups, audit.clone(), ui, context)
    };
    let report = sandbox.run(&loaded, env).await;
    let records = audit.records();
    if args.output.json {
        print::step_json(&report, &records, loaded.from_cache, load_time);
    } else {
        print::step_human(&report, &records, loaded.from_cache, load_time);
    }
    // The report says why the step failed; nothing more to print.
    if report.result.is_err() { Err(Failure::reported(ExitCode::StepFailed)) } else { Ok(()) }
}

fn run_id(prefix: &str) -> String {
    let secs = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{prefix}-{secs}-{}", std::process::id())
}
