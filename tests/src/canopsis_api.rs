//! The Canopsis web API of a simulated host, on loopback: what the broadcast and API-check
//! steps talk to. It answers from the simulated tree at request time, so an upgrade of the
//! tree shows in the version it reports, and it records every request for the tests.
//!
//! - `GET /api/internal/app_info` (3.x) and `GET /api/v4/app-info` (4.x): `{"version": …}` of
//!   the installation (`canup_sim::installed_version`: VERSION.txt, else the RHEL 8 package); 503 while `/var/lib/canup-sim/api-down` exists (services
//!   restarting), 404 on the other era's path.
//! - `/api/v2/broadcast-message` (3.40+) and `/api/v4/broadcast-message`: POST adds, GET lists
//!   (3.x: a plain array; 4.x: `{"data": […]}`), `DELETE …/ID` removes.
//! - Every request needs HTTP basic auth as `root` with [`PASSWORD`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The API user's password (user `root`).
pub const PASSWORD: &str = "rootpw";
const BASIC_AUTH: &str = "Basic cm9vdDpyb290cHc="; // root:rootpw

/// One request as the API saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorized: bool,
    pub body: String,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    broadcasts: Vec<serde_json::Value>,
    next_id: u32,
}

/// A running simulated API.
#[derive(Clone)]
pub struct CanopsisApi {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl CanopsisApi {
    /// Serves the API of the simulated host at `root` on an ephemeral port.
    pub async fn serve(root: PathBuf) -> Self {
        let state: Arc<Mutex<State>> = Arc::default();
        let shared = state.clone();
        let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let (state, root) = (shared.clone(), root.clone());
            async move { answer(&state, &root, method, uri.path(), &headers, &body) }
        };
        let addr = crate::serve(axum::Router::new().fallback(handler)).await;
        Self { url: format!("http://{addr}"), state }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().map(|s| s.requests.clone()).unwrap_or_default()
    }

    /// Messages currently broadcast.
    pub fn broadcasts(&self) -> Vec<serde_json::Value> {
        self.state.lock().map(|s| s.broadcasts.clone()).unwrap_or_default()
    }

    /// The `[endpoints.canopsis-api]` table of a canup.toml, with the password in `secret`.
    pub fn endpoint_toml(&self, secret: &std::path::Path) -> std::io::Result<String> {
        std::fs::write(secret, PASSWORD)?;
        Ok(format!("[endpoints.canopsis-api]\nurl = \"{}\"\nusername = \"root\"\npassword_file = \"{}\"\n", self.url, secret.display()))
    }
}

fn installed(root: &std::path::Path) -> String {
    canup_sim::installed_version(root)
}

fn answer(state: &Mutex<State>, root: &std::path::Path, method: Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let authorized = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(BASIC_AUTH);
    let Ok(mut s) = state.lock() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
    s.requests.push(Request { method: method.to_string(), path: path.to_owned(), authorized, body: String::from_utf8_lossy(body).into_owned() });
    if !authorized {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let version = installed(root);
    // API v4 from 4.0 on, 22.10 and 23.x included.
    let v4 = !version.starts_with("3.");
    if root.join("var/lib/canup-sim/api-down").exists() {
        return (StatusCode::SERVICE_UNAVAILABLE, "Canopsis is restarting").into_response();
    }
    let json = |v: serde_json::Value| ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response();
    let broadcast_base = if v4 { "/api/v4/broadcast-message" } else { "/api/v2/broadcast-message" };
    match (method, path) {
        (Method::GET, "/api/internal/app_info") if !v4 => json(serde_json::json!({ "version": version, "app_title": "Canopsis" })),
        (Method::GET, "/api/v4/app-info") if v4 => json(serde_json::json!({ "version": version, "edition": "pro" })),
        (Method::POST, p) if p == broadcast_base => {
            let Ok(mut message) = serde_json::from_slice::<serde_json::Value>(body) else { return StatusCode::BAD_REQUEST.into_response() };
            s.next_id += 1;
            message["_id"] = format!("b-{}", s.next_id).into();
            s.broadcasts.push(message.clone());
            json(message)
        }
        (Method::GET, p) if p == broadcast_base => {
            let list = serde_json::Value::Array(s.broadcasts.clone());
            json(if v4 { serde_json::json!({ "data": list }) } else { list })
        }
        (Method::DELETE, p) if p.strip_prefix(broadcast_base).is_some_and(|rest| rest.starts_with('/')) => {
            let id = &p[broadcast_base.len() + 1..];
            let before = s.broadcasts.len();
            s.broadcasts.retain(|b| b["_id"] != id);
            if s.broadcasts.len() < before { StatusCode::NO_CONTENT.into_response() } else { StatusCode::NOT_FOUND.into_response() }
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
