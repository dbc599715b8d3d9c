//! A private RabbitMQ node for the simulated host: Debian's `rabbitmq-server` on loopback
//! ports of its own, with the management plugin and Canopsis's vhost, user, exchange and
//! queues. The tests start theirs with it; step authors with `canup-sim rabbitmq`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Canopsis's RabbitMQ user and its password (`CPS_AMQP_URL` of go-engines-vars.conf).
pub const USER: &str = "cpsrabbit";
pub const PASSWORD: &str = "canopsis";
pub const QUEUES: &[&str] = &["Engine_che", "Engine_axe", "Engine_fifo"];

/// Whether something accepts connections on 127.0.0.1:`port` (a broker's management API).
pub fn management_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A `rabbitmq-server` node (Debian's) on 127.0.0.1 with the management plugin, its files in a
/// directory of its own. Stopped when dropped.
///
/// The shared broker of a test run is started by `cargo xtask test`; a test that stops a
/// broker under a running canup starts its own node beside it on other ports; a step author
/// starts one with `canup-sim rabbitmq`.
pub struct Broker {
    node: String,
    env: Vec<(&'static str, PathBuf)>,
    child: Option<Child>,
    management: u16,
}

impl Broker {
    /// Starts node `NAME@localhost` in `dir` (emptied first) with AMQP on `amqp`, the
    /// management API on `management` and its statistics every `stats_interval_ms`
    /// (`collect_statistics_interval`; RabbitMQ's default is 5000), and waits until the
    /// management API answers.
    pub fn start_in(dir: &Path, name: &str, amqp: u16, management: u16, stats_interval_ms: u64) -> Result<Self> {
        let dir = dir.to_path_buf();
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
            // Past 65535 (an ephemeral AMQP port), a free port of its own.
            ("RABBITMQ_DIST_PORT", PathBuf::from(dist_port(amqp)?.to_string())),
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

/// The node's Erlang distribution port: AMQP's + 20000 as RabbitMQ's own convention, or a free
/// one when that is not a port.
fn dist_port(amqp: u16) -> Result<u16> {
    match u16::try_from(u32::from(amqp) + 20000) {
        Ok(p) => Ok(p),
        Err(_) => Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()),
    }
}

impl Broker {
    /// Vhost `canopsis`, user [`USER`], exchange `canopsis.events`, queues [`QUEUES`] and
    /// `Engine_che` bound to the exchange, as a Canopsis install has them (rabbitmqctl and the
    /// management plugin's rabbitmqadmin). Idempotent.
    pub fn setup_canopsis(&self) -> Result<()> {
        self.ctl(&["add_vhost", "canopsis"]).or_else(|e| if e.to_string().contains("already exists") { Ok(()) } else { Err(e) })?;
        if self.ctl(&["add_user", USER, PASSWORD]).is_err() {
            self.ctl(&["change_password", USER, PASSWORD])?;
        }
        self.ctl(&["set_user_tags", USER, "administrator"])?;
        for user in [USER, "guest"] {
            self.ctl(&["set_permissions", "-p", "canopsis", user, ".*", ".*", ".*"])?;
        }
        self.admin(&["declare", "exchange", "name=canopsis.events", "type=topic", "durable=true"])?;
        for q in QUEUES {
            self.admin(&["declare", "queue", &format!("name={q}"), "durable=true"])?;
        }
        self.admin(&["declare", "binding", "source=canopsis.events", "destination=Engine_che", "routing_key=#"])
    }

    fn admin(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("rabbitmqadmin")
            .args(["-H", "127.0.0.1", "-P", &self.management.to_string(), "-u", "guest", "-p", "guest", "-V", "canopsis"])
            .args(args)
            .output()
            .context("running rabbitmqadmin (Debian's rabbitmq-server package ships it)")?;
        if !out.status.success() {
            bail!("rabbitmqadmin {}: {}{}", args.join(" "), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// The `[endpoints.rabbitmq]` of canup.toml for this broker, with the password in `secret`.
    pub fn endpoint_toml(&self, secret: &Path) -> Result<String> {
        std::fs::write(secret, format!("{PASSWORD}\n"))?;
        Ok(format!("[endpoints.rabbitmq]\nurl = \"{}\"\nusername = \"{USER}\"\npassword_file = \"{}\"\n", self.management_url(), secret.display()))
    }
}
