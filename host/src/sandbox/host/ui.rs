//! `canup:step/ui`: logs and progress for the operator, and the questions a step may ask
//! (audited, since an answer changes what the step does).

use std::time::Instant;

use serde_json::json;

use super::super::bindings::{WitError, wit};
use super::super::call::StepState;
use crate::ui::{Level, visible};

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
        self.env.ui.log(&self.env.context.step_id, level, &visible(&message));
    }

    async fn progress(&mut self, done: u64, total: Option<u64>, message: String) {
        self.env.ui.progress(&self.env.context.step_id, done, total, &visible(&message));
    }

    async fn confirm(&mut self, question: String) -> bool {
        let start = Instant::now();
        let ui = self.env.ui.clone();
        let step = self.env.context.step_id.clone();
        let q = visible(&question).into_owned();
        // The operator may take minutes to answer; keep the runtime free meanwhile.
        let answer = tokio::task::spawn_blocking(move || ui.confirm(&step, &q)).await.unwrap_or(false);
        self.account(start, "ui.confirm", json!({ "question": question }), &Ok::<_, WitError>(answer), |a| a.to_string());
        answer
    }

    async fn manual(&mut self, instruction: String) -> bool {
        let start = Instant::now();
        let ui = self.env.ui.clone();
        let step = self.env.context.step_id.clone();
        let text = visible(&instruction).into_owned();
        let done = tokio::task::spawn_blocking(move || ui.manual(&step, &text)).await.unwrap_or(false);
        self.account(
            start,
            "ui.manual",
            json!({ "instruction": instruction }),
            &Ok::<_, WitError>(done),
            |d| {
                if *d { "done".into() } else { "not done".into() }
            },
        );
        done
    }
}
