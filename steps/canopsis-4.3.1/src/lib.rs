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
//! note's final `canoctl start` is that restart. Redis is reached at the installation's own
//! `CPS_REDIS_URL` (go-engines-vars.conf) with database 11, never another one.

use canup_sdk::{Context, Error, Result, exec::Command, helpers};

canup_sdk::export_step! {
    "4.3.1/purge-pbehavior-cache" => purge,
    "4.3.1/purge-pbehavior-cache-compose" => purge_compose,
}

/// The periodic behaviours' cache.
const CACHE_DB: u32 = 11;

/// `redis://[user:password@]host:port/N` → the same server, database 11.
pub fn cache_url(redis_url: &str) -> Result<String> {
    let rest = redis_url.strip_prefix("redis://").ok_or_else(|| Error::msg(format!("CPS_REDIS_URL {redis_url:?} is not a redis:// URL")))?;
    let server = rest.split(['/', '?']).next().unwrap_or(rest);
    if server.is_empty() {
        return Err(Error::msg(format!("CPS_REDIS_URL {redis_url:?} names no server")));
    }
    Ok(format!("redis://{server}/{CACHE_DB}"))
}

fn purge(_: &Context) -> Result<()> {
    let url = cache_url(&helpers::engines_var("CPS_REDIS_URL")?)?;
    Command::new("/usr/bin/canoctl").arg("stop").run()?;
    Command::new("/usr/bin/redis-cli").args(["-u", &url, "FLUSHDB"]).run()?;
    Ok(())
}

fn purge_compose(_: &Context) -> Result<()> {
    let compose = |args: &[&str]| Command::new("/usr/bin/docker-compose").args(args.iter().copied()).cwd(helpers::compose_dir()).run();
    compose(&["down"])?;
    compose(&["up", "-d", "redis"])?;
    compose(&["exec", "-T", "redis", "redis-cli", "-n", "11", "FLUSHDB"])?;
    Ok(())
}
