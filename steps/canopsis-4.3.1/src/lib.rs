//! Canopsis 4.3.1: purge the periodic behaviours' cache, before the update.
//!
//! The release note says: « Afin de rendre opérationnelle la mise en place du cache sur les
//! comportements périodiques, vous devez procéder préalablement à la purge du cache existant.
//! Vous devez prévoir une interruption du service afin de procéder à la mise à jour qui va
//! suivre. » Packages: `canoctl stop`, `redis-cli` / `select 11` / `flushdb`, `canoctl start`.
//! Docker Compose: `docker-compose down`, `docker-compose up -d redis`, `redis-cli` / `select
//! 11` / `flushdb` in the redis container, `docker-compose up -d`.
//!
//! « préalablement » puts the purge before the update: the engines are stopped so that none
//! fills the cache again, the database is purged, and the standard procedure that follows
//! (`canoctl restart`, or Compose's `up -d`) starts the new engines on an empty cache; the
//! note's final `canoctl start` is that restart. Redis is the `redis` database endpoint
//! (canup connects to the installation's own `CPS_REDIS_URL`); the script selects database
//! 11, never another one.

use canup_sdk::{Context, Result, database, exec::Command, helpers};

canup_sdk::export_step! {
    "4.3.1/purge-pbehavior-cache" => purge,
    "4.3.1/purge-pbehavior-cache-compose" => purge_compose,
}

/// The periodic behaviours' cache.
const CACHE_DB: u32 = 11;

fn purge(_: &Context) -> Result<()> {
    Command::new("/usr/bin/canoctl").arg("stop").run()?;
    database::redis(&format!("SELECT {CACHE_DB}\nFLUSHDB")).run()?;
    Ok(())
}

fn purge_compose(_: &Context) -> Result<()> {
    let compose = |args: &[&str]| Command::new("/usr/bin/docker-compose").args(args.iter().copied()).cwd(helpers::compose_dir()).run();
    compose(&["down"])?;
    compose(&["up", "-d", "redis"])?;
    compose(&["exec", "-T", "redis", "redis-cli", "-n", "11", "FLUSHDB"])?;
    Ok(())
}
