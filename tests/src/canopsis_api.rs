//! The Canopsis web API of a simulated host, served on loopback with axum for the tests: the
//! answers are `canup_sim::api`'s (what `canup-sim serve-api` serves step authors), and every
//! request is kept for the tests to read.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
pub use canup_sim::api::{PASSWORD, Request};
use canup_sim::api::{State, answer};

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
            async move {
                let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
                let (status, json, text) = answer(&state, &root, method.as_str(), uri.path(), authorization, &body);
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let response: Response =
                    if json { (status, [(header::CONTENT_TYPE, "application/json")], text).into_response() } else { (status, text).into_response() };
                response
            }
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
        canup_sim::api::endpoint_toml(&self.url, secret)
    }
}
