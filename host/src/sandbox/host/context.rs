//! `canup:step/context`: what the step may know of its run (versions, edition, method, phase,
//! dry run), the operator's settings and its release's signed data files. Read-only.

use super::super::bindings::{ErrorKind, WitError, wit, wit_error};
use super::super::call::StepState;

impl wit::context::Host for StepState {
    async fn get(&mut self) -> wit::context::Info {
        let c = &self.env.context;
        wit::context::Info {
            installed: c.installed.to_string(),
            target: c.target.to_string(),
            release: c.release.to_string(),
            edition: c.edition.map(|e| e.to_string()).unwrap_or_default(),
            method: c.method.map(|m| m.to_string()).unwrap_or_default(),
            phase: c.phase.to_string(),
            dry_run: c.dry_run,
            step_id: c.step_id.clone(),
        }
    }

    async fn setting(&mut self, name: String) -> Option<String> {
        self.env.settings.get(&name).cloned()
    }

    async fn data_files(&mut self) -> Vec<String> {
        self.env.data.keys().cloned().collect()
    }

    async fn data(&mut self, name: String) -> Result<Vec<u8>, WitError> {
        self.env.data.get(&name).cloned().ok_or_else(|| {
            let have = self.env.data.keys().cloned().collect::<Vec<_>>().join(", ");
            wit_error(
                ErrorKind::NotFound,
                format!("release {} ships no data file {name:?} (it has: {})", self.env.context.release, if have.is_empty() { "none" } else { &have }),
            )
        })
    }
}
