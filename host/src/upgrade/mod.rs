//! The operator's upgrade: detect what is installed, plan, admit, verify every module, then
//! run the steps in order under the journal, resuming an interrupted run.
//!
//! Nothing runs before everything is known good: the plan is admitted against the policy and
//! every module of it is fetched, verified and compiled before the first step starts. That
//! work starts in the background as soon as the plan is known, so it overlaps with the
//! operator reading the plan instead of adding to the service interruption.

mod apply;
pub mod backups;
mod endpoints;
mod prefetch;
pub mod rollback;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use semver::Version;
use thiserror::Error;

use crate::audit::AuditLog;
use crate::backup::Backups;
use crate::capabilities::{Grant, Policy};
use crate::config::Config;
use crate::exit::ExitCode;
use crate::journal::{self, Journal, JournalError, StepActions};
use crate::manifest::{Edition, Method, Phase};
use crate::plan::{self, Plan, PlanError, PlannedStep};
use crate::repository::{Index, IndexStep, LoadOptions, ReleaseData, RepoError, Repository};
use crate::sandbox::{Detected, DryRun, LoadedStep, Sandbox, SandboxError, StepContext, StepEnv, StepReport};
use crate::sysroot::Sysroot;
use crate::ui::Ui;
pub use apply::{ApplyOptions, ApplySummary, Confirm, apply};
use prefetch::{Prefetch, load_step};

#[derive(Debug, Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "the plan needs more than the operator's policy allows; no step ran after detection (whose queries only read the host):\n  {}\n`canup policy review` shows these grants and, once you confirm, writes them to a drop-in file beside canup.toml (canup.toml is not changed); or narrow the steps.",
        .0.join("\n  ")
    )]
    Admission(Vec<String>),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("detection failed: {0}")]
    Detect(String),
    #[error("step {step} failed: {why}\nThe upgrade stopped; fix the cause and run `canup apply` again to resume from this step (run {run}).")]
    StepFailed { run: String, step: String, why: String },
    #[error(
        "an interrupted upgrade to {target} (run {run}) is pending; run `canup apply` to finish it, or `canup apply --restart` to abandon it and plan again"
    )]
    Pending { run: String, target: Version },
    #[error(
        "the repository changed step {step} since run {run} started (module {was} is now {now}); canup will not mix versions: run `canup apply --restart` to plan again"
    )]
    Changed { run: String, step: String, was: String, now: String },
    #[error("the operator declined the plan; no step ran after detection (whose queries only read the host)")]
    Declined,
    #[error(
        "the plan's steps would fail on what they call; nothing was changed (only detection ran, and read-only GET requests to the endpoints):\n  {}\nFix it and run `canup apply` again.",
        .0.join("\n  ")
    )]
    Endpoints(Vec<String>),
    #[error(
        "every step of run {run} ran, but Canopsis is not at {expected}: detection after the run {found}.\nThe upgrade is not done: the steps published for {expected} did not install it. Check `canup status` and the steps' output in `canup history`; `canup apply` plans again from what is installed."
    )]
    Unverified { run: String, expected: Version, found: String },
    #[error("{what} in {path}: {source}")]
    Store { what: &'static str, path: String, source: std::io::Error },
    #[error("the operator's policy: {0}")]
    Policy(#[from] crate::capabilities::PatternError),
    #[error("{what}: the task stopped before finishing: {source}")]
    Task { what: String, source: tokio::task::JoinError },
    #[error("the journal lock is poisoned: a thread of this run panicked; run `canup apply` again to resume")]
    JournalPoisoned,
    #[error("module of step {0} was not loaded")]
    NotLoaded(String),
    #[error("run {run}: {what}: {source}")]
    Restore { run: String, what: String, source: std::io::Error },
    #[error("run {run}: the backup index line {line} is not readable: {source}")]
    BackupIndex { run: String, line: usize, source: serde_json::Error },
    #[error("the backups before the first change: {0}")]
    Backup(String),
    #[error(
        "the backups before the first change do not fit in {dir}; nothing was changed:\n  {}\nFree space there, or set [backup] dir (or reserve_mib) in canup.toml.",
        .lines.join("\n  ")
    )]
    BackupSpace { dir: String, lines: Vec<String> },
    #[error("the operator declined the rollback of run {0}; nothing was changed")]
    RollbackDeclined(String),
    #[error("canup will not roll back run {run}: {why}\nNothing was changed.")]
    RollbackRefused { run: String, why: String },
    #[error(
        "rollback {rollback} of run {run} stopped at its {stage} stage: {why}\nFix the cause and run `canup rollback {run}` again: it resumes at that stage."
    )]
    RollbackFailed { rollback: String, run: String, stage: String, why: String },
    #[error("rollback {rollback} of run {run} is unfinished; run `canup rollback {run}` to finish it before anything else")]
    RollbackPending { run: String, rollback: String },
    #[error("rollback {rollback} ran every stage, but Canopsis is not at {expected}: {found}. Check `canup status`; the backup set is kept.")]
    RollbackUnverified { rollback: String, expected: String, found: String },
}

