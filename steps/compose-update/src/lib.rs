//! The standard Docker Compose update (`mise-a-jour.md`, « Mise à jour en environnement
//! Docker Compose »), shipped with every 3.x and 4.x release: the image tag of the target
//! version goes into the Compose `.env`, keeping every other value of the operator's file, then
//! « `docker-compose up -d` ».
//!
//! Not yet: resynchronising the Compose files themselves with the target's reference files
//! (to be carried in the repository as signed data).

use canup_sdk::{Context, Result, exec::Command, helpers};

canup_sdk::export_step!(compose_update);

const COMPOSE_ENV: &str = "/opt/canopsis/docker/.env";

fn compose_update(ctx: &Context) -> Result<()> {
    // Only the image tag changes; every other value of the operator's .env is kept.
    helpers::set_env_value(COMPOSE_ENV, "CANOPSIS_IMAGE_TAG", &ctx.target.to_string())?;
    Command::new("/usr/bin/docker-compose").args(["up", "-d"]).cwd("/opt/canopsis/docker").run()?;
    Ok(())
}
