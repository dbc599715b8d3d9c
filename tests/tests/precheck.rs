//! The endpoint pre-check of `canup apply`: before the first change, what the plan's steps
//! call must answer with success. The real `canup` binary, the project's signed steps and the
//! simulated host (see `tests/tests/apply.rs`).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use canup_tests::serve;
use canup_tests::simhost::{Edition, Spec};
use canup_tests::site::{host, text};

/// RabbitMQ answering HTTP 500 (its management plugin broken, say): an answer, with the
/// credentials taken, but not a success. The plan's drain check and 3.39.0's unbind would
/// fail after the packages were updated and the engines restarted; the pre-check stops
/// `apply` before anything changes: no changing command, the tree byte for byte, no run in
/// the journal, and the error names the endpoint, the path and the status. The operator saw
/// what was being checked before it was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_answering_http_500_stops_apply_before_any_change() {
    let h = host(Spec { version: "3.38.0".into(), edition: Edition::Cat, ..Spec::default() }).await;
    let asked: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = asked.clone();
    let broken = Router::new().fallback(move |uri: Uri| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(uri.path().to_owned());
            (StatusCode::INTERNAL_SERVER_ERROR, "{\"error\":\"internal_server_error\"}").into_response()
        }
    });
    let url = format!("http://{}", serve(broken).await);
    h.edit_config(&format!("[endpoints.rabbitmq]\nurl = \"{}\"", canup_tests::rabbitmq::MANAGEMENT), &format!("[endpoints.rabbitmq]\nurl = \"{url}\""));
    let journal = h.dir.path().join("state/journal.jsonl");
    let journal_before = std::fs::read(&journal).unwrap_or_default();
    let before = h.sim.snapshot().unwrap();

    let out = h.run(&["apply", "--to", "3.40.0", "--yes", "--accept-manual"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    let announced =
        said.lines().find(|l| l.contains(&format!("checking endpoint rabbitmq ({url}): GET "))).unwrap_or_else(|| panic!("the wait was not announced: {said}"));
    assert!(announced.contains("GET /api/queues/canopsis") && announced.contains("up to 30 s"), "{announced}");
    let problem = said
        .lines()
        .find(|l| l.contains(&format!("endpoint rabbitmq ({url}) answered none of the plan's checks with success (")))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(problem.contains("GET /api/queues/canopsis: HTTP 500"), "{problem}");
    assert!(said.contains("needed by 3.39.0/unbind-che, drain/queues") && said.contains("nothing was changed"), "{said}");
    assert!(h.changes().is_empty(), "{:?}", h.changes());
    assert_eq!(h.sim.snapshot().unwrap(), before, "the tree changed");
    // `apply` opens (creates) the journal before planning; no record of a run is in it.
    assert_eq!(std::fs::read(&journal).unwrap_or_default(), journal_before, "the journal recorded a run");
    assert!(!asked.lock().unwrap().is_empty(), "the broken endpoint was not even asked");
    assert!(asked.lock().unwrap().iter().all(|p| p.starts_with("/api/")), "{:?}", asked.lock().unwrap());
}
