//! The `http` capability: requests to endpoints the operator named in `canup.toml`.
//!
//! A step names an endpoint ("rabbitmq"), never a URL, so the operator decides where each name
//! points and with which credentials. The host injects the credentials after the check; the
//! step never sees them, and cannot set `Authorization` itself. Every redirect is checked again
//! as if the step had asked for it, and a redirect to another origin is refused.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use globset::GlobMatcher;
use reqwest::Url;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{Denial, Grant, HttpRule, PatternError, glob};

#[derive(Debug, Clone)]
pub(crate) struct CompiledHttpRule {
    endpoint: String,
    methods: Vec<String>,
    paths: Vec<GlobMatcher>,
}

impl CompiledHttpRule {
    pub(crate) fn new(rule: &HttpRule, origin: &str) -> Result<Self, PatternError> {
        Ok(Self {
            endpoint: rule.endpoint.clone(),
            methods: rule.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            paths: rule.paths.iter().map(|p| glob(p, true, origin)).collect::<Result<_, _>>()?,
        })
    }

    fn allows(&self, endpoint: &str, method: &str, path: &str) -> bool {
        self.endpoint == endpoint && self.methods.iter().any(|m| m == method) && self.paths.iter().any(|g| g.is_match(path))
    }
}

/// Headers that carry identity or routing: the host owns them.
const RESERVED_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "host"];

impl Grant {
    /// The single checkpoint for `http`. `path` may carry a query string; rules match the
    /// path part.
    pub fn check_http(&self, endpoint: &str, method: &str, path: &str, headers: &[(String, String)]) -> Result<(), Denial> {
        let what = || format!("{method} {path} on endpoint {endpoint}");
        // The rules are matched against the path as the server will read it: decoded, so that
        // `%2e%2e` or `x%2F..%2F..` cannot slip past a glob that the literal text satisfies.
        let decoded = path.split('?').next().and_then(percent_decode);
        let bad_path = !path.starts_with('/')
            || path.starts_with("//")
            || path.contains('#')
            || path.contains('\\')
            || path.chars().any(|c| c.is_control() || c == ' ')
            || decoded.as_deref().is_none_or(|p| p.split('/').any(|seg| seg == ".." || seg == "."));
        let Some(path_only) = decoded.filter(|_| !bad_path) else {
            return Err(Denial::Invalid {
                what: what(),
                why: "the path must start with '/' and contain no '..', '#', spaces, control characters, encoded '/' or '\\', or bad percent-encoding".into(),
            });
        };
        if !method.bytes().all(|b| b.is_ascii_uppercase()) || method.is_empty() {
            return Err(Denial::Invalid { what: what(), why: "the method must be an upper-case HTTP method".into() });
        }
        if let Some((name, _)) = headers.iter().find(|(n, _)| RESERVED_HEADERS.contains(&n.to_ascii_lowercase().as_str())) {
            return Err(Denial::Forbidden {
                what: format!("header {name} on endpoint {endpoint}"),
                why: "credentials and routing headers are set by canup only".into(),
            });
        }
        self.both(what, |side| side.http.iter().any(|r| r.allows(endpoint, method, &path_only)))
    }
}

/// A path with its percent-escapes decoded; `None` when an escape is malformed, decodes to a
/// separator (`/`, `\\`) or a control character, or the result is not UTF-8: what a server
/// could read as another path is refused rather than guessed.
fn percent_decode(path: &str) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            let b = u8::from_str_radix(hex, 16).ok()?;
            if b == b'/' || b == b'\\' || b.is_ascii_control() {
                return None;
            }
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// An endpoint as the operator configures it. Secrets come from a file or an environment
/// variable of canup's own process, read at call time, so they are never in a config file
/// that steps or logs could show.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// Base URL; the step's path is appended to it.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// A bearer token instead of basic credentials.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub token_env: Option<String>,
}

