//! The operator's upgrade: detect what is installed, plan, admit, verify every module, then
//! run the steps in order under the journal, resuming an interrupted run.
//!
//! Nothing runs before everything is known good: the plan is admitted against the policy and
//! every module of it is fetched, verified and compiled before the first step starts. That
//! work starts in the background as soon as the plan is known, so it overlaps with the
//! operator reading the plan instead of adding to the service interruption.

pub mod backups;
mod endpoints;
mod prefetch;
pub mod rollback;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use semver::Version;
use thiserror::Error;

use crate::audit::AuditLog;
use crate::backup::Backups;
use crate::capabilities::{Grant, Policy};
use crate::config::Config;
use crate::exit::ExitCode;
use crate::journal::{self, ApplyLock, Event, Journal, JournalError, Outcome, PlannedRef, StepActions};
use crate::manifest::{Edition, Method, Phase};
use crate::plan::{self, Plan, PlanError, PlannedStep};
use crate::repository::{Index, IndexStep, LoadOptions, ReleaseData, RepoError, Repository};
use crate::sandbox::{Detected, DryRun, LoadedStep, Sandbox, SandboxError, StepContext, StepEnv, StepReport};
use crate::sysroot::Sysroot;
use crate::ui::Ui;
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
    #[error("canup will not roll back run {run}: {why}\nNothing was changed.")]
    RollbackRefused { run: String, why: String },
    #[error(
        "rollback {rollback} of run {run} stopped at its {stage} stage: {why}\nFix the cause and run `canup rollback {run}` again: it resumes at that stage."
    )]
    RollbackFailed { rollback: String, run: String, stage: String, why: String },
    #[error("rollback {rollback} of run {run} is unfinished; run `canup rollback {run}` to finish it before anything else")]
    RollbackPending { run: String, rollback: String },
    #[error("rollback {rollback} ran every stage, but Canopsis is not at {expected}: {found}. Check `canup status`; the backup set is kept.")]
    RollbackUnverified { rollback: String, expected: Version, found: String },
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
            UpgradeError::Declined => ExitCode::Declined,
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

#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    pub to: Option<Version>,
    pub dry_run: bool,
    pub restart: bool,
    /// A skipped check fails the run (`--strict-checks`).
    pub strict_checks: bool,
}

#[derive(Debug)]
pub struct ApplySummary {
    pub run: String,
    pub plan: Plan,
    pub reports: Vec<StepReport>,
    /// Steps a resumed run did not repeat.
    pub already_done: Vec<String>,
    /// In a dry run: the commands and file changes the real run would make.
    pub recorded: Vec<String>,
    /// What detection found after the steps ran (the target, or the run failed); `None` when
    /// nothing ran for real (a dry run, nothing to do).
    pub verified: Option<Detected>,
}

/// Shows the plan (with the steps a resumed run already did, and the backup phase's lines)
/// and asks the operator to confirm it; `true` to go on.
pub type Confirm<'a> = &'a dyn Fn(&Plan, &[String], &[String]) -> bool;

