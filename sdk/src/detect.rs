//! For `detect` steps: report what is installed.

use crate::bindings::canup::step::detect as wit;
use crate::{Error, Result};

/// Reports the installed version (`3.38.0`), edition (`core`/`cat`) and method
/// (`packages`/`compose`). canup refuses it from any other phase.
pub fn report(installed: &str, edition: &str, method: &str) -> Result<()> {
    wit::report(installed, edition, method).map_err(|e| Error::from(e).context("reporting the installation"))
}