impl UpgradeError {
    /// The exit code this failure gives (see [`ExitCode`]).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            UpgradeError::Plan(e) => e.exit_code(),
            UpgradeError::Repo(_) => ExitCode::Repository,
            UpgradeError::Admission(_) => ExitCode::Admission,
            UpgradeError::Journal(JournalError::Locked { .. }) => ExitCode::Locked,
            UpgradeError::Pending { .. } | UpgradeError::Changed { .. } => ExitCode::Pending,
            UpgradeError::Sandbox(e) => e.exit_code(),
            UpgradeError::Declined | UpgradeError::RollbackDeclined(_) => ExitCode::Declined,
            UpgradeError::Unverified { .. } | UpgradeError::RollbackUnverified { .. } => ExitCode::Unverified,
            UpgradeError::Backup(_) | UpgradeError::BackupSpace { .. } => ExitCode::Backup,
            UpgradeError::RollbackRefused { .. } => ExitCode::RollbackRefused,
            UpgradeError::RollbackFailed { .. } => ExitCode::StepFailed,
            UpgradeError::RollbackPending { .. } => ExitCode::Pending,
            UpgradeError::StepFailed { .. } | UpgradeError::Detect(_) | UpgradeError::Endpoints(_) => ExitCode::StepFailed,
            UpgradeError::Journal(_)
            | UpgradeError::Store { .. }
            | UpgradeError::Policy(_)
            | UpgradeError::Task { .. }
            | UpgradeError::JournalPoisoned
            | UpgradeError::NotLoaded(_)
            | UpgradeError::Restore { .. }
            | UpgradeError::BackupIndex { .. } => ExitCode::Usage,
        }
    }
}

/// What an upgrade session works with.
pub struct Session {
    pub config: Config,
    pub sysroot: Sysroot,
    pub state_dir: PathBuf,
    pub repo: Arc<Repository>,
    pub index: Index,
    sandbox: Arc<Sandbox>,
    audit: Arc<AuditLog>,
    policy: Policy,
}

/// Receives the step-by-step progress of a run.
pub trait Progress: Ui {
    fn step_started(&self, n: usize, total: usize, planned: &PlannedStep);
    fn step_finished(&self, report: &StepReport);
}

/// The install method as far as a glance tells, for speculative work only: the operator's pin,
/// else a Compose project's `.env` where `compose_dir` says. Detection decides; a wrong guess
/// costs the other method's modules compiled after the plan, never a wrong plan.
fn likely_method(session: &Session) -> Method {
    if let Some(pinned) = session.config.method {
        return pinned;
    }
    let env = session.sysroot.map(&Path::new(&session.config.compose_dir()).join(".env"));
    if env.is_file() { Method::Compose } else { Method::Packages }
}

pub(crate) fn run_id() -> String {
    let t = humantime::format_rfc3339_seconds(SystemTime::now()).to_string().replace([':', '-'], "");
    format!("{}-{}", t.trim_end_matches('Z'), std::process::id())
}

