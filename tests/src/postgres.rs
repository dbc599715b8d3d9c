//! A real PostgreSQL server on 127.0.0.1 for the steps that run SQL (24.04.3's
//! `perf_data_name` migration), on a port of its own, in a directory of its own; stopped and
//! removed when dropped. Debian's `postgresql` package (installed by `cargo xtask test`).
//!
//! It asks for passwords (scram-sha-256) on TCP, as a Canopsis host's does: a test passes
//! only if canup hands the password to `psql` itself.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The role and database of a Canopsis installation (`CPS_POSTGRES_URL` of its
/// go-engines-vars.conf).
pub const USER: &str = "cpspostgres";
/// Not the vendor's default (`canopsis`, all over a simulated host's files): a test that finds
/// it in a step's output knows where it came from.
pub const PASSWORD: &str = "pg-Secr3t-95x";
pub const DATABASE: &str = "canopsis";

/// What 23.x's PostgreSQL migration 12 leaves, as far as 24.04.3's migration reads it: the
/// perf_data table (a TimescaleDB hypertable on a real host) and the materialized view of its
/// names with its unique index. Three points of two metrics.
pub const BEFORE_24_04_3: &str = "
CREATE TABLE perf_data (time TIMESTAMP NOT NULL, entity_id VARCHAR(500) NOT NULL, name VARCHAR(255) NOT NULL, value DOUBLE PRECISION NOT NULL, unit VARCHAR(5) NOT NULL);
INSERT INTO perf_data VALUES ('2024-10-01 10:00', 'e1', 'cpu', 12, '%'), ('2024-10-01 11:00', 'e1', 'cpu', 15, '%'), ('2024-10-01 10:00', 'e2', 'mem', 100, 'MB');
CREATE MATERIALIZED VIEW perf_data_name AS SELECT name, unit FROM perf_data GROUP BY name, unit;
CREATE UNIQUE INDEX perf_data_name_name_idx ON perf_data_name (name);
";

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

/// The server's programs: Debian keeps them out of PATH, under the major version.
fn bin_dir() -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL's server is not installed (apt-get install postgresql; cargo xtask test does)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").is_file())
        .collect();
    found.sort();
    found.pop().context("no /usr/lib/postgresql/*/bin/initdb (apt-get install postgresql)")
}

/// A command run as the `postgres` user when canup's tests run as root (the server refuses
/// root), as the current user otherwise.
fn as_server_user(program: &Path) -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) -> Result<String> {
    let out = c.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Postgres {
    /// A new server with the Canopsis role and database.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("canup-pg-").tempdir()?;
        if nix::unistd::geteuid().is_root() {
            let pg = nix::unistd::User::from_name("postgres")?.context("no postgres user (apt-get install postgresql)")?;
            nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid))?;
        }
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "superuser-secret\n")?;
        if nix::unistd::geteuid().is_root() {
            let pg = nix::unistd::User::from_name("postgres")?.context("no postgres user")?;
            nix::unistd::chown(&pwfile, Some(pg.uid), Some(pg.gid))?;
        }
        let mut init = as_server_user(&bin.join("initdb"));
        init.args(["-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
            .arg("--pwfile")
            .arg(&pwfile)
            .arg("-D")
            .arg(&data);
        run(init, "initdb")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut ctl = as_server_user(&bin.join("pg_ctl"));
        let opts = format!("-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off", dir.path().display());
        ctl.arg("-D").arg(&data).args(["-o", &opts, "-w", "-t", "60", "-l"]).arg(dir.path().join("log")).arg("start").stdout(Stdio::null());
        run(ctl, "pg_ctl start")?;
        let pg = Self { port, dir, bin };
        pg.superuser(&format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"), "postgres")?;
        pg.superuser(&format!("CREATE DATABASE {DATABASE} OWNER {USER}"), "postgres")?;
        let start = Instant::now();
        while pg.sql("SELECT 1").map(|o| o.trim() != "1").unwrap_or(true) {
            if start.elapsed() > Duration::from_secs(20) {
                bail!("PostgreSQL on port {port} does not accept {USER}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(pg)
    }

    /// `postgresql://cpspostgres:PASSWORD@127.0.0.1:PORT/canopsis`, as `CPS_POSTGRES_URL`
    /// names it.
    pub fn url(&self) -> String {
        self.url_of(DATABASE)
    }

    pub fn url_of(&self, database: &str) -> String {
        format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{}/{database}", self.port)
    }

    /// A new database owned by the Canopsis role (one per simulated host); its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        self.superuser(&format!("CREATE DATABASE {name} OWNER {USER}"), "postgres")?;
        Ok(self.url_of(name))
    }

    /// SQL as the superuser over the server's socket (the fixture's own setup).
    fn superuser(&self, sql: &str, db: &str) -> Result<String> {
        let mut c = as_server_user(&self.bin.join("psql"));
        c.arg("-h").arg(self.dir.path()).args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db, "-XAtqv", "ON_ERROR_STOP=1", "-c", sql]);
        run(c, &format!("psql -c {sql:?}"))
    }

    /// SQL as the Canopsis role, over TCP with its password: its unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.sql_in(DATABASE, sql)
    }

    pub fn sql_in(&self, database: &str, sql: &str) -> Result<String> {
        let mut c = Command::new(self.bin.join("psql"));
        c.args(["-XAtqv", "ON_ERROR_STOP=1", "-c", sql, &self.url_of(database)]);
        run(c, &format!("psql -c {sql:?}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut ctl = as_server_user(&self.bin.join("pg_ctl"));
        ctl.arg("-D").arg(self.dir.path().join("data")).args(["-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = ctl.status();
    }
}
