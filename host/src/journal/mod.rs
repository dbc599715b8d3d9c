//! The journal: what each run planned and how each step ended, kept crash-safe so that a
//! re-run resumes where the last one stopped and never repeats a finished step.
//!
//! Why an append-only JSON-lines file with an fsync per record rather than an embedded
//! database: the journal is tiny (a few records per step), written a handful of times per
//! run, and read whole; an append of one line followed by `fsync` is atomic enough (a crash
//! can only leave a torn *last* line, which is detected and ignored, so the step it described
//! counts as not finished and runs again), the file stays readable with `cat` by an operator
//! in the middle of an incident, and no dependency or file format has to be trusted beyond
//! serde_json.
//!
//! A lock (`flock` on `STATE/lock`) lets only one apply run at a time. The kernel releases it
//! when its holder dies, so a lock left by a killed canup is taken over safely.

use std::fs;
use std::io::{self, BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::manifest::{Edition, Method, Phase};

mod actions;
mod lock;

pub use actions::{ActionRecorder, StepActions};
pub use lock::ApplyLock;

/// One planned step as recorded when the run starts: a resumed run replays exactly this.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlannedRef {
    pub id: String,
    pub release: Version,
    pub phase: Phase,
    pub module_sha256: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Every step succeeded and detection after the run found the target installed.
    Succeeded,
    /// A step failed; on a run, the operator abandoned it (`apply --restart`).
    Failed,
    /// Every step succeeded but detection after the run did not find the target installed:
    /// the run is over (re-running plans again from what is installed), and not a success.
    Unverified,
    /// Of a step: it ran to its end without doing its work, and said why (`ui.skip`: a check
    /// whose endpoint is not configured). Done for a resumed run, and never shown as ok.
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    RunStarted {
        run: String,
        time: String,
        installed: Version,
        target: Version,
        edition: Edition,
        method: Method,
        steps: Vec<PlannedRef>,
    },
    StepStarted {
        run: String,
        step: String,
        time: String,
    },
    StepFinished {
        run: String,
        step: String,
        time: String,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        duration_ms: u64,
        module_sha256: String,
    },
    RunFinished {
        run: String,
        time: String,
        outcome: Outcome,
        /// What the operator is told about the outcome (what detection found, for one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A changing file operation is about to happen; `expect` is the sha256 of the file it
    /// leaves. A crash before the matching `ActionDone` is resolved by looking at the file.
    ActionStarted {
        run: String,
        step: String,
        action: String,
        occurrence: u32,
        expect: String,
    },
    /// A changing action of a step (a command, a mutating HTTP request, an append) finished:
    /// a resumed attempt of the step gets this result instead of acting again.
    ActionDone {
        run: String,
        step: String,
        action: String,
        occurrence: u32,
        result: ActionResult,
    },
    /// `canup rollback` started to bring the host back to what run `run` found (`to`).
    RollbackStarted {
        rollback: String,
        run: String,
        time: String,
        to: Version,
    },
    /// One stage of a rollback is done (packages, files, databases): a resumed rollback
    /// does not do it again.
    RollbackStage {
        rollback: String,
        stage: String,
        time: String,
        message: String,
    },
    RollbackFinished {
        rollback: String,
        time: String,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
}

impl Event {
    /// The run the event belongs to (a rollback's events: none, see [`RollbackRecord`]).
    fn run(&self) -> Option<&str> {
        match self {
            Event::RunStarted { run, .. }
            | Event::StepStarted { run, .. }
            | Event::StepFinished { run, .. }
            | Event::RunFinished { run, .. }
            | Event::ActionStarted { run, .. }
            | Event::ActionDone { run, .. }
            | Event::RollbackStarted { run, .. } => Some(run),
            Event::RollbackStage { .. } | Event::RollbackFinished { .. } => None,
        }
    }

    /// When it happened, for the events that say.
    fn time(&self) -> Option<&str> {
        match self {
            Event::RunStarted { time, .. }
            | Event::StepStarted { time, .. }
            | Event::StepFinished { time, .. }
            | Event::RunFinished { time, .. }
            | Event::RollbackStarted { time, .. }
            | Event::RollbackStage { time, .. }
            | Event::RollbackFinished { time, .. } => Some(time),
            Event::ActionStarted { .. } | Event::ActionDone { .. } => None,
        }
    }
}

/// When run `run` last did something: the time of its last event before its rollback (if
/// one started), and when that rollback started. What changed between the two was neither the
/// run's doing nor the rollback's.
pub fn run_window(events: &[Event], run: &str) -> (Option<String>, Option<String>) {
    let rollback = events.iter().position(|e| matches!(e, Event::RollbackStarted { run: r, .. } if r == run));
    let before = &events[..rollback.unwrap_or(events.len())];
    let last = before.iter().filter(|e| e.run() == Some(run)).filter_map(Event::time).next_back().map(str::to_owned);
    (last, rollback.and_then(|i| events[i].time()).map(str::to_owned))
}

/// What a step saw of one of its actions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ActionResult {
    /// Exit status of a command, HTTP status of a request; none when killed by a signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
}

/// An action of an earlier attempt of a step, as the journal knows it.
#[derive(Debug, Clone, PartialEq)]
pub enum PastAction {
    Started { expect: String },
    Done(ActionResult),
}

#[derive(Debug, Error)]
pub enum JournalError {
    #[error("journal {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("another canup (pid {pid}) is applying an upgrade with state directory {state}; wait for it to finish")]
    Locked { pid: String, state: String },
}

pub struct Journal {
    path: PathBuf,
    file: fs::File,
}

pub fn now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Journal {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("journal.jsonl")
    }

    /// Where changing commands leave their receipts until the journal holds their outcome.
    pub fn receipts_dir(state_dir: &Path) -> PathBuf {
        state_dir.join("receipts")
    }

    /// Drops the receipts a finished run may have left (a crash between a journal record and
    /// its receipt's removal); they only serve to resume that run.
    pub fn clear_receipts(state_dir: &Path) {
        let _ = fs::remove_dir_all(Self::receipts_dir(state_dir));
    }

    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let path = Self::path(state_dir);
        let err = |source| JournalError::Io { path: path.display().to_string(), source };
        fs::create_dir_all(state_dir).map_err(err)?;
        let file = fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path).map_err(err)?;
        Ok(Self { path, file })
    }

    /// Appends one record and, except for a step's start, waits until it is on disk.
    ///
    /// A start that a crash loses changes nothing on resume: a started step that did not
    /// finish is run again, exactly like one that never started. Skipping its fsync saves one
    /// disk flush per step of the service interruption; the step's finish, which resuming
    /// relies on, flushes it along with itself.
    pub fn append(&mut self, event: &Event) -> Result<(), JournalError> {
        let err = |source| JournalError::Io { path: self.path.display().to_string(), source };
        let mut line = serde_json::to_vec(event).map_err(|e| err(io::Error::other(e)))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(err)?;
        if matches!(event, Event::StepStarted { .. }) {
            return Ok(());
        }
        self.file.sync_data().map_err(err)
    }

    /// Every complete record, in order. A torn last line (crash during an append) is ignored.
    pub fn read(state_dir: &Path) -> Result<Vec<Event>, JournalError> {
        let path = Self::path(state_dir);
        let file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(JournalError::Io { path: path.display().to_string(), source }),
        };
        let mut events = Vec::new();
        for line in io::BufReader::new(file).lines() {
            let line = line.map_err(|source| JournalError::Io { path: path.display().to_string(), source })?;
            match serde_json::from_str(&line) {
                Ok(e) => events.push(e),
                Err(e) => tracing::warn!("ignoring an unreadable journal record ({e}): {line:?}"),
            }
        }
        Ok(events)
    }
}

