//! `canup:step/detect`: a detect step reports the installation; canup knows Canopsis only
//! through what such steps report, and this is where their version strings are read.

use std::time::Instant;

use serde_json::json;

use super::super::Detected;
use super::super::bindings::{ErrorKind, WitError, wit, wit_error};
use super::super::call::StepState;
use crate::manifest::{Edition, Method, Phase};

pub use crate::version::parse as parse_canopsis_version;

impl wit::detect::Host for StepState {
    async fn report(&mut self, installed: String, edition: String, method: String) -> Result<(), WitError> {
        let start = Instant::now();
        let result = (|| {
            if self.env.context.phase != Phase::Detect {
                return Err(wit_error(
                    ErrorKind::Denied,
                    format!("step {} runs in phase {}; only detect steps report the installation", self.env.context.step_id, self.env.context.phase),
                ));
            }
            let installed = parse_canopsis_version(&installed).ok_or_else(|| wit_error(ErrorKind::Invalid, format!("{installed:?} is not a version")))?;
            let edition: Edition = serde_json::from_value(serde_json::Value::String(edition.clone()))
                .map_err(|_| wit_error(ErrorKind::Invalid, format!("edition {edition:?} is neither core nor cat")))?;
            let method: Method = serde_json::from_value(serde_json::Value::String(method.clone()))
                .map_err(|_| wit_error(ErrorKind::Invalid, format!("method {method:?} is neither packages nor compose")))?;
            Ok(Detected { installed, edition, method })
        })();
        let args = json!({ "installed": installed, "edition": edition, "method": method });
        let outcome = result.map(|d| self.detected = Some(d));
        self.account(start, "detect.report", args, &outcome, |_| "recorded".into());
        outcome
    }
}
