//! Canopsis 3.39.0, packages: Redis's version before anything changes (preflight), then the
//! post-update actions.
//!
//! The release note says: « Redis doit être mis à jour vers sa version 5. Cette manipulation
//! n'est facilement réalisable que dans le cadre d'une nouvelle installation » (a manual
//! instruction); « `systemctl enable canopsis-engine-go@engine-fifo`, `cp
//! /opt/canopsis/etc/initialisation-cat.toml.example /opt/canopsis/etc/initialisation.toml`,
//! `set -o allexport ; source /opt/canopsis/etc/go-engines-vars.conf`, `/opt/canopsis/bin/init
//! -conf /opt/canopsis/etc/initialisation.toml` »; « Supprimez toute référence à l'option
//! `-alwaysFlushEntities` du moteur `engine-che` … `systemctl daemon-reload` »; « resynchroniser
//! votre fichier `amqp2engines.conf` avec les fichiers de référence » ; then « `canoctl
//! restart` ». Each step checks before it changes, so a re-run changes nothing.
//!
//! « Allez dans Exchanges > `canopsis.events` > Bindings, et cliquez sur le bouton « Unbind »
//! de la file `Engine_che` » is done through the RabbitMQ management API. For Docker Compose the
//! note says « `REDIS_TAG=5.0.8-buster` », « vous devez obligatoirement ajouter le nouveau
//! moteur `engine-fifo` suivant à votre `docker-compose.yml` », « l'option
//! `-alwaysFlushEntities` … doit obligatoirement être supprimée » and « Relancez l'ensemble de
//! votre environnement avec `docker-compose up -d` »: these are differences between the 3.38.0
//! and 3.39.0 reference files (facts/compose.toml), which the standard `compose-update` step's
//! three-way resync applies, keeping the operator's own changes.

use canup_sdk::{Context, Result, bail, exec::Command, fs, helpers, http, ui};

canup_sdk::export_step! {
    "3.39.0/redis-5" => redis_5,
    "3.39.0/enable-fifo" => enable_fifo,
    "3.39.0/fifo-queue" => fifo_queue,
    "3.39.0/always-flush-entities" => always_flush_entities,
    "3.39.0/amqp2engines" => amqp2engines,
    "3.39.0/unbind-che" => unbind_che,
    "3.39.0/restart" => restart,
}

const ETC: &str = "/opt/canopsis/etc";

/// Before anything changes: Redis is asked for its version, and the operator only when it is
/// older than 5 or cannot be read.
fn redis_5(_: &Context) -> Result<()> {
    let found = match helpers::redis_version() {
        Ok(None) => {
            ui::info("dry run: Redis's version is asked when the upgrade runs");
            return Ok(());
        }
        Ok(Some(v)) if v.major >= 5 => {
            ui::info(&format!("Redis {v} already meets Canopsis 3.39.0's « Redis doit être mis à jour vers sa version 5 »"));
            return Ok(());
        }
        Ok(Some(v)) => format!("this host runs Redis {v}"),
        Err(e) => format!("canup could not read Redis's version ({e})"),
    };
    let note = format!(
        "Canopsis 3.39.0 needs Redis 5 and {found}. On a package install this is only practical on a new installation \
         (canoctl deploy) or with your Capensis support contract. Check Redis's maxmemory setting afterwards."
    );
    if !ui::manual(&note) {
        bail!("Redis 5 is required by Canopsis 3.39.0; run canup again once it is installed");
    }
    Ok(())
}

fn enable_fifo(_: &Context) -> Result<()> {
    let unit = "canopsis-engine-go@engine-fifo";
    if Command::new("/usr/bin/systemctl").args(["is-enabled", unit]).output()?.success() {
        ui::info("engine-fifo is already enabled");
        return Ok(());
    }
    Command::new("/usr/bin/systemctl").args(["enable", unit]).run()?;
    Ok(())
}