pub type Endpoints = BTreeMap<String, Endpoint>;

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub timeout: Duration,
    pub max_response_body: usize,
    pub max_request_body: usize,
    pub max_redirects: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(30), max_response_body: 8 << 20, max_request_body: 8 << 20, max_redirects: 5 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct HttpRequest {
    pub endpoint: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One redirect followed: the status that sent it and the request made next.
#[derive(Debug, Clone)]
pub struct Hop {
    pub status: u16,
    pub method: String,
    /// The path (and query) on the endpoint, as the check saw it.
    pub path: String,
}

#[derive(Debug, Error)]
pub enum HttpError {
    #[error("endpoint {0} is not configured; add [endpoints.{0}] to canup.toml")]
    UnknownEndpoint(String),
    #[error("endpoint {endpoint}: {why}")]
    BadConfig { endpoint: String, why: String },
    #[error(transparent)]
    Denied(#[from] Denial),
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: String, limit: usize },
    #[error("request to endpoint {endpoint} timed out after {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("request to endpoint {endpoint} failed: {why}")]
    Failed { endpoint: String, why: String },
}

pub(crate) fn read_secret(endpoint: &str, file: &Option<PathBuf>, env: &Option<String>) -> Result<Option<String>, HttpError> {
    let bad = |why: String| HttpError::BadConfig { endpoint: endpoint.to_owned(), why };
    if let Some(path) = file {
        let s = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read secret file {}: {e}", path.display())))?;
        return Ok(Some(s.trim_end_matches(['\n', '\r']).to_owned()));
    }
    if let Some(var) = env {
        return std::env::var(var).map(Some).map_err(|_| bad(format!("environment variable {var} is not set")));
    }
    Ok(None)
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme() && a.host_str() == b.host_str() && a.port_or_known_default() == b.port_or_known_default()
}

/// One HTTP client for the whole process: building one loads the TLS roots and costs
/// ~10–20 ms, which every step's request paid before. It keeps no idle connection: a pooled
/// connection belongs to the tokio runtime that opened it, and a client shared by the whole
/// process may outlive that runtime. It follows no redirect itself (see [`send`]).
/// The repository transport uses it too.
pub(crate) fn shared_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: std::sync::OnceLock<Result<reqwest::Client, String>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .pool_max_idle_per_host(0)
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Where a redirect points, resolved against the URL it answered; none when `resp` is not a
/// redirect or names no readable location. The shared client follows none itself (see
/// [`shared_client`]): the callers do, each with its own checks.
pub(crate) fn redirect_target(resp: &reqwest::Response) -> Option<Result<Url, String>> {
    if !resp.status().is_redirection() {
        return None;
    }
    let location = resp.headers().get(reqwest::header::LOCATION)?.to_str().ok()?;
    Some(resp.url().join(location).map_err(|e| format!("redirect to {location:?}: {e}")))
}

/// Where a checked request goes, from the operator's endpoint configuration.
struct Target<'a> {
    endpoint: &'a Endpoint,
    base: Url,
    url: Url,
    /// The endpoint's bearer token, or else (with a username) its password.
    token: Option<String>,
    password: Option<String>,
}

/// Everything about a request that depends on the operator's configuration rather than on the
/// server: the endpoint is configured, its URL is valid, the path stays on its origin, the body
/// is within the limit, its secret is readable.
fn target<'a>(endpoints: &'a Endpoints, req: &HttpRequest, limits: &HttpLimits) -> Result<Target<'a>, HttpError> {
    let name = req.endpoint.as_str();
    let ep = endpoints.get(name).ok_or_else(|| HttpError::UnknownEndpoint(name.to_owned()))?;
    let base = Url::parse(&ep.url).map_err(|e| HttpError::BadConfig { endpoint: name.to_owned(), why: format!("url {:?}: {e}", ep.url) })?;
    let url = Url::parse(&format!("{}{}", ep.url.trim_end_matches('/'), req.path))
        .map_err(|e| HttpError::Failed { endpoint: name.to_owned(), why: format!("bad URL: {e}") })?;
    if !same_origin(&url, &base) {
        return Err(Denial::Invalid { what: format!("path {} on endpoint {name}", req.path), why: "it leaves the endpoint's origin".into() }.into());
    }
    if let Some(body) = &req.body
        && body.len() > limits.max_request_body
    {
        return Err(HttpError::TooLarge { what: format!("request body for endpoint {name}"), limit: limits.max_request_body });
    }
    let token = read_secret(name, &ep.token_file, &ep.token_env)?;
    let password = match (&token, &ep.username) {
        (None, Some(_)) => read_secret(name, &ep.password_file, &ep.password_env)?,
        _ => None,
    };
    Ok(Target { endpoint: ep, base, url, token, password })
}

/// What a dry run checks of a changing request it lists instead of sending: whatever would
/// stop the real run before the server answers (an endpoint not configured, a bad URL, a
/// secret that cannot be read) stops the dry run the same way, so that it never lists a
/// request the real run cannot make.
pub fn check_sendable(endpoints: &Endpoints, req: &HttpRequest, limits: &HttpLimits) -> Result<(), HttpError> {
    target(endpoints, req, limits).map(|_| ())
}

