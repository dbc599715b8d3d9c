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
/// A yes/no question to the operator.
pub fn confirm(question: &str) -> bool {
    wit::confirm(question)
}
/// An action the operator must do by hand; `true` once they say it is done. A step should
/// fail when it returns `false`, so the upgrade stops in a resumable state.
pub fn manual(instruction: &str) -> bool {
    wit::manual(instruction)
}
