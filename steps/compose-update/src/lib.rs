//! The standard Docker Compose update (`mise-a-jour.md`, « Mise à jour en environnement
//! Docker Compose »), shipped with every 3.x and 4.x release: the image tag of the target
//! version goes into the Compose `.env`, keeping every other value of the operator's file, then
//! « `docker-compose up -d` ».
//!
//! Not yet: resynchronising the Compose files themselves with the target's reference files
//! (to be carried in the repository as signed data).

use canup_sdk::{Context, Result, exec::Command, fs};

canup_sdk::export_step!(compose_update);

const COMPOSE_ENV: &str = "/opt/canopsis/docker/.env";

/// Only the image tag changes; every other value of the operator's .env is kept.
fn set_env_value(env: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let mut out: Vec<String> = env
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k, _)) if k.trim() == key => {
                found = true;
                format!("{key}={value}")
            }
            _ => l.to_owned(),
        })
        .collect();
    if !found {
        out.push(format!("{key}={value}"));
    }
    out.join("\n") + "\n"
}

fn compose_update(ctx: &Context) -> Result<()> {
    let env = fs::read_to_string(COMPOSE_ENV)?;
    let updated = set_env_value(&env, "CANOPSIS_IMAGE_TAG", &ctx.target.to_string());
    if updated != env {
        fs::write(COMPOSE_ENV, updated)?;
    }
    Command::new("/usr/bin/docker-compose").args(["up", "-d"]).cwd("/opt/canopsis/docker").run()?;
    Ok(())
}
