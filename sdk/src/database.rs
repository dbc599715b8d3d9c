//! Scripts on the installation's databases, by endpoint: `postgres` (`CPS_POSTGRES_URL`),
//! `postgres-tech`, `mongo` (`CPS_MONGO_URL`), `redis` (`CPS_REDIS_URL`).
//!
//! canup finds the URL and the password and gives them to the client program itself; the step
//! never holds them, so it never puts them on a command line. Declare each endpoint in the
//! step's capabilities (`[[step.capabilities.database]] endpoint = "postgres"`, with
//! `write = true` for scripts that change data). Ship a script with the step (a `const`, or a
//! data file of the release): it is signed with it and shown whole in the dry run. Needs a 1.2
//! canup.

use std::time::Duration;

use crate::Result;
use crate::bindings::canup::step::database as wit;
use crate::exec::Output;

/// One request; [`postgres`], [`mongo`] and [`redis`] build it.
#[derive(Debug, Clone)]
pub struct Script {
    req: wit::Request,
}

impl Script {
    pub fn new(endpoint: &str, script: &str) -> Self {
        Self { req: wit::Request { endpoint: endpoint.to_owned(), script: script.to_owned(), write: true, timeout_ms: None } }
    }

    /// The script only reads: canup runs it in read-only transactions (PostgreSQL) or
    /// refuses any other than read commands (Redis), and the step needs no `write` grant.
    pub fn read_only(mut self) -> Self {
        self.req.write = false;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.req.timeout_ms = Some(timeout.as_millis().min(u32::MAX as u128) as u32);
        self
    }

    /// Runs the script and returns the client's output whatever its status.
    pub fn output(&self) -> Result<Output> {
        wit::run(&self.req).map(Output::new).map_err(|e| crate::Error::from(e).context(format!("running a script on database {}", self.req.endpoint)))
    }

    /// Runs the script and fails unless the client exits with status 0 (PostgreSQL scripts
    /// stop at their first error and change nothing then).
    pub fn run(&self) -> Result<Output> {
        let what = format!("the {} on database {}", if self.req.write { "script" } else { "query" }, self.req.endpoint);
        self.output()?.succeeded(&what)
    }
}

/// SQL on the Canopsis PostgreSQL database (TimescaleDB), run by `psql` in one transaction:
/// unaligned, tuples only, so `SELECT` results read as `value|value` lines.
pub fn postgres(sql: &str) -> Script {
    Script::new("postgres", sql)
}

/// JavaScript on the Canopsis MongoDB database, `db` connected: `mongosh` from Canopsis 24.04
/// (« les appels au shell de mongoDB via la commande `mongo` ont été remplacés par des appels
/// via la commande `mongosh` »), the legacy `mongo` shell before, whichever the host has.
pub fn mongo(javascript: &str) -> Script {
    Script::new("mongo", javascript)
}

/// Redis commands, one per line (`SELECT 11` then `FLUSHDB`), on the Canopsis Redis server.
pub fn redis(commands: &str) -> Script {
    Script::new("redis", commands)
}
