//! The Canopsis web API of a simulated host: what the broadcast and API-check steps talk to.
//! It answers from the simulated tree at request time, so an upgrade of the tree shows in the
//! version it reports. The tests serve it with axum (`canup_tests::canopsis_api`); step
//! authors with `canup-sim serve-api` ([`serve`], plain HTTP/1.1 on loopback).
//!
//! - `GET /api/internal/app_info` (3.x) and `GET /api/v4/app-info` (4.x and later):
//!   `{"version": …}` of the installation ([`crate::installed_version`]); 503 while
//!   `/var/lib/canup-sim/api-down` exists (services restarting), 404 on the other era's path.
//! - `/api/v2/broadcast-message` (3.40+) and `/api/v4/broadcast-message`: POST adds, GET lists
//!   (3.x: a plain array; 4.x: `{"data": […]}`), `DELETE …/ID` removes.
//! - Every request needs HTTP basic auth as `root` with [`PASSWORD`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

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

/// What the API remembers: the requests and the messages broadcast.
#[derive(Default)]
pub struct State {
    pub requests: Vec<Request>,
    pub broadcasts: Vec<serde_json::Value>,
    next_id: u32,
}

/// An answer: status, whether the body is JSON, body.
pub type Answer = (u16, bool, String);

/// The API's answer to one request on the simulated host at `root`.
pub fn answer(state: &Mutex<State>, root: &Path, method: &str, path: &str, authorization: Option<&str>, body: &[u8]) -> Answer {
    let authorized = authorization == Some(BASIC_AUTH);
    let Ok(mut s) = state.lock() else { return (500, false, String::new()) };
    s.requests.push(Request { method: method.to_owned(), path: path.to_owned(), authorized, body: String::from_utf8_lossy(body).into_owned() });
    if !authorized {
        return (401, false, String::new());
    }
    let version = crate::installed_version(root);
    // API v4 from 4.0 on, 22.10 and later included.
    let v4 = !version.starts_with("3.");
    if root.join("var/lib/canup-sim/api-down").exists() {
        return (503, false, "Canopsis is restarting".into());
    }
    let json = |v: serde_json::Value| (200, true, v.to_string());
    let broadcast_base = if v4 { "/api/v4/broadcast-message" } else { "/api/v2/broadcast-message" };
    match (method, path) {
        ("GET", "/api/internal/app_info") if !v4 => json(serde_json::json!({ "version": version, "app_title": "Canopsis" })),
        ("GET", "/api/v4/app-info") if v4 => json(serde_json::json!({ "version": version, "edition": "pro" })),
        ("POST", p) if p == broadcast_base => {
            let Ok(mut message) = serde_json::from_slice::<serde_json::Value>(body) else { return (400, false, String::new()) };
            s.next_id += 1;
            message["_id"] = format!("b-{}", s.next_id).into();
            s.broadcasts.push(message.clone());
            json(message)
        }
        ("GET", p) if p == broadcast_base => {
            let list = serde_json::Value::Array(s.broadcasts.clone());
            json(if v4 { serde_json::json!({ "data": list }) } else { list })
        }
        ("DELETE", p) if p.strip_prefix(broadcast_base).is_some_and(|rest| rest.starts_with('/')) => {
            let id = &p[broadcast_base.len() + 1..];
            let before = s.broadcasts.len();
            s.broadcasts.retain(|b| b["_id"] != id);
            if s.broadcasts.len() < before { (204, false, String::new()) } else { (404, false, String::new()) }
        }
        _ => (404, false, String::new()),
    }
}

/// The `[endpoints.canopsis-api]` table of a canup.toml for the API at `url`, its password
/// written to `secret`.
pub fn endpoint_toml(url: &str, secret: &Path) -> std::io::Result<String> {
    std::fs::write(secret, PASSWORD)?;
    Ok(format!("[endpoints.canopsis-api]\nurl = \"{url}\"\nusername = \"root\"\npassword_file = \"{}\"\n", secret.display()))
}

/// Serves the API of the simulated host at `root` on `listener` until the process ends: one
/// request per connection, which is all canup's client sends.
pub fn serve(listener: TcpListener, root: &Path) -> std::io::Result<()> {
    let state: Arc<Mutex<State>> = Arc::default();
    for stream in listener.incoming() {
        let (stream, state, root) = (stream?, state.clone(), root.to_path_buf());
        std::thread::spawn(move || {
            if let Err(e) = one(stream, &state, &root) {
                eprintln!("canup-sim serve-api: {e}");
            }
        });
    }
    Ok(())
}

fn one(stream: TcpStream, state: &Mutex<State>, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let (method, target) = (words.next().unwrap_or_default().to_owned(), words.next().unwrap_or_default().to_owned());
    let (mut length, mut authorization) = (0usize, None);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0).min(1 << 20),
                "authorization" => authorization = Some(value.trim().to_owned()),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or_default();
    let (status, is_json, text) = answer(state, root, &method, path, authorization.as_deref(), &body);
    let kind = if is_json { "Content-Type: application/json\r\n" } else { "" };
    let mut out = stream;
    write!(out, "HTTP/1.1 {status} {}\r\n{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{text}", reason(status), text.len())?;
    out.flush()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}