/// A run as the journal tells it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RunRecord {
    pub run: String,
    pub started: String,
    pub installed: Version,
    pub target: Version,
    pub edition: Edition,
    pub method: Method,
    pub planned: Vec<PlannedRef>,
    pub steps: Vec<StepRecord>,
    pub outcome: Option<Outcome>,
    /// Why the run ended as it did, when it says (see [`Event::RunFinished`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// (step, action, occurrence) → what became of it, across every attempt of the run.
    #[serde(skip)]
    pub actions: std::collections::HashMap<(String, String, u32), PastAction>,
    /// The latest `canup rollback` of this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackRecord>,
}

/// A rollback as the journal tells it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RollbackRecord {
    pub rollback: String,
    pub started: String,
    /// The version the run found, which the rollback brings back.
    pub to: Version,
    /// The stages done, with what each did.
    pub stages: Vec<(String, String)>,
    /// `None` while it is unfinished (resumable).
    pub outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StepRecord {
    pub step: String,
    pub outcome: Option<Outcome>,
    pub message: Option<String>,
    pub duration_ms: u64,
    pub module_sha256: String,
}

impl RunRecord {
    /// The actions earlier attempts of `step` took: (action, occurrence) → what became of it.
    pub fn actions_of(&self, step: &str) -> std::collections::HashMap<(String, u32), PastAction> {
        self.actions.iter().filter(|((s, _, _), _)| s == step).map(|((_, a, n), p)| ((a.clone(), *n), p.clone())).collect()
    }

