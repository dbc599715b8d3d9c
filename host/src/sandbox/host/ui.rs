//! `canup:step/ui`: logs and progress for the operator, and the questions a step may ask
//! (audited, since an answer changes what the step does).

use std::time::Instant;

use serde_json::json;

use super::super::bindings::{ErrorKind, WitError, wit, wit_error};
use super::super::call::StepState;
use crate::ui::{Level, cut, visible};

/// The most of one message shown (a screen's worth); the rest is cut with a note.
pub(in crate::sandbox) const MESSAGE_BYTES: usize = 4096;

/// A question's options: a short list of a few words each, asked of a person.
const MAX_OPTIONS: usize = 64;
const OPTION_BYTES: usize = 200;

impl StepState {
    /// A step's text as the operator is shown it: control characters escaped, cut at
    /// [`MESSAGE_BYTES`], and counted against the step's `ui_text` budget. `None` once the
    /// budget is spent (after one line saying so): a step cannot flood the terminal or the
    /// logs of an unattended run.
    fn shown(&mut self, text: &str) -> Option<String> {
        let limit = self.env.limits.ui_text;
        if self.ui_used >= limit {
            return None;
        }
        let shown = visible(&cut(text, MESSAGE_BYTES)).into_owned();
        self.ui_used += text.len().min(MESSAGE_BYTES);
        if self.ui_used >= limit {
            let step = self.env.context.step_id.clone();
            self.env.ui.log(&step, Level::Warn, &format!("step {step} has shown {limit} bytes of text (ui_text_kib): its further messages are not shown"));
        }
        Some(shown)
    }
}

impl wit::ui::Host for StepState {
    async fn log(&mut self, level: wit::ui::Level, message: String) {
        use wit::ui::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        if let Some(text) = self.shown(&message) {
            self.env.ui.log(&self.env.context.step_id, level, &text);
        }
    }

    async fn progress(&mut self, done: u64, total: Option<u64>, message: String) {
        if let Some(text) = self.shown(&message) {
            self.env.ui.progress(&self.env.context.step_id, done, total, &text);
        }
    }

    async fn confirm(&mut self, question: String) -> bool {
        let start = Instant::now();
        let ui = self.env.ui.clone();
        let step = self.env.context.step_id.clone();
        // A question the step may no longer show is answered no: nobody saw it.
        let Some(q) = self.shown(&question) else { return false };
        // The operator may take minutes to answer; keep the runtime free meanwhile.
        let answer = tokio::task::spawn_blocking(move || ui.confirm(&step, &q)).await.unwrap_or(false);
        self.account(start, "ui.confirm", json!({ "question": cut(&question, MESSAGE_BYTES) }), &Ok::<_, WitError>(answer), |a| a.to_string());
        answer
    }

    async fn manual(&mut self, instruction: String) -> bool {
        let start = Instant::now();
        let ui = self.env.ui.clone();
        let step = self.env.context.step_id.clone();
        let Some(text) = self.shown(&instruction) else { return false };
        let done = tokio::task::spawn_blocking(move || ui.manual(&step, &text)).await.unwrap_or(false);
        self.account(start, "ui.manual", json!({ "instruction": cut(&instruction, MESSAGE_BYTES) }), &Ok::<_, WitError>(done), |d| {
            if *d { "done".into() } else { "not done".into() }
        });
        done
    }

    async fn choose(&mut self, question_id: String, question: String, options: Vec<String>, default: u32) -> Result<u32, WitError> {
        let start = Instant::now();
        let answer = self.answer(&question_id, &question, &options, default).await;
        let args = json!({ "question-id": cut(&question_id, OPTION_BYTES), "question": cut(&question, MESSAGE_BYTES), "options": options.iter().take(MAX_OPTIONS).map(|o| cut(o, OPTION_BYTES)).collect::<Vec<_>>(), "default": default });
        self.account(start, "ui.choose", args, &answer, |(i, source)| format!("{} ({source})", options.get(*i as usize).map_or("?", String::as_str)));
        answer.map(|(i, _)| i)
    }

    async fn skip(&mut self, reason: String) {
        let start = Instant::now();
        // The reason is the summary's and history's: bounded like any text the step shows.
        let reason = self.shown(&reason).unwrap_or_else(|| "(the step's reason was not shown: its text budget is spent)".into());
        self.env.ui.log(&self.env.context.step_id, Level::Warn, &format!("skipped: {reason}"));
        self.account(start, "ui.skip", json!({ "reason": reason }), &Ok::<_, WitError>(()), |()| "skipped".into());
        self.skipped = Some(reason);
    }
}

impl StepState {
    /// Who answers an optional question, in this order: the operator's `[answers]` in
    /// canup.toml, the operator at a terminal (not under `--yes`), the step's default.
    /// Returns the index and where it came from, for the audit.
    async fn answer(&mut self, question_id: &str, question: &str, options: &[String], default: u32) -> Result<(u32, &'static str), WitError> {
        let step = self.env.context.step_id.clone();
        let invalid = |why: String| wit_error(ErrorKind::Invalid, format!("question {question_id} of step {step}: {why}"));
        if options.is_empty() || options.len() > MAX_OPTIONS || default as usize >= options.len() {
            return Err(invalid(format!("{} options with default {default}: give 1 to {MAX_OPTIONS} options and a default among them", options.len())));
        }
        if let Some(long) = options.iter().find(|o| o.len() > OPTION_BYTES) {
            return Err(invalid(format!("an option of {} bytes, over {OPTION_BYTES}: an option is a few words", long.len())));
        }
        // The options are shown like any text of the step: within its budget.
        let size = question.len() + options.iter().map(String::len).sum::<usize>();
        if self.ui_used + size > self.env.limits.ui_text {
            return Err(invalid(format!("{size} bytes of question and options, over what is left of the step's text budget (ui_text_kib in canup.toml)")));
        }
        if let Some(given) = self.env.answers.get(&step).and_then(|a| a.get(question_id)) {
            return match options.iter().position(|o| o == given) {
                Some(i) => Ok((i as u32, "canup.toml [answers]")),
                None => Err(invalid(format!("canup.toml [answers.\"{step}\"] gives {given:?}, which is not one of: {}", options.join(", ")))),
            };
        }
        // A question the step may no longer show gets the default: nobody saw it.
        let Some(shown) = self.shown(question) else { return Ok((default, "the default: the question was not shown")) };
        let shown_options: Vec<String> = options.iter().map(|o| visible(o).into_owned()).collect();
        let ui = self.env.ui.clone();
        let asked = tokio::task::spawn_blocking(move || ui.choose(&step, &shown, &shown_options, default as usize)).await.ok().flatten();
        Ok(match asked {
            Some(i) if i < options.len() => (i as u32, "the operator"),
            _ => (default, "the default: nobody answered (--yes or no terminal)"),
        })
    }
}