/// `canup apply`.
pub async fn apply(session: &Session, options: &ApplyOptions, progress: Arc<dyn Progress>, confirm: Confirm<'_>) -> Result<ApplySummary, UpgradeError> {
    let _lock = if options.dry_run { None } else { Some(ApplyLock::acquire(&session.state_dir)?) };
    let events = Journal::read(&session.state_dir)?;
    if let Some((run, pending)) = journal::pending_rollback(&events) {
        return Err(UpgradeError::RollbackPending { run, rollback: pending.rollback });
    }
    let pending = if options.dry_run { None } else { journal::unfinished(&events) };
    let journal = if options.dry_run { None } else { Some(Arc::new(Mutex::new(Journal::open(&session.state_dir)?))) };
    let append = |event: Event| -> Result<(), UpgradeError> {
        match &journal {
            Some(j) => Ok(j.lock().map_err(|_| UpgradeError::JournalPoisoned)?.append(&event)?),
            None => Ok(()),
        }
    };
    let ui: Arc<dyn Ui> = progress.clone();

    let recorded = DryRun::default();
    let mut prefetch = Prefetch::new(session);
    // A named target's own steps are in any plan that reaches it: their modules load while
    // detection runs. Only those of the method the host likely uses: compiling the other
    // method's modules (Compose's resync is the largest) would only cost memory and time.
    if let Some(release) = options.to.as_ref().and_then(|t| session.index.release(t)) {
        let method = likely_method(session);
        release.steps.iter().filter(|s| s.manifest.methods.contains(&method)).for_each(|s| prefetch.want(s, release));
    }
    let mut resumed = None;
    let (run, plan, done) = match pending {
        Some(run) if options.restart => {
            append(Event::RunFinished {
                run: run.run.clone(),
                time: journal::now(),
                outcome: Outcome::Failed,
                message: Some("abandoned by the operator (apply --restart)".into()),
            })?;
            fresh_plan(session, options, ui.clone(), &recorded).await?
        }
        Some(run) => {
            if options.to.as_ref().is_some_and(|t| t != &run.target) {
                return Err(UpgradeError::Pending { run: run.run, target: run.target });
            }
            let plan = replay(session, &run)?;
            let done: Vec<String> = run.done().into_iter().map(str::to_owned).collect();
            let id = run.run.clone();
            resumed = Some(run);
            (id, plan, done)
        }
        None => fresh_plan(session, options, ui.clone(), &recorded).await?,
    };
    let fresh = done.is_empty() && !events.iter().any(|e| matches!(e, Event::RunStarted { run: r, .. } if r == &run));
    let remaining: Vec<&PlannedStep> = plan.steps.iter().filter(|p| !done.contains(&p.key)).collect();
    if plan.steps.is_empty() && plan.installed == plan.target {
        // Already at the target: nothing to confirm, nothing to journal.
        return Ok(ApplySummary { run, plan, reports: Vec::new(), already_done: done, recorded: Vec::new(), verified: None });
    }
    // The rest of the fetching and compiling starts now, while the operator reads the plan.
    tracing::debug!(steps = remaining.len(), "plan ready; fetching and compiling its modules");
    for p in &remaining {
        if let Some(release) = session.index.release(&p.release) {
            prefetch.want(&p.step, release);
        }
    }
    // What the backup phase takes, and whether it fits, before the operator is asked.
    let backup_plan = backups::plan(session, &plan, Some(&run)).await?;
    let backup_lines = backup_plan.describe();
    // The plan is always shown; `confirm` asks unless the operator said --yes.
    let confirmed = match tokio::runtime::Handle::current().runtime_flavor() {
        // Reading the answer blocks this worker; let the other workers take over the fetches.
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| confirm(&plan, &done, &backup_lines)),
        _ => confirm(&plan, &done, &backup_lines),
    };
    if !confirmed {
        return Err(UpgradeError::Declined);
    }
    // Every module is verified and compiled before anything runs.
    let (loaded, data) = prefetch.finish(&session.index, &remaining).await?;
    tracing::debug!(modules = loaded.len(), "every module verified and compiled");
    // What the steps will call answers, before the first of them changes anything.
    let problems = endpoints::check(&remaining, &session.config.endpoints, &session.policy, &session.config.limits.resolve(), ui.as_ref()).await;
    if !problems.is_empty() {
        return Err(UpgradeError::Endpoints(problems));
    }
    if fresh {
        append(Event::RunStarted {
            run: run.clone(),
            time: journal::now(),
            installed: plan.installed.clone(),
            target: plan.target.clone(),
            edition: plan.edition,
            method: plan.method,
            steps: plan
                .steps
                .iter()
                .map(|p| PlannedRef { id: p.step.manifest.id.clone(), release: p.release.clone(), phase: p.phase, module_sha256: p.step.sha256.clone() })
                .collect(),
        })?;
    }
    if !options.dry_run {
        // Before the first change; a resumed run whose set is complete takes nothing again.
        backups::take(session, &backup_plan, &plan, &run, ui.as_ref()).await?;
    }
    let detected = Detected { installed: plan.installed.clone(), edition: plan.edition, method: plan.method };
    let mut reports = Vec::new();
    let total = plan.steps.len();
    for (i, p) in plan.steps.iter().enumerate() {
        let id = &p.key;
        if done.contains(id) {
            continue;
        }
        tracing::debug!(step = %id, "step starting");
        progress.step_started(i + 1, total, p);
        append(Event::StepStarted { run: run.clone(), step: id.clone(), time: journal::now() })?;
        let actions = journal.as_ref().map(|j| StepActions::new(j.clone(), &run, id, resumed.as_ref().map(|r| r.actions_of(id)).unwrap_or_default()));
        let module = loaded.get(&p.step.sha256).ok_or_else(|| UpgradeError::NotLoaded(id.to_string()))?;
        let release_data = data.get(&p.release).cloned().unwrap_or_default();
        let report = session
            .run_step(
                &run,
                module,
                &p.step,
                &p.release,
                release_data,
                actions,
                p.phase,
                &plan.installed,
                &plan.target,
                Some(&detected),
                ui.clone(),
                options.dry_run,
                &recorded,
            )
            .await?;
        progress.step_finished(&report);
        // A check that did not run is not an ok; under --strict-checks it is a failure.
        let strict = options.strict_checks && !options.dry_run;
        let failure = match (&report.result, &report.skipped) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(()), Some(why)) if strict => Some(format!("skipped ({why}), and --strict-checks makes a skipped check fail the run")),
            _ => None,
        };
        let (outcome, message) = match (&failure, &report.skipped) {
            (Some(why), _) => (Outcome::Failed, Some(why.clone())),
            (None, Some(why)) => (Outcome::Skipped, Some(why.clone())),
            (None, None) => (Outcome::Succeeded, None),
        };
        append(Event::StepFinished {
            run: run.clone(),
            step: id.clone(),
            time: journal::now(),
            outcome,
            message,
            duration_ms: report.duration.as_millis() as u64,
            module_sha256: report.module_sha256.clone(),
        })?;
        if let Some(why) = failure {
            return Err(UpgradeError::StepFailed { run, step: id.clone(), why });
        }
        reports.push(report);
    }
    if options.dry_run {
        // The real run ends with detection again (below): its queries are part of what it
        // does, so the dry run runs and lists them too; their answer means nothing here.
        if let Err(e) = session.detect_recording(ui, Some(&recorded)).await {
            tracing::warn!("the dry run's closing detection failed: {e}");
        }
        let recorded = recorded.lines();
        return Ok(ApplySummary { run, plan, reports, already_done: done, recorded, verified: None });
    }
    let recorded = Vec::new();
    // The steps said they succeeded; what is installed says whether the upgrade happened.
    ui.log("canup", crate::ui::Level::Info, "every step succeeded; detecting what is installed now:");
    let verdict = verify(session, &plan, ui).await;
    let (outcome, message) = match &verdict {
        Ok(found) => {
            (Outcome::Succeeded, format!("detection after the run found Canopsis {} ({} edition, {} method)", found.installed, found.edition, found.method))
        }
        Err(found) => (Outcome::Unverified, format!("expected Canopsis {}, detection after the run {found}", plan.target)),
    };
    append(Event::RunFinished { run: run.clone(), time: journal::now(), outcome, message: Some(message) })?;
    Journal::clear_receipts(&session.state_dir);
    match verdict {
        Ok(found) => Ok(ApplySummary { run, plan, reports, already_done: done, recorded, verified: Some(found) }),
        Err(found) => Err(UpgradeError::Unverified { run, expected: plan.target.clone(), found }),
    }
}

