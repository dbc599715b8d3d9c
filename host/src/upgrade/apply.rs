//! `canup apply`, in the stages an upgrade goes through (the plan's phases around the steps):
//! 1. [`begin`]: the lock, an unfinished rollback refused, the run to resume or a new plan
//!    (detection), while the modules the plan likely needs load in the background;
//! 2. the backup phase planned ([`super::backups::plan`]) and the plan confirmed;
//! 3. [`admit`]: every module verified and compiled, the endpoints checked, the run journaled,
//!    the backup set taken: nothing changed before this point;
//! 4. [`run_steps`]: the steps in order, each journaled;
//! 5. [`finish`]: detection again, and the run's outcome.

use std::sync::{Arc, Mutex};

use semver::Version;

use super::prefetch::{Loaded, Prefetch};
use super::{Progress, Session, UpgradeError, backups, endpoints, likely_method, run_id};
use crate::journal::{self, ApplyLock, Event, Journal, Outcome, PlannedRef, StepActions};
use crate::plan::{self, Plan, PlannedStep};
use crate::sandbox::{Detected, DryRun, StepReport};
use crate::ui::Ui;

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

/// The journal of a real run (none in a dry run), appended one event at a time.
struct RunJournal(Option<Arc<Mutex<Journal>>>);

impl RunJournal {
    fn append(&self, event: Event) -> Result<(), UpgradeError> {
        match &self.0 {
            Some(j) => Ok(j.lock().map_err(|_| UpgradeError::JournalPoisoned)?.append(&event)?),
            None => Ok(()),
        }
    }
}

/// What the first stage settles: the run, its plan, and what an earlier attempt did.
struct Begun {
    run: String,
    plan: Plan,
    done: Vec<String>,
    resumed: Option<journal::RunRecord>,
    /// No earlier attempt journaled this run: it starts now.
    fresh: bool,
}

/// `canup apply`.
pub async fn apply(session: &Session, options: &ApplyOptions, progress: Arc<dyn Progress>, confirm: Confirm<'_>) -> Result<ApplySummary, UpgradeError> {
    let _lock = if options.dry_run { None } else { Some(ApplyLock::acquire(&session.state_dir)?) };
    let journal = RunJournal(if options.dry_run { None } else { Some(Arc::new(Mutex::new(Journal::open(&session.state_dir)?))) });
    let ui: Arc<dyn Ui> = progress.clone();
    let recorded = DryRun::default();
    let mut prefetch = Prefetch::new(session);
    let Begun { run, plan, done, resumed, fresh } = begin(session, options, &journal, &mut prefetch, ui.clone(), &recorded).await?;
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
    let loaded = admit(session, options, &journal, prefetch, &run, &plan, &remaining, fresh, ui.as_ref()).await?;
    if options.dry_run {
        backups::listing(&backup_plan, &run).into_iter().for_each(|l| recorded.record(l));
    } else {
        // Before the first change; a resumed run whose set is complete takes nothing again.
        backups::take(session, &backup_plan, &plan, &run, ui.as_ref()).await?;
    }
    let steps = Steps { session, options, journal: &journal, progress: progress.as_ref(), ui: ui.clone(), recorded: &recorded };
    let reports = steps.run(&run, &plan, &done, resumed.as_ref(), &loaded).await?;
    finish(session, options, &journal, ui, &recorded, run, plan, reports, done).await
}

/// Stage 1: the run to resume (or abandon, with `--restart`), else a new plan from detection.
/// A named target's own steps start loading before detection: they are in any plan that
/// reaches it.
async fn begin(
    session: &Session,
    options: &ApplyOptions,
    journal: &RunJournal,
    prefetch: &mut Prefetch,
    ui: Arc<dyn Ui>,
    recorded: &DryRun,
) -> Result<Begun, UpgradeError> {
    let events = Journal::read(&session.state_dir)?;
    if let Some((run, pending)) = journal::pending_rollback(&events) {
        return Err(UpgradeError::RollbackPending { run, rollback: pending.rollback });
    }
    let pending = if options.dry_run { None } else { journal::unfinished(&events) };
    // Only the modules of the method the host likely uses: compiling the other method's
    // (Compose's resync is the largest) would only cost memory and time.
    if let Some(release) = options.to.as_ref().and_then(|t| session.index.release(t)) {
        let method = likely_method(session);
        release.steps.iter().filter(|s| s.manifest.methods.contains(&method)).for_each(|s| prefetch.want(s, release));
    }
    let (run, plan, done, resumed) = match pending {
        Some(run) if options.restart => {
            journal.append(Event::RunFinished {
                run: run.run.clone(),
                time: journal::now(),
                outcome: Outcome::Failed,
                message: Some("abandoned by the operator (apply --restart)".into()),
            })?;
            let (id, plan) = fresh_plan(session, options, ui, recorded).await?;
            (id, plan, Vec::new(), None)
        }
        Some(run) => {
            if options.to.as_ref().is_some_and(|t| t != &run.target) {
                return Err(UpgradeError::Pending { run: run.run, target: run.target });
            }
            let plan = replay(session, &run)?;
            let done: Vec<String> = run.done().into_iter().map(str::to_owned).collect();
            (run.run.clone(), plan, done, Some(run))
        }
        None => {
            let (id, plan) = fresh_plan(session, options, ui, recorded).await?;
            (id, plan, Vec::new(), None)
        }
    };
    let fresh = done.is_empty() && !events.iter().any(|e| matches!(e, Event::RunStarted { run: r, .. } if r == &run));
    Ok(Begun { run, plan, done, resumed, fresh })
}