/// Sends an already-checked request. Redirects go through `grant` again; those followed are
/// pushed to `redirects` as they are, so the caller can audit them whatever the outcome.
pub async fn send(grant: &Grant, endpoints: &Endpoints, req: &HttpRequest, limits: &HttpLimits, redirects: &mut Vec<Hop>) -> Result<HttpResponse, HttpError> {
    let name = req.endpoint.as_str();
    let Target { endpoint: ep, base, url, token, password } = target(endpoints, req, limits)?;
    let failed = |why: String| HttpError::Failed { endpoint: name.to_owned(), why };
    let base_path = base.path().trim_end_matches('/').to_owned();
    let client = shared_client().map_err(failed)?;
    let mut method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| failed(e.to_string()))?;
    let mut url = url;
    let mut body = req.body.clone();
    let map_err = |e: reqwest::Error| {
        if e.is_timeout() { HttpError::Timeout { endpoint: name.to_owned(), after: limits.timeout } } else { failed(crate::error_chain(&e)) }
    };
    let first = redirects.len();
    let resp = loop {
        let mut builder = client.request(method.clone(), url.clone()).timeout(limits.timeout);
        for (k, v) in &req.headers {
            builder = builder.header(k, v);
        }
        if let Some(token) = &token {
            builder = builder.bearer_auth(token);
        } else if let Some(user) = &ep.username {
            builder = builder.basic_auth(user, password.as_ref());
        }
        if let Some(body) = &body {
            builder = builder.body(body.clone());
        }
        let resp = builder.send().await.map_err(map_err)?;
        let Some(target) = redirect_target(&resp) else { break resp };
        // Redirects are followed here rather than inside reqwest so that each hop goes through
        // the same checks as the step's own request, and the client can be shared.
        if redirects.len() - first == limits.max_redirects {
            return Err(failed(format!("more than {} redirects", limits.max_redirects)));
        }
        let target = target.map_err(failed)?;
        if !same_origin(&target, &base) || !target.path().starts_with(&base_path) {
            return Err(Denial::Invalid {
                what: format!("redirect of endpoint {name} to {target}"),
                why: "it leads to another origin than the endpoint's".into(),
            }
            .into());
        }
        // As browsers do: 303, and 301/302 after a POST, continue as a GET without the body.
        let status = resp.status().as_u16();
        if status == 303 || (matches!(status, 301 | 302) && method == reqwest::Method::POST) {
            method = reqwest::Method::GET;
            body = None;
        }
        let rest = &target.path()[base_path.len()..];
        let rest = match target.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_owned(),
        };
        grant.check_http(name, method.as_str(), &rest, &req.headers)?;
        redirects.push(Hop { status, method: method.to_string(), path: rest });
        url = target;
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    if resp.content_length().is_some_and(|n| n > limits.max_response_body as u64) {
        return Err(HttpError::TooLarge { what: format!("response body of endpoint {name}"), limit: limits.max_response_body });
    }
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(map_err)?;
        if body.len() + chunk.len() > limits.max_response_body {
            return Err(HttpError::TooLarge { what: format!("response body of endpoint {name}"), limit: limits.max_response_body });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse { status, headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dry run checks what would stop the real request before the server answers.
    #[test]
    fn a_request_a_dry_run_lists_must_be_sendable() {
        let req = HttpRequest { endpoint: "canopsis-api".into(), method: "POST".into(), path: "/api/v4/broadcast-message".into(), headers: vec![], body: None };
        let e = check_sendable(&Endpoints::new(), &req, &HttpLimits::default()).unwrap_err();
        assert_eq!(e.to_string(), "endpoint canopsis-api is not configured; add [endpoints.canopsis-api] to canup.toml");
        let dir = tempfile::tempdir().unwrap();
        let endpoint = |password_file| Endpoint {
            url: "http://127.0.0.1:1".into(),
            username: Some("root".into()),
            password_file: Some(password_file),
            password_env: None,
            token_file: None,
            token_env: None,
        };
        let missing: Endpoints = [("canopsis-api".to_owned(), endpoint(dir.path().join("missing")))].into();
        assert!(check_sendable(&missing, &req, &HttpLimits::default()).is_err(), "an unreadable password stops it too");
        std::fs::write(dir.path().join("pw"), "secret\n").unwrap();
        let ok: Endpoints = [("canopsis-api".to_owned(), endpoint(dir.path().join("pw")))].into();
        check_sendable(&ok, &req, &HttpLimits::default()).unwrap();
    }
}
