//! `canup:step/database`: a script on a database endpoint, checked against the step's
//! database rules, then run by the engine's client with the credentials only the host holds
//! (or, in a dry run, listed with the whole script). Every request is journaled like a
//! changing command: a resumed step is given the earlier result instead of running it again.

use std::time::{Duration, Instant};

use serde_json::json;

use super::super::bindings::{ErrorKind, WitError, wit, wit_error};
use super::super::call::{Done, StepState, exit_text};
use super::exec::Shown;
use crate::capabilities::database::{self, DatabaseError};
use crate::sha256_hex;

impl From<DatabaseError> for WitError {
    fn from(e: DatabaseError) -> Self {
        let kind = match &e {
            DatabaseError::Unknown(_) => ErrorKind::NotFound,
            DatabaseError::Refused { .. } => ErrorKind::Denied,
            DatabaseError::BadConfig { .. } | DatabaseError::Absent { .. } | DatabaseError::TempFile { .. } => ErrorKind::Failed,
        };
        wit_error(kind, e.to_string())
    }
}

/// The script as the dry run lists it: whole, each line indented under its endpoint.
fn listing(endpoint: &str, write: bool, script: &str) -> String {
    let verb = if write { "run" } else { "query" };
    let body: Vec<String> = script.trim_end().lines().map(|l| format!("    {l}")).collect();
    format!("{verb} on database {endpoint}:\n{}", body.join("\n"))
}

impl wit::database::Host for StepState {
    async fn run(&mut self, req: wit::database::Request) -> Result<wit::exec::Output, WitError> {
        let start = Instant::now();
        let digest = sha256_hex(req.script.as_bytes());
        let mut args = json!({ "endpoint": req.endpoint, "write": req.write, "script_sha256": digest, "script_bytes": req.script.len() });
        let result = match self.env.grant.check_database(&req.endpoint, req.write) {
            Err(d) => Err(d.into()),
            Ok(()) => self.database_allowed(req, &digest, &mut args).await,
        };
        self.conclude(start, "database", args, result, "ran before the interruption", |o| exit_text(o.status))
    }
}

impl StepState {
    /// A checked request: connected by the host, run by the engine's client as a command
    /// (listed in a dry run, journaled under apply), the host's own lines taken off its answer.
    async fn database_allowed(
        &mut self,
        req: wit::database::Request,
        digest: &str,
        audit: &mut serde_json::Value,
    ) -> Result<Done<wit::exec::Output>, WitError> {
        let wit::database::Request { endpoint, script, write, timeout_ms } = req;
        let conn = database::resolve(&endpoint, &self.env.databases, &self.env.sysroot)?;
        audit["url"] = json!(conn.shown());
        let inv = database::invocation(&conn, &script, write, &self.env.sysroot)?;
        let (engine, skip) = (conn.engine, inv.skip_lines);
        let mut request = inv.request;
        request.timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        audit["program"] = json!(request.program);
        // Never a query: a script's effect is the step's word, so every request is listed in a
        // dry run and journaled under apply.
        let shown = Shown {
            changing: true,
            listed: listing(&endpoint, write, &script),
            action: format!("database {endpoint} #{}", &digest[..16]),
            words: format!("{} on database {endpoint} ({})", if write { "script" } else { "query" }, conn.shown()),
            finish: Some(Box::new(move |o| database::read_output(engine, skip, o))),
        };
        let ran = self.run_allowed(&request, shown).await;
        // The credentials' files go once the client has ended.
        drop(inv.secrets);
        ran
    }
}