    /// Steps that finished successfully: a resumed run skips them.
    pub fn done(&self) -> Vec<&str> {
        self.steps.iter().filter(|s| matches!(s.outcome, Some(Outcome::Succeeded | Outcome::Skipped))).map(|s| s.step.as_str()).collect()
    }
}

/// Folds the records into runs, oldest first. A step started again after a failure or a
/// crash keeps only its latest attempt.
pub fn runs(events: &[Event]) -> Vec<RunRecord> {
    let mut runs: Vec<RunRecord> = Vec::new();
    for e in events {
        match e {
            Event::RunStarted { run, time, installed, target, edition, method, steps } => runs.push(RunRecord {
                run: run.clone(),
                started: time.clone(),
                installed: installed.clone(),
                target: target.clone(),
                edition: *edition,
                method: *method,
                planned: steps.clone(),
                steps: Vec::new(),
                outcome: None,
                message: None,
                actions: Default::default(),
                rollback: None,
            }),
            Event::StepStarted { run, step, .. } => {
                if let Some(r) = runs.iter_mut().rev().find(|r| &r.run == run) {
                    r.outcome = None;
                    r.steps.retain(|s| &s.step != step);
                    let sha = r.planned.iter().find(|p| &p.id == step).map(|p| p.module_sha256.clone()).unwrap_or_default();
                    r.steps.push(StepRecord { step: step.clone(), outcome: None, message: None, duration_ms: 0, module_sha256: sha });
                }
            }
            Event::StepFinished { run, step, outcome, message, duration_ms, module_sha256, .. } => {
                if let Some(s) = runs.iter_mut().rev().find(|r| &r.run == run).and_then(|r| r.steps.iter_mut().rev().find(|s| &s.step == step)) {
                    s.outcome = Some(*outcome);
                    s.message = message.clone();
                    s.duration_ms = *duration_ms;
                    s.module_sha256 = module_sha256.clone();
                }
            }
            Event::RunFinished { run, outcome, message, .. } => {
                if let Some(r) = runs.iter_mut().rev().find(|r| &r.run == run) {
                    r.outcome = Some(*outcome);
                    r.message = message.clone();
                }
            }
            Event::ActionStarted { run, step, action, occurrence, expect } => {
                if let Some(r) = runs.iter_mut().rev().find(|r| &r.run == run) {
                    r.actions.insert((step.clone(), action.clone(), *occurrence), PastAction::Started { expect: expect.clone() });
                }
            }
            Event::ActionDone { run, step, action, occurrence, result } => {
                if let Some(r) = runs.iter_mut().rev().find(|r| &r.run == run) {
                    r.actions.insert((step.clone(), action.clone(), *occurrence), PastAction::Done(result.clone()));
                }
            }
            Event::RollbackStarted { rollback, run, time, to } => {
                if let Some(r) = runs.iter_mut().rev().find(|r| &r.run == run)
                    && r.rollback.as_ref().is_none_or(|b| &b.rollback != rollback)
                {
                    r.rollback = Some(RollbackRecord {
                        rollback: rollback.clone(),
                        started: time.clone(),
                        to: to.clone(),
                        stages: Vec::new(),
                        outcome: None,
                        message: None,
                    });
                }
            }
            Event::RollbackStage { rollback, stage, message, .. } => {
                if let Some(b) = runs.iter_mut().filter_map(|r| r.rollback.as_mut()).find(|b| &b.rollback == rollback) {
                    b.stages.push((stage.clone(), message.clone()));
                }
            }
            Event::RollbackFinished { rollback, outcome, message, .. } => {
                if let Some(b) = runs.iter_mut().filter_map(|r| r.rollback.as_mut()).find(|b| &b.rollback == rollback) {
                    b.outcome = Some(*outcome);
                    b.message = message.clone();
                }
            }
        }
    }
    runs
}

