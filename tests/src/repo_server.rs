//! A static file server for repositories, with faults a test can inject per path.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// What the server does with one path instead of serving the file.
#[derive(Clone)]
pub enum Fault {
    /// Serve these bytes.
    Replace(Vec<u8>),
    /// Never stop sending.
    Endless,
    /// Send half the file and cut the connection, once; then serve normally.
    DropOnce,
    /// Answer 500, once; then serve normally.
    Error500Once,
    /// Answer 500, always: a broken server.
    Error500Always,
    /// Serve normally after this delay: a slow server.
    Delay(std::time::Duration),
}

#[derive(Clone, Default)]
pub struct Control {
    faults: Arc<Mutex<HashMap<String, Fault>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Control {
    pub fn fault(&self, path: &str, fault: Fault) {
        self.faults.lock().unwrap().insert(path.to_owned(), fault);
    }
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn serve_file(file: std::io::Result<Vec<u8>>) -> Response {
    match file {
        Ok(bytes) => Response::new(Body::from(bytes)),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Serves `dir` on 127.0.0.1 and returns its base URL.
pub async fn serve_repo(dir: PathBuf, control: Control) -> String {
    let handler = move |uri: Uri| {
        let (dir, control) = (dir.clone(), control.clone());
        async move {
            let path = uri.path().trim_start_matches('/').to_owned();
            *control.hits.lock().unwrap().entry(path.clone()).or_default() += 1;
            let fault = control.faults.lock().unwrap().get(&path).cloned();
            let file = || std::fs::read(dir.join(&path));
            match fault {
                Some(Fault::Replace(bytes)) => bytes.into_response(),
                Some(Fault::Endless) => {
                    let chunk = Bytes::from(vec![b' '; 64 << 10]);
                    Body::from_stream(futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()))).into_response()
                }
                Some(Fault::DropOnce) => {
                    control.faults.lock().unwrap().remove(&path);
                    let bytes = file().unwrap_or_default();
                    let half = Bytes::from(bytes[..bytes.len() / 2].to_vec());
                    let parts = vec![Ok(half), Err(std::io::Error::other("connection cut by the test"))];
                    Body::from_stream(futures_util::stream::iter(parts)).into_response()
                }
                Some(Fault::Error500Once) => {
                    control.faults.lock().unwrap().remove(&path);
                    StatusCode::INTERNAL_SERVER_ERROR.into_response()
                }
                Some(Fault::Error500Always) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                Some(Fault::Delay(d)) => {
                    tokio::time::sleep(d).await;
                    serve_file(file())
                }
                None => serve_file(file()),
            }
        }
    };
    format!("http://{}", crate::serve(Router::new().fallback(handler)).await)
}