/// Detects the installation again after the last step: the target version, in the plan's
/// edition and method, or what was found instead (as the end of a sentence).
async fn verify(session: &Session, plan: &Plan, ui: Arc<dyn Ui>) -> Result<Detected, String> {
    let heard = Arc::new(Warnings { inner: ui, heard: Mutex::default() });
    let verdict = match session.detect(heard.clone()).await {
        Ok(found) if found.installed == plan.target && found.edition == plan.edition && found.method == plan.method => return Ok(found),
        Ok(found) => format!("found Canopsis {} ({} edition, {} method)", found.installed, found.edition, found.method),
        Err(e) => format!("could not tell what is installed: {e}"),
    };
    // What detection warned of says why (`canopsis-webui is at 4.5.4`): it goes with the verdict
    // into the message, the journal and --json, not only past the operator's eyes.
    let warnings = heard.heard.lock().map(|w| w.clone()).unwrap_or_default();
    Err(if warnings.is_empty() { verdict } else { format!("{verdict}: {}", warnings.join("; ")) })
}

/// A terminal that also keeps the warnings it shows: what the closing detection warned of.
struct Warnings {
    inner: Arc<dyn Ui>,
    heard: Mutex<Vec<String>>,
}

impl Ui for Warnings {
    fn log(&self, step: &str, level: crate::ui::Level, message: &str) {
        if level >= crate::ui::Level::Warn
            && let Ok(mut heard) = self.heard.lock()
        {
            heard.push(message.to_owned());
        }
        self.inner.log(step, level, message);
    }
    fn progress(&self, step: &str, done: u64, total: Option<u64>, message: &str) {
        self.inner.progress(step, done, total, message);
    }
    fn confirm(&self, step: &str, question: &str) -> bool {
        self.inner.confirm(step, question)
    }
    fn manual(&self, step: &str, instruction: &str) -> bool {
        self.inner.manual(step, instruction)
    }
    fn choose(&self, step: &str, question: &str, options: &[String], default: usize) -> Option<usize> {
        self.inner.choose(step, question, options, default)
    }
}

