//! A step's changing actions in the journal: what a resumed attempt replays instead of doing
//! again (see [`StepActions`]).

use std::io;
use std::path::{Path, PathBuf};

use super::{ActionResult, Event, Journal, JournalError, PastAction};

/// The changing actions of one attempt of one step, journaled as they finish, and those of
/// its earlier attempts in the same run. A step is an ordinary program: resumed after a crash,
/// it runs again from its start. Its actions are keyed by what they are (the command line,
/// its environment and input) and how many times the step did the same thing before, so the
/// second attempt gets the first one's results for what was already done instead of doing it
/// twice; only successful results are replayed, a failed action runs again.
pub struct StepActions {
    recorder: ActionRecorder,
    receipts: PathBuf,
    past: std::collections::HashMap<(String, u32), PastAction>,
    seen: std::collections::HashMap<String, u32>,
}

/// Where a step's action results go: a handle an operation can hold while the step's state is
/// borrowed for the call (a file append journals from inside its `fs` operation).
#[derive(Clone)]
pub struct ActionRecorder {
    journal: std::sync::Arc<std::sync::Mutex<Journal>>,
    run: String,
    step: String,
}

impl StepActions {
    pub fn new(journal: std::sync::Arc<std::sync::Mutex<Journal>>, run: &str, step: &str, past: std::collections::HashMap<(String, u32), PastAction>) -> Self {
        let receipts = {
            let j = journal.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Journal::receipts_dir(j.path.parent().unwrap_or(Path::new("/")))
        };
        Self { recorder: ActionRecorder { journal, run: run.to_owned(), step: step.to_owned() }, receipts, past, seen: Default::default() }
    }

    /// The receipt of a changing command: named by the run, the step, the action and its
    /// occurrence, so that a resumed canup finds what the interrupted one started.
    pub fn receipt(&self, action: &str, occurrence: u32) -> crate::capabilities::exec::Receipt {
        let identity = format!("{}\n{}\n{action}\n{occurrence}", self.recorder.run, self.recorder.step);
        crate::capabilities::exec::Receipt::new(&self.receipts, &crate::sha256_hex(identity.as_bytes())[..32])
    }

    /// The occurrence of `action` this call is, and what an earlier attempt made of it.
    pub fn next(&mut self, action: &str) -> (u32, Option<PastAction>) {
        let n = self.seen.entry(action.to_owned()).or_default();
        let occurrence = *n;
        *n += 1;
        (occurrence, self.past.get(&(action.to_owned(), occurrence)).cloned())
    }

    pub fn recorder(&self) -> ActionRecorder {
        self.recorder.clone()
    }

    pub fn started(&self, action: &str, occurrence: u32, expect: String) -> Result<(), JournalError> {
        self.recorder.started(action, occurrence, expect)
    }

    pub fn done(&self, action: &str, occurrence: u32, result: ActionResult) -> Result<(), JournalError> {
        self.recorder.done(action, occurrence, result)
    }
}

impl ActionRecorder {
    fn append(&self, event: &Event) -> Result<(), JournalError> {
        let mut j = self.journal.lock().map_err(|_| JournalError::Io { path: "journal".into(), source: io::Error::other("journal lock poisoned") })?;
        j.append(event)
    }

    pub fn started(&self, action: &str, occurrence: u32, expect: String) -> Result<(), JournalError> {
        self.append(&Event::ActionStarted { run: self.run.clone(), step: self.step.clone(), action: action.to_owned(), occurrence, expect })
    }

    pub fn done(&self, action: &str, occurrence: u32, result: ActionResult) -> Result<(), JournalError> {
        self.append(&Event::ActionDone { run: self.run.clone(), step: self.step.clone(), action: action.to_owned(), occurrence, result })
    }
}
