//! Requests to endpoints the operator configured (`rabbitmq`, `canopsis-api`, ...). The step
//! names the endpoint and a path; canup adds the base URL and the credentials.

use crate::bindings::canup::step::http as wit;
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Request(wit::Request);

impl Request {
    pub fn new(method: &str, endpoint: &str, path: &str) -> Self {
        Self(wit::Request { endpoint: endpoint.into(), method: method.into(), path: path.into(), headers: Vec::new(), body: None })
    }
    pub fn get(endpoint: &str, path: &str) -> Self {
        Self::new("GET", endpoint, path)
    }
    pub fn post(endpoint: &str, path: &str) -> Self {
        Self::new("POST", endpoint, path)
    }
    pub fn delete(endpoint: &str, path: &str) -> Self {
        Self::new("DELETE", endpoint, path)
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.0.headers.push((name.into(), value.into()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.0.body = Some(body.into());
        self
    }
    /// A JSON body (already serialised) with its content type.
    pub fn json(self, body: impl Into<Vec<u8>>) -> Self {
        self.header("content-type", "application/json").body(body)
    }
    pub fn send(&self) -> Result<Response> {
        wit::send(&self.0).map(Response).map_err(|e| Error::from(e).context(format!("{} {} on endpoint {}", self.0.method, self.0.path, self.0.endpoint)))
    }
}

/// An endpoint's answer (the generated type stays inside the SDK).
#[derive(Debug, Clone)]
pub struct Response(wit::Response);

impl Response {
    pub fn status(&self) -> u16 {
        self.0.status
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.0.status)
    }
    pub fn body(&self) -> &[u8] {
        &self.0.body
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.0.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}