fn fifo_queue(_: &Context) -> Result<()> {
    let example = fs::read(&format!("{ETC}/initialisation-cat.toml.example"))?;
    let target = format!("{ETC}/initialisation.toml");
    if !fs::exists(&target)? || fs::read(&target)? != example {
        fs::write(&target, &example)?;
    }
    // go-engines-vars.conf is exported by canup (the rule's env_file), not read here.
    Command::new("/opt/canopsis/bin/init").args(["-conf", &target]).run()?;
    Ok(())
}

/// « `vi $(grep -lr alwaysFlushEntities /etc/systemd/system/canopsis*)` »: every regular file
/// under the `canopsis*` entries of /etc/systemd/system, the operator's copies of unit files
/// (`canopsis-engine-go@engine-che.service`) as well as the drop-ins of `….service.d/`. A
/// symbolic link is left alone: it leads to a package's unit, which the update replaced.
fn always_flush_entities(_: &Context) -> Result<()> {
    let mut changed = false;
    let mut pending: Vec<String> =
        fs::list_dir("/etc/systemd/system")?.into_iter().filter(|d| d.starts_with("canopsis")).map(|d| format!("/etc/systemd/system/{d}")).collect();
    while let Some(path) = pending.pop() {
        match fs::metadata(&path)?.kind {
            fs::FileKind::Directory => pending.extend(fs::list_dir(&path)?.into_iter().map(|f| format!("{path}/{f}"))),
            fs::FileKind::File if (path.ends_with(".conf") || path.ends_with(".service")) && helpers::remove_unit_option(&path, "-alwaysFlushEntities")? => {
                ui::info(&format!("removed -alwaysFlushEntities from {path}"));
                changed = true;
            }
            _ => {}
        }
    }
    if changed {
        Command::new("/usr/bin/systemctl").arg("daemon-reload").run()?;
    }
    Ok(())
}

fn amqp2engines(ctx: &Context) -> Result<()> {
    let reference = fs::read(&format!("{ETC}/amqp2engines-go-{}.conf.example", ctx.edition))?;
    let conf = format!("{ETC}/amqp2engines.conf");
    if fs::read(&conf)? != reference {
        fs::write(&conf, &reference)?;
        ui::info(&format!("amqp2engines.conf now matches amqp2engines-go-{}.conf.example (previous copy kept as a backup)", ctx.edition));
    }
    Ok(())
}

fn restart(_: &Context) -> Result<()> {
    Command::new("/usr/bin/canoctl").arg("restart").run()?;
    Ok(())
}

/// Percent-encodes a path segment (binding property keys can hold `#` or `*`).
fn encode(segment: &str) -> String {
    segment.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

fn unbind_che(_: &Context) -> Result<()> {
    let resp = http::Request::get("rabbitmq", "/api/exchanges/canopsis/canopsis.events/bindings/source").send()?;
    if !resp.is_success() {
        bail!("RabbitMQ answered HTTP {} for the bindings of canopsis.events: {}", resp.status(), resp.text());
    }
    let bindings: serde_json::Value = serde_json::from_slice(resp.body()).map_err(|e| canup_sdk::Error::msg(format!("RabbitMQ bindings: {e}")))?;
    let mut removed = 0;
    for b in bindings.as_array().cloned().unwrap_or_default() {
        let to_che = b.get("destination").and_then(|d| d.as_str()) == Some("Engine_che") && b.get("destination_type").and_then(|d| d.as_str()) == Some("queue");
        let Some(key) = b.get("properties_key").and_then(|k| k.as_str()).filter(|_| to_che) else { continue };
        let path = format!("/api/bindings/canopsis/e/canopsis.events/q/Engine_che/{}", encode(key));
        let r = http::Request::delete("rabbitmq", &path).send()?;
        if !r.is_success() && r.status() != 404 {
            bail!("RabbitMQ refused to unbind Engine_che: HTTP {} {}", r.status(), r.text());
        }
        removed += 1;
    }
    ui::info(if removed > 0 { "Engine_che is no longer bound to canopsis.events" } else { "Engine_che was not bound to canopsis.events" });
    Ok(())
}
