//! The steps that talk to RabbitMQ, against a real `rabbitmq-server` (started by
//! `cargo xtask test`), and the broadcast message against a loopback Canopsis API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method as HttpMethod, StatusCode, Uri, header};
use axum::response::IntoResponse;
use canup::audit::Decision;
use canup::capabilities::http::{Endpoint, Endpoints};
use canup::manifest::{Edition, Method};
use canup::sandbox::Sandbox;
use canup_tests::rabbitmq::{Admin, Broker, MANAGEMENT, PASSWORD, USER};
use canup_tests::serve;
use canup_tests::steprun::{self, Setting};
use semver::Version;
use tokio::sync::Mutex as AsyncMutex;

/// The tests share one broker (and its `canopsis` vhost): one at a time.
static BROKER: AsyncMutex<()> = AsyncMutex::const_new(());

fn endpoint(url: &str, user: &str, secret: &std::path::Path, password: &str) -> Endpoint {
    std::fs::write(secret, password).unwrap();
    Endpoint { url: url.into(), username: Some(user.into()), password_file: Some(secret.into()), password_env: None, token_file: None, token_env: None }
}

fn setting(dir: &std::path::Path, installed: &str, target: &str, settings: &[(&str, &str)]) -> Setting {
    let endpoints: Endpoints = BTreeMap::from([("rabbitmq".to_owned(), endpoint(MANAGEMENT, USER, &dir.join("rabbitmq.pw"), PASSWORD))]);
    Setting {
        installed: Version::parse(installed).unwrap(),
        target: Version::parse(target).unwrap(),
        release: Version::parse(target).unwrap(),
        edition: Edition::Core,
        method: Method::Packages,
        endpoints,
        settings: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        data: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbind_removes_the_engine_che_binding_and_a_second_run_is_a_no_op() {
    let _one = BROKER.lock().await;
    let admin = Admin::new();
    admin.setup_canopsis().await.unwrap();
    assert!(admin.bound_queues().await.unwrap().contains(&"Engine_che".to_owned()));
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    let (step, loaded, _) = steprun::load(&sandbox, "canopsis-3.39.0", "3.39.0/unbind-che").unwrap();
    let s = setting(dir.path(), "3.38.0", "3.39.0", &[]);
    let (first, audit) = steprun::run(&sandbox, &loaded, &step, dir.path(), &dir.path().join("state"), &s).await;
    assert_eq!(first.result, Ok(()), "{}", first.stderr.text());
    assert!(!admin.bound_queues().await.unwrap().contains(&"Engine_che".to_owned()), "still bound");
    assert!(audit.iter().any(|r| r.args["method"] == "DELETE" && r.decision == Decision::Allowed));
    let (second, audit) = steprun::run(&sandbox, &loaded, &step, dir.path(), &dir.path().join("state"), &s).await;
    assert_eq!(second.result, Ok(()));
    assert!(!audit.iter().any(|r| r.args["method"] == "DELETE"), "the second run deleted something: {audit:#?}");
    admin.bind_che().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_a_consumer_to_empty_a_backlog_of_10000_messages() {
    let _one = BROKER.lock().await;
    let admin = Admin::new();
    admin.setup_canopsis().await.unwrap();
    admin.purge().await.unwrap();
    admin.publish("Engine_axe", 10_000).await.unwrap();
    // The queue statistics the step reads lag a little behind publishing.
    admin.wait_for_messages("Engine_axe", 10_000).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    let (step, loaded, _) = steprun::load(&sandbox, "drain", "drain/queues").unwrap();
    let s = setting(dir.path(), "3.39.0", "3.40.0", &[("drain_timeout_seconds", "120"), ("drain_poll_ms", "300"), ("drain_stats_interval_ms", "100")]);
    let consumer = tokio::spawn(async move {
        let admin = Admin::new();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut taken = 0;
        while taken < 10_000 {
            let n = admin.consume("Engine_axe", 1000).await.unwrap();
            taken += n;
            if n == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        taken
    });
    let (report, audit) = steprun::run(&sandbox, &loaded, &step, dir.path(), &dir.path().join("state"), &s).await;
    assert_eq!(consumer.await.unwrap(), 10_000);
    assert_eq!(report.result, Ok(()), "{}", report.stderr.text());
    assert!(audit.iter().filter(|r| r.capability == "http").count() >= 2, "the step polled more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_times_out_naming_the_loaded_queues() {
    let _one = BROKER.lock().await;
    let admin = Admin::new();
    admin.setup_canopsis().await.unwrap();
    admin.purge().await.unwrap();
    admin.publish("Engine_axe", 5).await.unwrap();
    admin.wait_for_messages("Engine_axe", 5).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    let (step, loaded, _) = steprun::load(&sandbox, "drain", "drain/queues").unwrap();
    let s = setting(dir.path(), "3.39.0", "3.40.0", &[("drain_timeout_seconds", "2"), ("drain_poll_ms", "500"), ("drain_stats_interval_ms", "100")]);
    let (report, _) = steprun::run(&sandbox, &loaded, &step, dir.path(), &dir.path().join("state"), &s).await;
    let err = report.result.unwrap_err().to_string();
    assert!(err.contains("did not drain within 2 s: Engine_axe (5 messages)"), "{err}");
    admin.purge().await.unwrap();
}

/// A restarted broker lists its queues without counts for a while (one statistics interval):
/// the drain check must take that for "not known yet", never for empty, and keep waiting with
/// the whole backlog still queued. Its own broker, with RabbitMQ's default interval (5 s),
/// since the shared one serves other tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_waiting_when_a_restarted_broker_does_not_know_its_counts_yet() {
    let broker = tokio::task::spawn_blocking(|| Broker::start_in(&canup_tests::rabbitmq::broker_dir("canup-drain"), "canup-drain", 5674, 15674, 5000))
        .await
        .unwrap()
        .unwrap();
    let admin = Admin::at(&broker.management_url());
    admin.setup_canopsis().await.unwrap();
    admin.publish("Engine_axe", 20_000).await.unwrap();
    admin.wait_for_messages("Engine_axe", 20_000).await.unwrap();
    let broker = tokio::task::spawn_blocking(move || {
        broker.stop_app().unwrap();
        broker.start_app().unwrap();
        broker
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    let (step, loaded, _) = steprun::load(&sandbox, "drain", "drain/queues").unwrap();
    let mut s = setting(dir.path(), "3.39.0", "3.40.0", &[("drain_timeout_seconds", "3"), ("drain_poll_ms", "50"), ("drain_stats_interval_ms", "5000")]);
    s.endpoints.insert("rabbitmq".into(), endpoint(&broker.management_url(), USER, &dir.path().join("drain.pw"), PASSWORD));
    let (report, audit) = steprun::run(&sandbox, &loaded, &step, dir.path(), &dir.path().join("state"), &s).await;
    let err = report.result.expect_err("the step declared a backlog of 20,000 messages drained").to_string();
    assert!(err.contains("did not drain within 3 s") && err.contains("Engine_axe ("), "{err}");
    assert!(err.contains("check the engines (canoctl status)"), "the advice names the packages' tool: {err}");
    assert!(audit.iter().filter(|r| r.capability == "http").count() > 5, "the step kept polling");
    // Nothing was lost: the backlog is still queued.
    admin.wait_for_messages("Engine_axe", 20_000).await.unwrap();
    drop(broker);
}

/// A broker of its own with RabbitMQ's default statistics interval (5 s), the Canopsis
/// setup, and 200 messages in `Engine_axe` that its statistics show.
async fn broker_with_a_backlog(name: &'static str, amqp: u16, management: u16) -> (Broker, Admin) {
    let broker =
        tokio::task::spawn_blocking(move || Broker::start_in(&canup_tests::rabbitmq::broker_dir(name), name, amqp, management, 5000)).await.unwrap().unwrap();
    let admin = Admin::at(&broker.management_url());
    admin.setup_canopsis().await.unwrap();
    admin.publish("Engine_axe", 200).await.unwrap();
    admin.wait_for_messages("Engine_axe", 200).await.unwrap();
    (broker, admin)
}

/// What the management API says `Engine_axe` holds now.
async fn shown(admin: &Admin) -> Option<u64> {
    let v: serde_json::Value = admin.call(reqwest::Method::GET, "/api/queues/canopsis/Engine_axe", None).await.unwrap().json().await.unwrap();
    v["messages"].as_u64()
}

/// The outside tester's case: a consumer empties the backlog, and `refill_after` the management
/// API first shows the queue empty, 5 messages arrive (and stay). The statistics show them
/// late: the queue emits its figures when it goes idle (about a second after the last
/// message) or once per interval, and the management plugin collects them once per
/// interval. The step runs with `drain_stats_interval_ms` at `setting_ms`; it must time out
/// naming the 5 messages, which the broker really holds.
async fn refill_after_the_first_empty_poll(name: &'static str, amqp: u16, management: u16, setting_ms: &str, refill_after: Duration) {
    let (broker, admin) = broker_with_a_backlog(name, amqp, management).await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    let (step, loaded, _) = steprun::load(&sandbox, "drain", "drain/queues").unwrap();
    let mut s = setting(dir.path(), "3.39.0", "3.40.0", &[("drain_timeout_seconds", "25"), ("drain_poll_ms", "200"), ("drain_stats_interval_ms", setting_ms)]);
    s.endpoints.insert("rabbitmq".into(), endpoint(&broker.management_url(), USER, &dir.path().join("drain.pw"), PASSWORD));
    let url = broker.management_url();
    let refill = tokio::spawn(async move {
        let admin = Admin::at(&url);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(admin.consume("Engine_axe", 1000).await.unwrap(), 200);
        while shown(&admin).await != Some(0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(refill_after).await;
        admin.publish("Engine_axe", 5).await.unwrap();
        std::time::Instant::now()
    });
    let (report, audit) = steprun::run(&sandbox, &loaded, &step, dir.path(), &dir.path().join("state"), &s).await;
    let refilled_at = refill.await.unwrap();
    eprintln!("the refill was published {:.1} s before the step ended", refilled_at.elapsed().as_secs_f64());
    let err = report.result.expect_err("the step declared the queues empty with 5 messages waiting").to_string();
    assert!(err.contains("did not drain within 25 s: Engine_axe (5 messages)"), "{err}");
    assert!(audit.iter().all(|r| r.capability != "http" || r.args.to_string().contains("/api/queues/canopsis")), "only the queues were read");
    // The broker really holds them: taken off the queue, they are 5.
    assert_eq!(admin.consume("Engine_axe", 1000).await.unwrap(), 5);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_not_fooled_by_a_refill_at_the_first_empty_poll() {
    refill_after_the_first_empty_poll("canup-refill", 5675, 15675, "5000", Duration::ZERO).await;
}

/// The refill 4.6 s after the first empty reading, with a 5 s interval: the queue's figures
/// that show it are emitted just after one collection and collected at the next, about 10 s
/// after the first empty reading, so a confirming poll one interval after it reads a stale
/// zero (what the step did before: it declared the queues empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_not_fooled_by_a_refill_the_statistics_show_after_one_interval() {
    refill_after_the_first_empty_poll("canup-refill-late", 5677, 15677, "5000", Duration::from_millis(4600)).await;
}

type Seen = Arc<Mutex<Vec<(String, String, Option<String>, String)>>>;

async fn fake_canopsis_api() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let handler = move |method: HttpMethod, uri: Uri, headers: HeaderMap, body: String| {
        let log = log.clone();
        async move {
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
            log.lock().unwrap().push((method.to_string(), uri.path().to_owned(), auth.clone(), body));
            if auth.as_deref() != Some("Basic cm9vdDpyb290cHc=") {
                return StatusCode::UNAUTHORIZED.into_response();
            }
            match method {
                HttpMethod::GET => r#"{"data":[{"_id":"b-42","message":"Upgrade tonight"},{"_id":"other","message":"Someone else's"}]}"#.into_response(),
                _ => (StatusCode::OK, "{}").into_response(),
            }
        }
    };
    (format!("http://{}", serve(Router::new().fallback(handler)).await), seen)
}

fn api_setting(dir: &std::path::Path, url: &str, installed: &str, target: &str) -> Setting {
    let mut s = setting(dir, installed, target, &[("broadcast_message", "Upgrade tonight")]);
    s.endpoints.insert("canopsis-api".into(), endpoint(url, "root", &dir.join("api.pw"), "rootpw"));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broadcast_uses_the_api_of_the_installed_version_and_is_withdrawn_after() {
    let (url, seen) = fake_canopsis_api().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::new(None).unwrap();
    let (announce, announce_module, _) = steprun::load(&sandbox, "broadcast", "broadcast/announce").unwrap();
    let (withdraw, withdraw_module, _) = steprun::load(&sandbox, "broadcast", "broadcast/withdraw").unwrap();

    // 3.39.0 has no broadcast messages: nothing is sent.
    let (r, _) =
        steprun::run(&sandbox, &announce_module, &announce, dir.path(), &dir.path().join("s"), &api_setting(dir.path(), &url, "3.39.0", "3.40.0")).await;
    assert_eq!(r.result, Ok(()));
    assert!(seen.lock().unwrap().is_empty());

    // 3.40.0: API v2.
    let (r, _) =
        steprun::run(&sandbox, &announce_module, &announce, dir.path(), &dir.path().join("s"), &api_setting(dir.path(), &url, "3.40.0", "3.40.0")).await;
    assert_eq!(r.result, Ok(()), "{}", r.stderr.text());
    // 4.5.4: API v4, then withdrawn after the upgrade to 4.5.7.
    let (r, _) = steprun::run(&sandbox, &announce_module, &announce, dir.path(), &dir.path().join("s"), &api_setting(dir.path(), &url, "4.5.4", "4.5.7")).await;
    assert_eq!(r.result, Ok(()));
    let (r, _) = steprun::run(&sandbox, &withdraw_module, &withdraw, dir.path(), &dir.path().join("s"), &api_setting(dir.path(), &url, "4.5.4", "4.5.7")).await;
    assert_eq!(r.result, Ok(()), "{}", r.stderr.text());

    let seen = seen.lock().unwrap().clone();
    let calls: Vec<(&str, &str)> = seen.iter().map(|(m, p, _, _)| (m.as_str(), p.as_str())).collect();
    assert_eq!(
        calls,
        [
            ("POST", "/api/v2/broadcast-message"),
            ("POST", "/api/v4/broadcast-message"),
            ("GET", "/api/v4/broadcast-message"),
            ("DELETE", "/api/v4/broadcast-message/b-42"),
        ]
    );
    assert!(seen.iter().all(|(_, _, auth, _)| auth.as_deref() == Some("Basic cm9vdDpyb290cHc=")), "credentials injected by canup");
    let body: serde_json::Value = serde_json::from_str(&seen[1].3).unwrap();
    assert_eq!(body["message"], "Upgrade tonight");
    assert_eq!(body["color"], "#e75e40");
    assert_eq!(body["end"].as_u64().unwrap() - body["start"].as_u64().unwrap(), 3600);
}
