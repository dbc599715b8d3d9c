//! The standard Docker Compose update (`mise-a-jour.md`, « Mise à jour en environnement
//! Docker Compose »), shipped with every release from 3.x to 23.10: « resynchronisez l'ensemble
//! de vos fichiers Docker Compose avec les fichiers de référence correspondant à la version
//! voulue », then « `docker-compose up -d` », or « `docker compose up -d` » (Compose v2) in the
//! release-23.10 text.
//!
//! The reference files of the target version travel with the release as signed data, per
//! edition: `compose/core/…` (Community) and `compose/cat/…` (Pro, which has more services),
//! `compose/…` for a file both share. Every file that differs is replaced (canup keeps the
//! operator's previous file as a backup, see `canup restore-files`), with two exceptions that
//! keep what the operator added:
//! - the `.env` is merged: the operator's values stay, except the image tags (`*_TAG`), which
//!   are the release's to set;
//! - a `docker-compose.yml` holding services or volumes the reference does not have is not
//!   replaced: nothing is changed and the operator is asked to move them to
//!   `docker-compose.override.yml`, which Compose reads on top and canup never touches.
//!
//! A release without reference files gets the image tag only.

use std::collections::BTreeSet;

use canup_sdk::{Context, Result, bail, context, exec::Command, fs, helpers, semver::Version, ui};

canup_sdk::export_step!(compose_update);

const COMPOSE_DIR: &str = "/opt/canopsis/docker";
const REFERENCE_PREFIX: &str = "compose/";
const COMPOSE_FILE: &str = "docker-compose.yml";

/// Keys of the Compose `.env` a release sets: the image tags.
fn release_owned(key: &str) -> bool {
    key.ends_with("_TAG")
}

/// The reference files for `edition`: (file name in the Compose directory, data name). An
/// edition's own file wins over the shared one of the same name.
fn references(edition: &str) -> Vec<(String, String)> {
    let names = context::data_files();
    let own = format!("{REFERENCE_PREFIX}{edition}/");
    let mut chosen: Vec<(String, String)> = names.iter().filter_map(|n| n.strip_prefix(&own).map(|f| (f.to_owned(), n.clone()))).collect();
    for name in &names {
        let Some(file) = name.strip_prefix(REFERENCE_PREFIX) else { continue };
        let per_edition = file.starts_with("core/") || file.starts_with("cat/");
        if !per_edition && !chosen.iter().any(|(f, _)| f == file) {
            chosen.push((file.to_owned(), name.clone()));
        }
    }
    chosen.sort();
    chosen
}

/// The keys of a top-level block mapping (`services:`, `volumes:`) of a Compose file in block
/// style: the lines indented one level under it.
pub fn block_keys(yaml: &str, block: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut inside = false;
    let mut indent = None;
    for line in yaml.lines() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let depth = line.len() - content.len();
        if depth == 0 {
            inside = content.trim_end() == format!("{block}:");
            indent = None;
            continue;
        }
        if !inside {
            continue;
        }
        let level = *indent.get_or_insert(depth);
        if depth == level
            && let Some((key, _)) = content.split_once(':')
        {
            keys.insert(key.trim().trim_matches(['"', '\'']).to_owned());
        }
    }
    keys
}

/// What the operator's Compose file has that the reference does not: `services.x`, `volumes.y`.
pub fn operator_additions(operator: &str, reference: &str) -> Vec<String> {
    ["services", "volumes"]
        .iter()
        .flat_map(|block| block_keys(operator, block).difference(&block_keys(reference, block)).map(|k| format!("{block}.{k}")).collect::<Vec<_>>())
        .collect()
}

/// Compose v2 (`docker compose`) from the release-23.10 text on, v1 (`docker-compose`) before.
fn up(target: &Version) -> Command {
    let command = if *target >= Version::new(23, 10, 0) {
        Command::new("/usr/bin/docker").args(["compose", "up", "-d"])
    } else {
        Command::new("/usr/bin/docker-compose").args(["up", "-d"])
    };
    command.cwd(COMPOSE_DIR)
}

fn read_reference(name: &str) -> Result<String> {
    String::from_utf8(context::data(name)?).map_err(|_| canup_sdk::Error::msg(format!("reference file {name} is not UTF-8")))
}

/// Stops before any change when the operator's docker-compose.yml has services or volumes the
/// reference lacks, unless they confirm having moved them to the override file.
fn check_additions(references: &[(String, String)]) -> Result<()> {
    let Some((_, name)) = references.iter().find(|(f, _)| f == COMPOSE_FILE) else { return Ok(()) };
    let path = format!("{COMPOSE_DIR}/{COMPOSE_FILE}");
    if !fs::exists(&path)? {
        return Ok(());
    }
    let reference = read_reference(name)?;
    let added = operator_additions(&fs::read_to_string(&path)?, &reference);
    if added.is_empty() {
        return Ok(());
    }
    let instruction = format!(
        "{path} has what the release's reference file does not: {}. Replacing the file would remove them. Move them to {COMPOSE_DIR}/docker-compose.override.yml (Compose reads it on top of docker-compose.yml; canup never changes it), then confirm",
        added.join(", ")
    );
    // Confirmed: the file is read again; what is still there stops the update.
    let left = if ui::manual(&instruction) { operator_additions(&fs::read_to_string(&path)?, &reference) } else { added };
    if left.is_empty() {
        return Ok(());
    }
    bail!("{path} has {} that the reference does not: nothing was changed; move them to docker-compose.override.yml and run canup again", left.join(", "));
}

fn compose_update(ctx: &Context) -> Result<()> {
    let references = references(&ctx.edition);
    if references.is_empty() {
        ui::warn(&format!("release {} ships no reference Compose files; only CANOPSIS_IMAGE_TAG is updated", context::version_text(&ctx.release)));
        helpers::set_env_value(&format!("{COMPOSE_DIR}/.env"), "CANOPSIS_IMAGE_TAG", &context::version_text(&ctx.target))?;
    }
    check_additions(&references)?;
    for (file, name) in &references {
        let path = format!("{COMPOSE_DIR}/{file}");
        let reference = read_reference(name)?;
        let current = if fs::exists(&path)? { Some(fs::read_to_string(&path)?) } else { None };
        let wanted = match (&current, file.as_str()) {
            (Some(operator), ".env") => helpers::merge_env_text(operator, &reference, release_owned),
            _ => reference,
        };
        if current.as_deref() == Some(wanted.as_str()) {
            ui::info(&format!("{path} already matches the {} reference", context::version_text(&ctx.release)));
            continue;
        }
        fs::write(&path, &wanted)?;
        ui::info(&format!("{path} resynchronised with the {} reference (previous file backed up)", context::version_text(&ctx.release)));
    }
    up(&ctx.target).run()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_volumes_the_reference_lacks_are_found() {
        let reference = "version: '3'\nservices:\n  che:\n    image: che\n  redis:\n    image: redis\nvolumes:\n  mongodbdata:\n";
        let operator = "version: '3'\nservices:\n    che:\n        image: che\n        command: /engine-che -x\n    redis:\n        image: redis\n    my-exporter:\n        image: prom\n# comment\nvolumes:\n    mongodbdata:\n    exporterdata: {}\n";
        assert_eq!(operator_additions(operator, reference), ["services.my-exporter", "volumes.exporterdata"]);
        assert!(operator_additions(reference, reference).is_empty());
    }
}
