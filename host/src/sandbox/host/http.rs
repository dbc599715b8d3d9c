//! `canup:step/http`: a request to a named endpoint, checked against the step's http rules;
//! the host adds the credentials. In a dry run a changing request is listed, not sent; under
//! apply it is journaled so that a resumed step never sends it twice.

use std::time::{Duration, Instant};

use serde_json::json;

use super::super::bindings::{WitError, wit};
use super::super::call::{Done, Effect, StepState, journal_text};
use crate::audit::Decision;
use crate::capabilities::http::{self as cap_http, HttpRequest};
use crate::journal::ActionResult;
use crate::sha256_hex;

impl wit::http::Host for StepState {
    async fn send(&mut self, req: wit::http::Request) -> Result<wit::http::Response, WitError> {
        let start = Instant::now();
        let header_names: Vec<&str> = req.headers.iter().map(|(k, _)| k.as_str()).collect();
        let args = json!({ "endpoint": req.endpoint, "method": req.method, "path": req.path, "headers": header_names,
                           "body_bytes": req.body.as_ref().map(Vec::len) });
        let request = HttpRequest { endpoint: req.endpoint, method: req.method, path: req.path, headers: req.headers, body: req.body };
        let result = match self.env.grant.check_http(&request.endpoint, &request.method, &request.path, &request.headers) {
            Err(d) => Err(d.into()),
            Ok(()) => self.send_allowed(&request).await,
        };
        self.conclude(start, "http", args, result, "sent before the interruption", |r| format!("status {}", r.status))
    }
}

impl StepState {
    /// An allowed request: a changing one is listed, not sent, in a dry run (a GET or HEAD is
    /// sent and listed); under apply a changing one is journaled so that it is sent once.
    async fn send_allowed(&mut self, request: &HttpRequest) -> Result<Done<wit::http::Response>, WitError> {
        let dry = self.env.context.dry_run;
        let changing = !matches!(request.method.as_str(), "GET" | "HEAD");
        if dry && changing {
            cap_http::check_sendable(&self.env.endpoints, request, &self.env.limits.http)?;
            let body = request.body.as_ref().map(|b| format!(" with body {}", String::from_utf8_lossy(b))).unwrap_or_default();
            self.record(format!("send: {} {} to endpoint {}{body}", request.method, request.path, request.endpoint))?;
            return Ok(Done::Now(wit::http::Response { status: 200, headers: vec![("x-canup-dry-run".into(), "1".into())], body: vec![] }));
        }
        if dry {
            // Like a read-only command, a GET runs for real in a dry run and is listed.
            self.record(format!("query: {} {} on endpoint {}", request.method, request.path, request.endpoint))?;
        }
        let key = changing.then(|| {
            let body = request.body.as_deref().map(sha256_hex).unwrap_or_default();
            format!("http {} {} on endpoint {} #{}", request.method, request.path, request.endpoint, &body[..body.len().min(16)])
        });
        let (slot, replay) = self.journaled(Effect::Request, key);
        if let Some(done) = replay {
            return Ok(Done::Replayed(wit::http::Response { status: done.status.unwrap_or(200) as u16, headers: vec![], body: done.stdout.into_bytes() }));
        }
        let mut redirects = Vec::new();
        let sent = cap_http::send(&self.env.grant, &self.env.endpoints, request, &self.env.limits.http, &mut redirects).await;
        // Each redirect followed is a request the step did not name: the audit says where it
        // went, also when a later hop was refused (that refusal is the call's own record).
        for hop in &redirects {
            let args = json!({ "endpoint": request.endpoint, "method": hop.method, "path": hop.path });
            self.env.audit.record(
                self.env.grant.step(),
                "http.redirect",
                args,
                Decision::Allowed,
                format!("followed a {} redirect", hop.status),
                Duration::ZERO,
            );
        }
        let r = sent?;
        self.journal_done(&slot, ActionResult { status: Some(r.status.into()), stdout: journal_text(&r.body), stderr: String::new() })?;
        Ok(Done::Now(wit::http::Response { status: r.status, headers: r.headers, body: r.body }))
    }
}
