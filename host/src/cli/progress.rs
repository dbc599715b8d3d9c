//! The apply screen, an implementation of the library's `upgrade::Progress` and `ui::Ui`
//! ports: it belongs to the command line, so that the library does not depend on a terminal.

use canup::plan::PlannedStep;
use canup::sandbox::StepReport;
use canup::ui::{ConsoleUi, Level, Ui};
use canup::upgrade::Progress;

/// The apply screen: one progress line per step with the step's log under it. On a
/// terminal, a spinner shows the running step; elsewhere (logs, CI, Ansible) plain lines go
/// to stderr.
pub struct ProgressUi {
    console: ConsoleUi,
    multi: indicatif::MultiProgress,
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl ProgressUi {
    pub fn new(console: ConsoleUi) -> Self {
        Self { console, multi: indicatif::MultiProgress::new(), bar: std::sync::Mutex::new(None) }
    }

    /// Progress goes to stderr, like the bars: stdout carries only results (the plan, the
    /// summary, JSON).
    pub fn line(&self, text: &str) {
        if self.multi.is_hidden() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }
}

impl Ui for ProgressUi {
    fn log(&self, _step: &str, level: Level, message: &str) {
        if level >= self.console.min_level.unwrap_or(Level::Info) {
            let mark = match level {
                Level::Warn => "warning: ",
                Level::Error => "error: ",
                _ => "",
            };
            for (i, l) in message.lines().enumerate() {
                self.line(&format!("      {}{l}", if i == 0 { mark } else { "" }));
            }
        }
    }

    fn progress(&self, _step: &str, done: u64, total: Option<u64>, message: &str) {
        let text = match total {
            Some(t) => format!("{done}/{t} {message}"),
            None => format!("{done} {message}"),
        };
        match self.bar.lock().ok().and_then(|b| b.clone()) {
            Some(bar) if !self.multi.is_hidden() => bar.set_message(text),
            _ => self.line(&format!("      … {text}")),
        }
    }

    fn confirm(&self, step: &str, question: &str) -> bool {
        self.multi.suspend(|| self.console.confirm(step, question))
    }

    fn manual(&self, step: &str, instruction: &str) -> bool {
        self.multi.suspend(|| self.console.manual(step, instruction))
    }

    fn choose(&self, step: &str, question: &str, options: &[String], default: usize) -> Option<usize> {
        self.multi.suspend(|| self.console.choose(step, question, options, default))
    }
}

impl Progress for ProgressUi {
    fn step_started(&self, n: usize, total: usize, planned: &PlannedStep) {
        let m = &planned.step.manifest;
        self.line(&format!("[{n}/{total}] {:<11} {} — {}", planned.phase.to_string(), m.id, m.description));
        let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar.set_message(m.id.clone());
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    fn step_finished(&self, report: &StepReport) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut b| b.take()) {
            bar.finish_and_clear();
        }
        for (name, c) in [("output", &report.stdout), ("errors", &report.stderr)] {
            let text = c.display();
            if !text.trim().is_empty() {
                self.line(&format!("      step {name}:"));
                for l in text.lines() {
                    self.line(&format!("        {l}"));
                }
            }
        }
        let ms = report.duration.as_secs_f64() * 1000.0;
        match (&report.result, &report.skipped) {
            (Ok(()), Some(why)) => self.line(&format!("      skipped ({ms:.0} ms): {why}")),
            (Ok(()), None) => self.line(&format!("      ok ({ms:.0} ms)")),
            (Err(e), _) => self.line(&format!("      FAILED ({ms:.0} ms): {e}")),
        }
    }
}