impl Session {
    pub async fn open(config: Config, sysroot: Sysroot, repository: &str, trusted_root: &[u8]) -> Result<Self, UpgradeError> {
        let state_dir = config.state_dir();
        let repo = Repository::open(repository, trusted_root, &state_dir.join("cache/repository"), &state_dir.join("trust"), &LoadOptions::default()).await?;
        tracing::debug!("repository metadata verified");
        let mut index = repo.index().await?;
        tracing::debug!(releases = index.releases.len(), "release index read");
        // The steps' `{compose_dir}` is the operator's project, as in the policy (config.rs).
        let compose_dir = config.compose_dir();
        for step in index.releases.iter_mut().flat_map(|r| r.steps.iter_mut()) {
            step.manifest.capabilities = step.manifest.capabilities.at_compose_dir(&compose_dir);
        }
        let sandbox = Sandbox::new(Some(&state_dir.join("cache/compiled")))?
            .with_max_module(config.limits.resolve().module)
            .with_max_compile(config.limits.resolve().compile);
        tracing::debug!("sandbox ready");
        let audit = Arc::new(AuditLog::open(&state_dir.join("audit.jsonl"), "canup").map_err(|source| UpgradeError::Store {
            what: "audit log",
            path: state_dir.display().to_string(),
            source,
        })?);
        let policy = Policy::compile(&config.policy)?;
        Ok(Self { config, sysroot, state_dir, repo: Arc::new(repo), index, sandbox: Arc::new(sandbox), audit, policy })
    }

    async fn load(&self, step: &IndexStep) -> Result<LoadedStep, UpgradeError> {
        load_step(&self.repo, &self.sandbox, step).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        run: &str,
        loaded: &LoadedStep,
        step: &IndexStep,
        release: &Version,
        data: Arc<ReleaseData>,
        actions: Option<StepActions>,
        phase: Phase,
        installed: &Version,
        target: &Version,
        detected: Option<&Detected>,
        ui: Arc<dyn Ui>,
        dry_run: bool,
        recorded: &DryRun,
    ) -> Result<StepReport, UpgradeError> {
        let grant = Grant::with_policy(&step.manifest.id, &step.manifest.capabilities, &self.policy)?;
        let backups = Backups::open(&self.state_dir, run).map_err(|source| UpgradeError::Store {
            what: "backups",
            path: self.state_dir.display().to_string(),
            source,
        })?;
        let context = StepContext {
            step_id: step.manifest.id.clone(),
            phase,
            installed: installed.clone(),
            target: target.clone(),
            release: release.clone(),
            edition: detected.map(|d| d.edition),
            method: detected.map(|d| d.method),
            dry_run,
        };
        let env = StepEnv {
            endpoints: Arc::new(self.config.endpoints.clone()),
            databases: Arc::new(self.config.databases.clone()),
            limits: self.config.limits.resolve(),
            recorded: recorded.clone(),
            settings: Arc::new(self.config.settings.clone()),
            answers: Arc::new(self.config.answers.clone()),
            data,
            actions,
            ..StepEnv::new(grant, self.sysroot.clone(), backups, self.audit.clone(), ui, context)
        };
        tracing::trace!("grant, backups and context ready");
        let report = self.sandbox.run(loaded, env).await;
        tracing::trace!("step returned");
        Ok(report)
    }

    /// Runs the detect steps of the newest release that ships them; the operator's config can
    /// pin the edition and method when detection should not decide.
    pub async fn detect(&self, ui: Arc<dyn Ui>) -> Result<Detected, UpgradeError> {
        self.detect_recording(ui, None).await
    }

    /// [`Session::detect`]; in a dry run (`recorded` given) its queries join the run's list
    /// of commands.
    async fn detect_recording(&self, ui: Arc<dyn Ui>, recorded: Option<&DryRun>) -> Result<Detected, UpgradeError> {
        let release = self
            .index
            .releases
            .iter()
            .rev()
            .find(|r| r.withdrawn.is_none() && r.steps.iter().any(|s| s.manifest.phase == Phase::Detect))
            .ok_or_else(|| UpgradeError::Detect("the repository has no detect step".into()))?;
        let mut steps: Vec<&IndexStep> = release.steps.iter().filter(|s| s.manifest.phase == Phase::Detect).collect();
        steps.sort_by(|a, b| (a.manifest.order, &a.manifest.id).cmp(&(b.manifest.order, &b.manifest.id)));
        let unknown = Version::new(0, 0, 0);
        let mut detected = None;
        for step in steps {
            let loaded = self.load(step).await?;
            tracing::debug!(step = %step.manifest.id, "detect step loaded");
            let report = self
                .run_step(
                    "detect",
                    &loaded,
                    step,
                    &release.version,
                    Arc::default(),
                    None,
                    Phase::Detect,
                    &unknown,
                    &unknown,
                    None,
                    ui.clone(),
                    recorded.is_some(),
                    recorded.unwrap_or(&DryRun::default()),
                )
                .await?;
            tracing::debug!(step = %step.manifest.id, "detect step finished");
            if let Err(e) = &report.result {
                return Err(UpgradeError::Detect(format!("step {}: {e}", step.manifest.id)));
            }
            detected = report.detected.or(detected);
        }
        let mut d = detected.ok_or_else(|| UpgradeError::Detect("no detect step reported the installation".into()))?;
        if let Some(e) = self.config.edition {
            d.edition = e;
        }
        if let Some(m) = self.config.method {
            d.method = m;
        }
        Ok(d)
    }