/// The run to resume: the newest one, when it did not finish. A finished run is never
/// resumed, whatever its outcome: an abandoned one was given up by the operator, and an
/// unverified one has nothing left to run (planning again from what is installed is what
/// makes sense after it).
pub fn unfinished(events: &[Event]) -> Option<RunRecord> {
    runs(events).into_iter().last().filter(|r| r.outcome.is_none())
}

/// A rollback that started and did not finish: nothing else may run until it does.
pub fn pending_rollback(events: &[Event]) -> Option<(String, RollbackRecord)> {
    runs(events).into_iter().find_map(|r| r.rollback.filter(|b| b.outcome.is_none()).map(|b| (r.run, b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollback_is_folded_under_its_run_and_bounds_the_runs_window() {
        let at = |t: &str| format!("2026-12-06T10:00:0{t}.000Z");
        let events = vec![
            started("r1"),
            Event::StepFinished {
                run: "r1".into(),
                step: "a".into(),
                time: at("1"),
                outcome: Outcome::Failed,
                message: None,
                duration_ms: 1,
                module_sha256: "x".into(),
            },
            Event::RollbackStarted { rollback: "b1".into(), run: "r1".into(), time: at("3"), to: Version::new(3, 38, 0) },
            Event::RunFinished { run: "r1".into(), time: at("4"), outcome: Outcome::Failed, message: Some("rolled back".into()) },
            Event::RollbackStage { rollback: "b1".into(), stage: "packages".into(), time: at("5"), message: "done".into() },
        ];
        assert_eq!(run_window(&events, "r1"), (Some(at("1")), Some(at("3"))), "the run's own last record, then the rollback's start");
        let (run, pending) = pending_rollback(&events).unwrap();
        assert_eq!((run.as_str(), pending.stages.len()), ("r1", 1));
        assert!(unfinished(&events).is_none(), "a run being rolled back is not resumed by apply");
        let mut done = events.clone();
        done.push(Event::RollbackFinished { rollback: "b1".into(), time: at("6"), outcome: Outcome::Succeeded, message: None });
        assert!(pending_rollback(&done).is_none());
        assert_eq!(runs(&done)[0].rollback.as_ref().and_then(|b| b.outcome), Some(Outcome::Succeeded));
    }

    fn started(run: &str) -> Event {
        Event::RunStarted {
            run: run.into(),
            time: now(),
            installed: Version::new(3, 38, 0),
            target: Version::new(3, 40, 0),
            edition: Edition::Cat,
            method: Method::Packages,
            steps: ["a", "b"]
                .iter()
                .map(|id| PlannedRef { id: id.to_string(), release: Version::new(3, 40, 0), phase: Phase::PostUpdate, module_sha256: "ff".into() })
                .collect(),
        }
    }

    fn finished(run: &str, step: &str, outcome: Outcome) -> Event {
        Event::StepFinished { run: run.into(), step: step.into(), time: now(), outcome, message: None, duration_ms: 3, module_sha256: "ff".into() }
    }

    #[test]
    fn a_resumed_step_gets_the_actions_of_its_earlier_attempts_by_occurrence() {
        let dir = tempfile::tempdir().unwrap();
        let journal = std::sync::Arc::new(std::sync::Mutex::new(Journal::open(dir.path()).unwrap()));
        journal.lock().unwrap().append(&started("r1")).unwrap();
        let mut first = StepActions::new(journal.clone(), "r1", "a", Default::default());
        let ok = ActionResult { status: Some(0), stdout: "done".into(), stderr: String::new() };
        // The step restarted the service twice, then crashed during an append.
        for _ in 0..2 {
            let (n, past) = first.next("exec canoctl restart");
            assert_eq!(past, None);
            first.done("exec canoctl restart", n, ok.clone()).unwrap();
        }
        let (n, _) = first.next("append /f");
        first.started("append /f", n, "sha-after".into()).unwrap();
        drop(first);

        let run = unfinished(&Journal::read(dir.path()).unwrap()).unwrap();
        assert!(run.actions_of("b").is_empty(), "another step's actions are its own");
        let mut second = StepActions::new(journal, "r1", "a", run.actions_of("a"));
        assert_eq!(second.next("exec canoctl restart"), (0, Some(PastAction::Done(ok.clone()))));
        assert_eq!(second.next("exec canoctl restart"), (1, Some(PastAction::Done(ok))));
        assert_eq!(second.next("exec canoctl restart"), (2, None), "a third restart was never done");
        assert_eq!(second.next("append /f"), (0, Some(PastAction::Started { expect: "sha-after".into() })));
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_the_step_counts_as_not_done() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&started("r1")).unwrap();
        j.append(&Event::StepStarted { run: "r1".into(), step: "a".into(), time: now() }).unwrap();
        j.append(&finished("r1", "a", Outcome::Succeeded)).unwrap();
        j.append(&Event::StepStarted { run: "r1".into(), step: "b".into(), time: now() }).unwrap();
        drop(j);
        let mut f = fs::OpenOptions::new().append(true).open(Journal::path(dir.path())).unwrap();
        f.write_all(b"{\"event\":\"step-finished\",\"run\":\"r1\",\"st").unwrap();
        let events = Journal::read(dir.path()).unwrap();
        let run = unfinished(&events).unwrap();
        assert_eq!(run.done(), ["a"]);
        assert_eq!(run.steps[1].outcome, None);
    }

    #[test]
    fn a_finished_run_is_not_resumed_and_a_retried_step_keeps_its_last_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        for e in [
            started("r1"),
            Event::StepStarted { run: "r1".into(), step: "a".into(), time: now() },
            finished("r1", "a", Outcome::Failed),
            Event::StepStarted { run: "r1".into(), step: "a".into(), time: now() },
            finished("r1", "a", Outcome::Succeeded),
            Event::RunFinished { run: "r1".into(), time: now(), outcome: Outcome::Succeeded, message: None },
        ] {
            j.append(&e).unwrap();
        }
        let events = Journal::read(dir.path()).unwrap();
        assert!(unfinished(&events).is_none());
        let all = runs(&events);
        assert_eq!(all[0].steps.len(), 1);
        assert_eq!(all[0].steps[0].outcome, Some(Outcome::Succeeded));
    }

    #[test]
    fn a_second_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = ApplyLock::acquire(dir.path()).unwrap();
        let e = ApplyLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(e.contains(&format!("another canup (pid {})", std::process::id())), "{e}");
        drop(first);
        ApplyLock::acquire(dir.path()).unwrap();
    }
}
