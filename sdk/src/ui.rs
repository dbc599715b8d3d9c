//! Talk to the operator.

use crate::bindings::canup::step::ui as wit;
pub use crate::bindings::canup::step::ui::Level;

pub fn log(level: Level, message: &str) {
    wit::log(level, message);
}
pub fn debug(message: &str) {
    wit::log(Level::Debug, message);
}
pub fn info(message: &str) {
    wit::log(Level::Info, message);
}
pub fn warn(message: &str) {
    wit::log(Level::Warn, message);
}
pub fn error(message: &str) {
    wit::log(Level::Error, message);
}
/// Progress of a long action (`total` unknown: `None`).
pub fn progress(done: u64, total: Option<u64>, message: &str) {
    wit::progress(done, total, message);
}
/// A yes/no question to the operator about the step's own work; an unattended run
/// (`--yes`) answers yes. For an action the release note calls optional, use [`choose`].
pub fn confirm(question: &str) -> bool {
    wit::confirm(question)
}
/// An action the operator must do by hand; `true` once they say it is done. A step should
/// fail when it returns `false`, so the upgrade stops in a resumable state.
pub fn manual(instruction: &str) -> bool {
    wit::manual(instruction)
}
/// Asks the operator to choose among `options` (an optional action: "no" first, say) and
/// returns the chosen index. `question_id` names the question for `[answers]` in canup.toml,
/// where an operator answers it in advance; an unattended run without an answer gets
/// `default`, never "yes" by itself. Needs a 1.1 canup.
pub fn choose(question_id: &str, question: &str, options: &[&str], default: u32) -> crate::Result<u32> {
    let options: Vec<String> = options.iter().map(|o| (*o).to_owned()).collect();
    wit::choose(question_id, question, &options, default).map_err(|e| crate::Error::from(e).context(format!("asking {question_id}")))
}
/// Says the step did not do its work, and why (a check whose endpoint is not configured):
/// the run shows the step as skipped, not ok, and `--strict-checks` fails it. Return `Ok(())`
/// after it. Needs a 1.2 canup.
pub fn skip(reason: &str) {
    wit::skip(reason);
}
