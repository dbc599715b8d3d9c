//! The real RabbitMQ the tests and the demo talk to: `rabbitmq-server` from Debian, started by
//! `cargo xtask test` / `cargo xtask demo` (see `xtask`), with the management plugin on
//! 127.0.0.1:15672. This module sets it up as Canopsis does: vhost `canopsis`, user
//! `cpsrabbit`, exchange `canopsis.events`, queues `Engine_che`, `Engine_axe`, … and
//! `Engine_che` bound to the exchange.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::json;

pub const MANAGEMENT: &str = "http://127.0.0.1:15672";
pub use canup_sim::rabbitmq::{PASSWORD, QUEUES, USER};

/// The management API as the broker's administrator (the default `guest`, loopback only).
pub struct Admin {
    client: reqwest::Client,
    base: String,
}

impl Admin {
    /// The shared broker of the test run.
    pub fn new() -> Self {
        Self::at(MANAGEMENT)
    }

    /// Another broker's management API (a [`Broker`] of one test).
    pub fn at(base: &str) -> Self {
        Self { client: reqwest::Client::new(), base: base.to_owned() }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> Result<reqwest::Response> {
        let base = &self.base;
        let mut req = self.client.request(method.clone(), format!("{base}{path}")).basic_auth("guest", Some("guest"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!("RabbitMQ management API at {base} is not reachable: run the tests with `cargo xtask test`, which starts rabbitmq-server")
        })?;
        if !resp.status().is_success() && resp.status() != reqwest::StatusCode::NOT_FOUND {
            bail!("{method} {path}: HTTP {}", resp.status());
        }
        Ok(resp)
    }

    /// A PUT, retried: the broker answers 400 to a declaration that races another one.
    async fn put(&self, path: &str, body: serde_json::Value) -> Result<()> {
        let mut last = None;
        for _ in 0..5 {
            match self.call(reqwest::Method::PUT, path, Some(body.clone())).await {
                Ok(_) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("PUT {path} failed")))
    }

    /// [`Admin::setup_canopsis`] once per process (tests of one binary share the broker).
    pub async fn setup_canopsis_once(&self) -> Result<()> {
        static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
        DONE.get_or_try_init(|| self.setup_canopsis()).await.map(|_| ())
    }

    /// Vhost, user, exchange, queues and the `Engine_che` binding, as a Canopsis install has
    /// them. Idempotent.
    pub async fn setup_canopsis(&self) -> Result<()> {
        self.put("/api/vhosts/canopsis", json!({})).await?;
        // The administrator's own rights on the new vhost (not always granted by the time a
        // concurrent setup uses them).
        self.put("/api/permissions/canopsis/guest", json!({ "configure": ".*", "write": ".*", "read": ".*" })).await?;
        self.put(&format!("/api/users/{USER}"), json!({ "password": PASSWORD, "tags": "administrator" })).await?;
        self.put(&format!("/api/permissions/canopsis/{USER}"), json!({ "configure": ".*", "write": ".*", "read": ".*" })).await?;
        self.put("/api/exchanges/canopsis/canopsis.events", json!({ "type": "topic", "durable": true })).await?;
        for q in QUEUES {
            self.put(&format!("/api/queues/canopsis/{q}"), json!({ "durable": true })).await?;
        }
        self.bind_che().await
    }

    pub async fn bind_che(&self) -> Result<()> {
        self.call(reqwest::Method::POST, "/api/bindings/canopsis/e/canopsis.events/q/Engine_che", Some(json!({ "routing_key": "#" }))).await.map(|_| ())
    }

    /// Removes every binding of `Engine_che` to `canopsis.events` (what 3.39.0 does).
    pub async fn unbind_che(&self) -> Result<()> {
        let v: serde_json::Value = self.call(reqwest::Method::GET, "/api/bindings/canopsis/e/canopsis.events/q/Engine_che", None).await?.json().await?;
        for b in v.as_array().cloned().unwrap_or_default() {
            let key = b["properties_key"].as_str().unwrap_or("~");
            self.call(reqwest::Method::DELETE, &format!("/api/bindings/canopsis/e/canopsis.events/q/Engine_che/{key}"), None).await?;
        }
        Ok(())
    }

    /// Destinations bound to `canopsis.events`.
    pub async fn bound_queues(&self) -> Result<Vec<String>> {
        let v: serde_json::Value = self.call(reqwest::Method::GET, "/api/exchanges/canopsis/canopsis.events/bindings/source", None).await?.json().await?;
        Ok(v.as_array().cloned().unwrap_or_default().iter().filter_map(|b| b["destination"].as_str().map(str::to_owned)).collect())
    }

    /// Publishes `count` persistent messages to a queue (through the default exchange), 16 at a
    /// time.
    pub async fn publish(&self, queue: &str, count: usize) -> Result<()> {
        use futures_util::StreamExt;
        // Persistent, as Canopsis' events are: they survive a restart of the broker.
        let body = json!({ "properties": { "delivery_mode": 2 }, "routing_key": queue, "payload": "{\"event_type\":\"check\"}", "payload_encoding": "string" });
        let results: Vec<Result<()>> = futures_util::stream::iter(0..count)
            .map(|_| {
                let body = body.clone();
                async move { self.call(reqwest::Method::POST, "/api/exchanges/canopsis/amq.default/publish", Some(body)).await.map(|_| ()) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// Takes up to `count` messages off a queue (acknowledged): a consumer catching up.
    pub async fn consume(&self, queue: &str, count: usize) -> Result<usize> {
        let v: serde_json::Value = self
            .call(
                reqwest::Method::POST,
                &format!("/api/queues/canopsis/{queue}/get"),
                Some(json!({ "count": count, "ackmode": "ack_requeue_false", "encoding": "auto" })),
            )
            .await?
            .json()
            .await?;
        Ok(v.as_array().map_or(0, Vec::len))
    }

    /// Waits until the management statistics (refreshed every few seconds) show `count`
    /// messages in `queue`: what the drain step reads.
    pub async fn wait_for_messages(&self, queue: &str, count: u64) -> Result<()> {
        let start = std::time::Instant::now();
        loop {
            let v: serde_json::Value = self.call(reqwest::Method::GET, &format!("/api/queues/canopsis/{queue}"), None).await?.json().await?;
            if v["messages"].as_u64() == Some(count) {
                return Ok(());
            }
            if start.elapsed() > std::time::Duration::from_secs(60) {
                bail!("RabbitMQ statistics never showed {count} messages in {queue}: {v}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    pub async fn purge(&self) -> Result<()> {
        for q in QUEUES {
            self.call(reqwest::Method::DELETE, &format!("/api/queues/canopsis/{q}/contents"), None).await?;
        }
        Ok(())
    }
}

impl Default for Admin {
    fn default() -> Self {
        Self::new()
    }
}

pub use canup_sim::rabbitmq::{Broker, management_answers};

/// Where a broker of the tests keeps its files: `target/rabbitmq-NAME` (`target/rabbitmq` for
/// the shared one).
pub fn broker_dir(name: &str) -> PathBuf {
    crate::target_dir().join(if name == "canup" { "rabbitmq".to_owned() } else { format!("rabbitmq-{name}") })
}

/// A broker of the tests: [`Broker::start_in`] under [`broker_dir`], with the tests'
/// statistics interval.
pub fn start_broker(name: &str, amqp: u16, management: u16) -> Result<Broker> {
    Broker::start_in(&broker_dir(name), name, amqp, management, STATS_INTERVAL_MS)
}

/// The test brokers' `collect_statistics_interval` (RabbitMQ's default is 5000 ms): the drain
/// check waits one interval between its two empty polls, and site configs say so
/// (`drain_stats_interval_ms`).
pub const STATS_INTERVAL_MS: u64 = 100;

/// The `[endpoints.rabbitmq]` of canup.toml for this broker, with the password in `secret`.
pub fn endpoint_toml(secret: &Path) -> Result<String> {
    std::fs::write(secret, format!("{PASSWORD}\n"))?;
    Ok(format!("[endpoints.rabbitmq]\nurl = \"{MANAGEMENT}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n", secret.display()))
}
