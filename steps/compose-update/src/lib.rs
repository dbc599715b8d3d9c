//! The standard Docker Compose update (`mise-a-jour.md`, « Mise à jour en environnement
//! Docker Compose »), shipped with every 3.x and 4.x release: « resynchronisez l'ensemble de
//! vos fichiers Docker Compose avec les fichiers de référence correspondant à la version
//! voulue », then « `docker-compose up -d` ».
//!
//! The reference files of the target version travel with the release as signed data
//! (`compose/docker-compose.yml`, `compose/.env`). Every file that differs is replaced (canup
//! keeps the operator's previous file as a backup, see `canup restore-files`); the `.env` is
//! merged instead: the operator's values stay, except the image tags (`*_TAG`), which are the
//! release's to set. A release without reference files gets the image tag only.

use canup_sdk::{Context, Result, context, exec::Command, fs, helpers, ui};

canup_sdk::export_step!(compose_update);

const COMPOSE_DIR: &str = "/opt/canopsis/docker";
const REFERENCE_PREFIX: &str = "compose/";

/// Keys of the Compose `.env` a release sets: the image tags.
fn release_owned(key: &str) -> bool {
    key.ends_with("_TAG")
}

fn compose_update(ctx: &Context) -> Result<()> {
    let references: Vec<String> = context::data_files().into_iter().filter(|n| n.starts_with(REFERENCE_PREFIX)).collect();
    if references.is_empty() {
        ui::warn(&format!("release {} ships no reference Compose files; only CANOPSIS_IMAGE_TAG is updated", ctx.release));
        helpers::set_env_value(&format!("{COMPOSE_DIR}/.env"), "CANOPSIS_IMAGE_TAG", &ctx.target.to_string())?;
    }
    for name in &references {
        let file = &name[REFERENCE_PREFIX.len()..];
        let path = format!("{COMPOSE_DIR}/{file}");
        let reference = String::from_utf8(context::data(name)?).map_err(|_| canup_sdk::Error::msg(format!("reference file {name} is not UTF-8")))?;
        let current = if fs::exists(&path)? { Some(fs::read_to_string(&path)?) } else { None };
        let wanted = match (&current, file) {
            (Some(operator), ".env") => helpers::merge_env_text(operator, &reference, release_owned),
            _ => reference,
        };
        if current.as_deref() == Some(wanted.as_str()) {
            ui::info(&format!("{path} already matches the {} reference", ctx.release));
            continue;
        }
        fs::write(&path, &wanted)?;
        ui::info(&format!("{path} resynchronised with the {} reference (previous file backed up)", ctx.release));
    }
    Command::new("/usr/bin/docker-compose").args(["up", "-d"]).cwd(COMPOSE_DIR).run()?;
    Ok(())
}
