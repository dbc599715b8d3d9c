//! Before the first change, the endpoints the plan's steps will call are checked: each one
//! answers and accepts canup's credentials.
//!
//! Without this, an operator with RabbitMQ down saw `apply` update the packages, run
//! canopsinit and restart the engines, then stop at 3.39.0's unbind with "Connection refused":
//! a half-upgraded host for a cause knowable at the start. The check is a read-only request
//! per endpoint: the first `GET` of a plan step on it with a literal path (the drain check's
//! `/api/queues/canopsis`, the API check's `/api/v4/app-info`), sent with the step's own grant,
//! so the operator's policy and the endpoint's configuration apply as they will for the step.
//! Any HTTP answer but 401 or 403 proves both (a 404 on a 3.x path still comes from a server
//! that took the credentials). An endpoint not configured in canup.toml is left to the steps,
//! which say they skip their work without it.

use std::collections::BTreeMap;

use crate::capabilities::http::{self, Endpoints, HttpError, HttpRequest};
use crate::capabilities::{Grant, Policy};
use crate::config::StepLimits;
use crate::plan::PlannedStep;

/// How the plan uses an endpoint: the steps that call it, and a step and a path to probe it with.
type Use<'a> = (Vec<&'a str>, Option<(&'a PlannedStep, &'a str)>);

/// Problems found, one line each naming the endpoint, what is wrong and which steps need it;
/// empty when every used and configured endpoint answers.
pub async fn check(steps: &[&PlannedStep], endpoints: &Endpoints, policy: &Policy, limits: &StepLimits) -> Vec<String> {
    let mut used: BTreeMap<&str, Use> = BTreeMap::new();
    for p in steps {
        for rule in &p.step.manifest.capabilities.http {
            let entry = used.entry(rule.endpoint.as_str()).or_default();
            if !entry.0.contains(&p.step.manifest.id.as_str()) {
                entry.0.push(p.step.manifest.id.as_str());
            }
            if entry.1.is_none()
                && rule.methods.iter().any(|m| m == "GET")
                && let Some(path) = rule.paths.iter().find(|p| p.starts_with('/') && !p.contains(['*', '?', '[']))
            {
                entry.1 = Some((p, path.as_str()));
            }
        }
    }
    let mut problems = Vec::new();
    for (endpoint, (users, probe)) in used {
        let Some(config) = endpoints.get(endpoint) else { continue };
        let Some((step, path)) = probe else { continue };
        let needed = format!("needed by {}", users.join(", "));
        let grant = match Grant::with_policy(&step.step.manifest.id, &step.step.manifest.capabilities, policy) {
            Ok(g) => g,
            Err(e) => {
                problems.push(format!("endpoint {endpoint}: {e} ({needed})"));
                continue;
            }
        };
        if let Err(denial) = grant.check_http(endpoint, "GET", path, &[]) {
            problems.push(format!("endpoint {endpoint}: {denial} ({needed})"));
            continue;
        }
        let req = HttpRequest { endpoint: endpoint.to_owned(), method: "GET".into(), path: path.to_owned(), headers: Vec::new(), body: None };
        match http::send(&grant, endpoints, &req, &limits.http, &mut Vec::new()).await {
            Ok(resp) if resp.status == 401 || resp.status == 403 => problems.push(format!(
                "endpoint {endpoint} ({}) refuses canup's credentials (HTTP {} for GET {path}): check its username and secret in canup.toml ({needed})",
                config.url, resp.status
            )),
            Ok(_) => {}
            Err(HttpError::UnknownEndpoint(_)) => {}
            Err(e) => problems.push(format!("endpoint {endpoint} ({}) does not answer: {e}; start it or fix canup.toml ({needed})", config.url)),
        }
    }
    problems
}