/// Stage 3: every module verified and compiled, what the steps call answering, the run
/// journaled. Nothing has changed on the host when it returns.
#[allow(clippy::too_many_arguments)]
async fn admit(
    session: &Session,
    options: &ApplyOptions,
    journal: &RunJournal,
    prefetch: Prefetch,
    run: &str,
    plan: &Plan,
    remaining: &[&PlannedStep],
    fresh: bool,
    ui: &dyn Ui,
) -> Result<Loaded, UpgradeError> {
    let loaded = prefetch.finish(&session.index, remaining).await?;
    tracing::debug!(modules = loaded.0.len(), "every module verified and compiled");
    let problems = endpoints::check(remaining, &session.config.endpoints, &session.policy, &session.config.limits.resolve(), ui).await;
    if !problems.is_empty() {
        return Err(UpgradeError::Endpoints(problems));
    }
    if fresh && !options.dry_run {
        journal.append(Event::RunStarted {
            run: run.to_owned(),
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
    Ok(loaded)
}

/// Stage 4: what running the steps needs.
struct Steps<'a> {
    session: &'a Session,
    options: &'a ApplyOptions,
    journal: &'a RunJournal,
    progress: &'a dyn Progress,
    ui: Arc<dyn Ui>,
    recorded: &'a DryRun,
}

impl Steps<'_> {
    /// The steps not done yet, in order, each journaled as it starts and ends; the first that
    /// fails stops the run (resumable).
    async fn run(
        &self,
        run: &str,
        plan: &Plan,
        done: &[String],
        resumed: Option<&journal::RunRecord>,
        loaded: &Loaded,
    ) -> Result<Vec<StepReport>, UpgradeError> {
        let (modules, data) = loaded;
        let detected = Detected { installed: plan.installed.clone(), edition: plan.edition, method: plan.method };
        let mut reports = Vec::new();
        let total = plan.steps.len();
        for (i, p) in plan.steps.iter().enumerate() {
            let id = &p.key;
            if done.contains(id) {
                continue;
            }
            tracing::debug!(step = %id, "step starting");
            self.progress.step_started(i + 1, total, p);
            self.journal.append(Event::StepStarted { run: run.to_owned(), step: id.clone(), time: journal::now() })?;
            let actions = self.journal.0.as_ref().map(|j| StepActions::new(j.clone(), run, id, resumed.map(|r| r.actions_of(id)).unwrap_or_default()));
            let module = modules.get(&p.step.sha256).ok_or_else(|| UpgradeError::NotLoaded(id.to_string()))?;
            let release_data = data.get(&p.release).cloned().unwrap_or_default();
            let report = self
                .session
                .run_step(
                    run,
                    module,
                    &p.step,
                    &p.release,
                    release_data,
                    actions,
                    p.phase,
                    &plan.installed,
                    &plan.target,
                    Some(&detected),
                    self.ui.clone(),
                    self.options.dry_run,
                    self.recorded,
                )
                .await?;
            self.progress.step_finished(&report);
            // A check that did not run is not an ok; under --strict-checks it is a failure.
            let strict = self.options.strict_checks && !self.options.dry_run;
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
            self.journal.append(Event::StepFinished {
                run: run.to_owned(),
                step: id.clone(),
                time: journal::now(),
                outcome,
                message,
                duration_ms: report.duration.as_millis() as u64,
                module_sha256: report.module_sha256.clone(),
            })?;
            if let Some(why) = failure {
                return Err(UpgradeError::StepFailed { run: run.to_owned(), step: id.clone(), why });
            }
            reports.push(report);
        }
        Ok(reports)
    }
}

/// Stage 5: the steps said they succeeded; what is installed says whether the upgrade
/// happened. A dry run lists the closing detection's queries instead.
#[allow(clippy::too_many_arguments)]
async fn finish(
    session: &Session,
    options: &ApplyOptions,
    journal: &RunJournal,
    ui: Arc<dyn Ui>,
    recorded: &DryRun,
    run: String,
    plan: Plan,
    reports: Vec<StepReport>,
    done: Vec<String>,
) -> Result<ApplySummary, UpgradeError> {
    if options.dry_run {
        // The real run ends with detection again: its queries are part of what it does, so
        // the dry run runs and lists them too; their answer means nothing here.
        if let Err(e) = session.detect_recording(ui, Some(recorded)).await {
            tracing::warn!("the dry run's closing detection failed: {e}");
        }
        return Ok(ApplySummary { run, plan, reports, already_done: done, recorded: recorded.lines(), verified: None });
    }
    ui.log("canup", crate::ui::Level::Info, "every step succeeded; detecting what is installed now:");
    let verdict = verify(session, &plan, ui).await;
    let (outcome, message) = match &verdict {
        Ok(found) => {
            (Outcome::Succeeded, format!("detection after the run found Canopsis {} ({} edition, {} method)", found.installed, found.edition, found.method))
        }
        Err(found) => (Outcome::Unverified, format!("expected Canopsis {}, detection after the run {found}", plan.target)),
    };
    journal.append(Event::RunFinished { run: run.clone(), time: journal::now(), outcome, message: Some(message) })?;
    Journal::clear_receipts(&session.state_dir);
    match verdict {
        Ok(found) => Ok(ApplySummary { run, plan, reports, already_done: done, recorded: Vec::new(), verified: Some(found) }),
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

async fn fresh_plan(session: &Session, options: &ApplyOptions, ui: Arc<dyn Ui>, recorded: &DryRun) -> Result<(String, Plan), UpgradeError> {
    let detected = session.detect_recording(ui, options.dry_run.then_some(recorded)).await?;
    let plan = session.plan(&detected, options.to.as_ref())?;
    Ok((run_id(), plan))
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