async fn fresh_plan(session: &Session, options: &ApplyOptions, ui: Arc<dyn Ui>, recorded: &DryRun) -> Result<(String, Plan, Vec<String>), UpgradeError> {
    let detected = session.detect_recording(ui, options.dry_run.then_some(recorded)).await?;
    let plan = session.plan(&detected, options.to.as_ref())?;
    Ok((run_id(), plan, Vec::new()))
}

/// The plan of an interrupted run, rebuilt from the journal and the current index. A step
/// whose module changed since is refused: a run never mixes two versions of a release.
fn replay(session: &Session, run: &journal::RunRecord) -> Result<Plan, UpgradeError> {
    let mut steps = Vec::new();
    for r in &run.planned {
        let step = session.index.release(&r.release).and_then(|rel| rel.steps.iter().find(|s| s.manifest.id == r.id)).ok_or_else(|| UpgradeError::Changed {
            run: run.run.clone(),
            step: r.id.clone(),
            was: r.module_sha256.clone(),
            now: "missing".into(),
        })?;
        if step.sha256 != r.module_sha256 {
            return Err(UpgradeError::Changed { run: run.run.clone(), step: r.id.clone(), was: r.module_sha256.clone(), now: step.sha256.clone() });
        }
        steps.push(PlannedStep { release: r.release.clone(), phase: r.phase, step: step.clone(), key: String::new() });
    }
    plan::assign_keys(&mut steps);
    let releases = {
        let mut v: Vec<Version> = run.planned.iter().map(|r| r.release.clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    let plan =
        Plan { installed: run.installed.clone(), target: run.target.clone(), edition: run.edition, method: run.method, releases, skipped: Vec::new(), steps };
    plan::admit(&plan, &session.config.policy).map_err(UpgradeError::Admission)?;
    Ok(plan)
}

/// `canup restore-files RUN`: puts back every file a run changed, from its backups.
pub fn restore_files(state_dir: &std::path::Path, sysroot: &Sysroot, run: &str) -> Result<Vec<String>, UpgradeError> {
    crate::restore::restore(state_dir, sysroot, run).map_err(|e| match e {
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
