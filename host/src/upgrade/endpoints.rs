//! Before the first change, the endpoints the plan's steps will call are checked: each one
//! answers with success and accepts canup's credentials.
//!
//! Without this, an operator with RabbitMQ down saw `apply` update the packages, run
//! canopsinit and restart the engines, then stop at 3.39.0's unbind with "Connection refused":
//! a half-upgraded host for a cause knowable at the start. Accepting any answer but 401/403
//! was not enough either: a RabbitMQ answering HTTP 500 passed the check, and the same
//! half-upgrade followed. So only a 2xx passes.
//!
//! The check is read-only: a `GET` of each literal path the plan's steps declare for `GET` on
//! the endpoint (the drain check's `/api/queues/canopsis`, the API check's
//! `/api/internal/app_info` and `/api/v4/app-info`), each sent with its step's own grant, so
//! the operator's policy and the endpoint's configuration apply as they will for the step. A
//! step may list paths of several Canopsis versions of which the installed one serves only
//! one, so the endpoint passes when one of them answers 2xx; when none does, the problem
//! lists what each answered. An endpoint that does not answer at all is not asked again for
//! its other paths. An endpoint not configured in canup.toml is left to the steps, which say
//! they skip their work without it. The operator sees what is being checked, and for how
//! long at most, before each endpoint is asked (an unreachable one takes the whole timeout).

use std::collections::BTreeMap;

use crate::capabilities::http::{self, Endpoints, HttpError, HttpRequest};
use crate::capabilities::{Grant, Policy};
use crate::config::StepLimits;
use crate::plan::PlannedStep;
use crate::ui::{Level, Ui};

/// How the plan uses an endpoint: the steps that call it, and the literal `GET` paths to
/// probe it with, each with the first step that declares it.
type Use<'a> = (Vec<&'a str>, Vec<(&'a PlannedStep, &'a str)>);

/// What one probe learnt.
enum Probe {
    Success,
    Refused(u16),
    Other(u16),
    Denied(String),
    Unreachable(String),
}

/// Problems found, one line each naming the endpoint, what is wrong and which steps need it;
/// empty when every used and configured endpoint answers one of its paths with success.
pub async fn check(steps: &[&PlannedStep], endpoints: &Endpoints, policy: &Policy, limits: &StepLimits, ui: &dyn Ui) -> Vec<String> {
    let mut used: BTreeMap<&str, Use> = BTreeMap::new();
    for p in steps {
        for rule in &p.step.manifest.capabilities.http {
            let entry = used.entry(rule.endpoint.as_str()).or_default();
            if !entry.0.contains(&p.step.manifest.id.as_str()) {
                entry.0.push(p.step.manifest.id.as_str());
            }
            if !rule.methods.iter().any(|m| m == "GET") {
                continue;
            }
            for path in rule.paths.iter().filter(|p| p.starts_with('/') && !p.contains(['*', '?', '['])) {
                if !entry.1.iter().any(|(_, known)| *known == path.as_str()) {
                    entry.1.push((p, path.as_str()));
                }
            }
        }
    }
    let mut problems = Vec::new();
    for (endpoint, (users, probes)) in used {
        let Some(config) = endpoints.get(endpoint) else { continue };
        if probes.is_empty() {
            continue;
        }
        let needed = format!("needed by {}", users.join(", "));
        let paths: Vec<&str> = probes.iter().map(|(_, path)| *path).collect();
        ui.log(
            "canup",
            Level::Info,
            &format!(
                "checking endpoint {endpoint} ({}): GET {}, up to {} s{}",
                config.url,
                paths.join(", GET "),
                limits.http.timeout.as_secs(),
                if paths.len() > 1 { " each; one success is enough" } else { "" }
            ),
        );
        let mut answers = Vec::new();
        let mut outcome = None;
        for (step, path) in probes {
            match probe(step, endpoint, path, endpoints, policy, limits).await {
                Probe::Success => {
                    outcome = Some(Ok(()));
                    break;
                }
                Probe::Refused(status) => {
                    outcome = Some(Err(format!(
                        "endpoint {endpoint} ({}) refuses canup's credentials (HTTP {status} for GET {path}): check its username and secret in canup.toml ({needed})",
                        config.url
                    )));
                    break;
                }
                Probe::Unreachable(why) => {
                    outcome = Some(Err(format!("endpoint {endpoint} ({}) does not answer: {why}; start it or fix canup.toml ({needed})", config.url)));
                    break;
                }
                Probe::Other(status) => answers.push(format!("GET {path}: HTTP {status}")),
                Probe::Denied(why) => answers.push(format!("GET {path}: {why}")),
            }
        }
        match outcome {
            Some(Ok(())) => {}
            Some(Err(problem)) => problems.push(problem),
            None => problems.push(format!(
                "endpoint {endpoint} ({}) answered none of the plan's checks with success ({}): fix the service before the upgrade ({needed})",
                config.url,
                answers.join("; ")
            )),
        }
    }
    problems
}

/// One `GET` of `path` on `endpoint` with `step`'s grant.
async fn probe(step: &PlannedStep, endpoint: &str, path: &str, endpoints: &Endpoints, policy: &Policy, limits: &StepLimits) -> Probe {
    let grant = match Grant::with_policy(&step.step.manifest.id, &step.step.manifest.capabilities, policy) {
        Ok(g) => g,
        Err(e) => return Probe::Denied(e.to_string()),
    };
    if let Err(denial) = grant.check_http(endpoint, "GET", path, &[]) {
        return Probe::Denied(denial.to_string());
    }
    let req = HttpRequest { endpoint: endpoint.to_owned(), method: "GET".into(), path: path.to_owned(), headers: Vec::new(), body: None };
    match http::send(&grant, endpoints, &req, &limits.http, &mut Vec::new()).await {
        Ok(resp) if (200..300).contains(&resp.status) => Probe::Success,
        Ok(resp) if resp.status == 401 || resp.status == 403 => Probe::Refused(resp.status),
        Ok(resp) => Probe::Other(resp.status),
        // Not configured after all: left to the steps, as above.
        Err(HttpError::UnknownEndpoint(_)) => Probe::Success,
        Err(e) => Probe::Unreachable(e.to_string()),
    }
}
