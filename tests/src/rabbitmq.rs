//! The real RabbitMQ the tests and the demo talk to: `rabbitmq-server` from Debian, started by
//! `cargo xtask test` / `cargo xtask demo` (see `xtask`), with the management plugin on
//! 127.0.0.1:15672. This module sets it up as Canopsis does: vhost `canopsis`, user
//! `cpsrabbit`, exchange `canopsis.events`, queues `Engine_che`, `Engine_axe`, … and
//! `Engine_che` bound to the exchange.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

pub const MANAGEMENT: &str = "http://127.0.0.1:15672";
pub const USER: &str = "cpsrabbit";
pub const PASSWORD: &str = "canopsis";
pub const QUEUES: &[&str] = &["Engine_che", "Engine_axe", "Engine_fifo"];

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

/// Whether something accepts connections on 127.0.0.1:`port` (a broker's management API).
pub fn management_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A `rabbitmq-server` node (Debian's) on 127.0.0.1 with the management plugin, its files
/// under `target/rabbitmq-NAME` (`target/rabbitmq` for the shared one). Stopped when dropped.
///
/// The shared broker of a test run is started by `cargo xtask test`; a test that stops a
/// broker under a running canup starts its own node beside it on other ports.
pub struct Broker {
    node: String,
    env: Vec<(&'static str, PathBuf)>,
    child: Option<Child>,
    management: u16,
}

impl Broker {
    /// Starts node `NAME@localhost` with AMQP on `amqp` and the management API on `management`,
    /// from an empty data directory, and waits until the management API answers.
    pub fn start(name: &str, amqp: u16, management: u16) -> Result<Self> {
        Self::start_with_interval(name, amqp, management, STATS_INTERVAL_MS)
    }

    /// [`Broker::start`] with the statistics interval of the management API
    /// (`collect_statistics_interval`, ms; RabbitMQ's default is 5000).
    pub fn start_with_interval(name: &str, amqp: u16, management: u16, stats_interval_ms: u64) -> Result<Self> {
        let dir = crate::target_dir().join(if name == "canup" { "rabbitmq".to_owned() } else { format!("rabbitmq-{name}") });
        let node = format!("{name}@localhost");
        let env = vec![
            ("RABBITMQ_NODENAME", PathBuf::from(&node)),
            ("RABBITMQ_MNESIA_BASE", dir.join("mnesia")),
            ("RABBITMQ_LOG_BASE", dir.join("log")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins")),
            ("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq")),
            ("RABBITMQ_FEATURE_FLAGS_FILE", dir.join("feature_flags")),
            ("RABBITMQ_PID_FILE", dir.join("pid")),
            // Erlang distribution; by default AMQP's port + 20000 of the *default* AMQP port.
            ("RABBITMQ_DIST_PORT", PathBuf::from((u32::from(amqp) + 20000).to_string())),
            ("HOME", dir.clone()),
        ];
        let mut broker = Self { node, env, child: None, management };
        if broker.listening() {
            bail!("something already answers on 127.0.0.1:{management}; stop it or use it");
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("cleaning {}", dir.display()))?;
        }
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("enabled_plugins"), "[rabbitmq_management].\n")?;
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\nmanagement.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {management}\ncollect_statistics_interval = {stats_interval_ms}\n"
            ),
        )?;
        // Debian's wrapper drops to the rabbitmq user when started as root.
        let _ = Command::new("chown").args(["-R", "rabbitmq:rabbitmq"]).arg(&dir).status();
        let log = std::fs::File::create(dir.join("server.out"))?;
        let child = Command::new("rabbitmq-server")
            .envs(broker.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting rabbitmq-server")?;
        broker.child = Some(child);
        let started = Instant::now();
        while !broker.listening() {
            if let Some(status) = broker.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                broker.child = None;
                let out = std::fs::read_to_string(dir.join("server.out")).unwrap_or_default();
                let tail: Vec<&str> = out.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("rabbitmq-server {name} exited ({status}) before opening 127.0.0.1:{management}:\n{}", tail.join("\n"));
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!("rabbitmq-server {name} did not open 127.0.0.1:{management} within 90 s; see {}", dir.join("server.out").display());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("rabbitmq-server {name} up in {:.1} s", started.elapsed().as_secs_f64());
        Ok(broker)
    }

    /// Whether the management API accepts connections.
    pub fn listening(&self) -> bool {
        management_answers(self.management)
    }

    pub fn management_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.management)
    }

    fn ctl(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("rabbitmqctl")
            .args(["-n", &self.node])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("running rabbitmqctl")?;
        if !out.status.success() {
            bail!("rabbitmqctl -n {} {}: {}{}", self.node, args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// Stops RabbitMQ on the node (AMQP and management close; the Erlang node stays), as
    /// `systemctl stop rabbitmq-server` leaves a Canopsis host without a broker.
    pub fn stop_app(&self) -> Result<()> {
        self.ctl(&["stop_app"])?;
        let start = Instant::now();
        while self.listening() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!("the management API of {} still answers after stop_app", self.node);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Starts RabbitMQ again on the node and waits for the management API.
    pub fn start_app(&self) -> Result<()> {
        self.ctl(&["start_app"])?;
        let start = Instant::now();
        while !self.listening() {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the management API of {} did not come back after start_app", self.node);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.ctl(&["stop"]).is_err() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
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