    /// Fetches, verifies and compiles every module and data file `plan` needs, so that
    /// `canup apply` starts from the compiled cache: run by `canup plan`, before the
    /// maintenance window. Returns the number of distinct modules.
    pub async fn prepare(&self, plan: &Plan) -> Result<usize, UpgradeError> {
        let steps: Vec<&PlannedStep> = plan.steps.iter().collect();
        let (loaded, _) = Prefetch::new(self).finish(&self.index, &steps).await?;
        Ok(loaded.len())
    }

    /// The verified, admitted plan.
    pub fn plan(&self, detected: &Detected, to: Option<&Version>) -> Result<Plan, UpgradeError> {
        let p = self.unadmitted_plan(detected, to)?;
        plan::admit(&p, &self.config.policy).map_err(UpgradeError::Admission)?;
        Ok(p)
    }

    /// The plan before admission: what `canup policy review` compares with the policy.
    pub fn unadmitted_plan(&self, detected: &Detected, to: Option<&Version>) -> Result<Plan, UpgradeError> {
        Ok(plan::plan(&self.index, &detected.installed, to, detected.edition, detected.method)?)
    }
}

/// `canup restore-files RUN`: puts back every file a run changed, from its backups.
pub fn restore_files(state_dir: &std::path::Path, sysroot: &Sysroot, run: &str) -> Result<Vec<String>, UpgradeError> {
    crate::restore::restore(state_dir, sysroot, run).map_err(|e| match e {
        crate::restore::RestoreError::NoBackups { dir, source } => UpgradeError::Restore { run: run.to_owned(), what: format!("no backups in {dir}"), source },
        crate::restore::RestoreError::Io { what, source } => UpgradeError::Restore { run: run.to_owned(), what, source },
        crate::restore::RestoreError::Index { line, source } => UpgradeError::BackupIndex { run: run.to_owned(), line, source },
    })
}

/// For `canup status`: the installation, the repository's freshness, the newest target.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub installed: Version,
    pub edition: Edition,
    pub method: Method,
    /// The operating system, as `/etc/os-release` names it.
    pub os: Option<String>,
    pub repository: String,
    pub expires: Vec<(String, String)>,
    pub newest_target: Option<Version>,
    /// The next release that needs its migration guide: canup plans up to the release before it.
    pub barrier: Option<NextBarrier>,
    pub pending_run: Option<String>,
}

#[derive(Debug, serde::Serialize)]
pub struct NextBarrier {
    pub release: Version,
    #[serde(flatten)]
    pub barrier: crate::repository::Barrier,
}

pub async fn status(session: &Session, ui: Arc<dyn Ui>) -> Result<Status, UpgradeError> {
    let d = session.detect(ui).await?;
    let events = Journal::read(&session.state_dir)?;
    Ok(Status {
        newest_target: plan::newest_target(&session.index, &d.installed).filter(|t| *t > d.installed),
        barrier: plan::next_barrier(&session.index, &d.installed).map(|(release, barrier)| NextBarrier { release: release.clone(), barrier: barrier.clone() }),
        installed: d.installed,
        edition: d.edition,
        method: d.method,
        os: session.sysroot.os_name(),
        repository: session.repo.location().shown.clone(),
        expires: session.repo.expirations().into_iter().map(|(r, t)| (r.to_owned(), t.to_string())).collect(),
        pending_run: journal::unfinished(&events).map(|r| format!("{} (to {})", r.run, r.target)),
    })
}
