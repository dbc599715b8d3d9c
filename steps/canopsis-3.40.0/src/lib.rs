//! Canopsis 3.40.0, post-update.
//!
//! The release note says: « Puis, en installation par paquets, exécutez les commandes
//! suivantes : `grep -q ^canopsis.webcore.services.metaalarmrule /opt/canopsis/etc/webserver.conf
//! || echo "canopsis.webcore.services.metaalarmrule=1" >> /opt/canopsis/etc/webserver.conf`,
//! the same for `canopsis.webcore.services.broadcast_message`, then `canoctl restart`. En
//! installation Docker, si vous maintenez votre propre volume `webserver.conf`, vous devez
//! aussi y ajouter une ligne `canopsis.webcore.services.metaalarmrule=1` et une ligne
//! `canopsis.webcore.services.broadcast_message=1`. »
//!
//! Packages: both lines are added only when missing, so a re-run changes nothing; the restart
//! is skipped when nothing changed and the engines were already restarted by the standard
//! procedure. Compose: the volume is the operator's own, outside canup's reach, so the step
//! shows the instruction and waits.

use canup_sdk::{Context, Result, bail, exec::Command, helpers, ui};

canup_sdk::export_step! {
    "3.40.0/webserver-services" => webserver_services,
    "3.40.0/webserver-services-compose" => webserver_services_compose,
}

const WEBSERVER_CONF: &str = "/opt/canopsis/etc/webserver.conf";
const SERVICES: [&str; 2] = ["canopsis.webcore.services.metaalarmrule", "canopsis.webcore.services.broadcast_message"];

fn webserver_services(_: &Context) -> Result<()> {
    let mut changed = false;
    for service in SERVICES {
        if helpers::ensure_line(WEBSERVER_CONF, service, &format!("{service}=1"))? {
            ui::info(&format!("added {service}=1 to {WEBSERVER_CONF}"));
            changed = true;
        }
    }
    if !changed {
        ui::info("webserver.conf already enables both services");
        return Ok(());
    }
    Command::new("/usr/bin/canoctl").arg("restart").run()?;
    Ok(())
}

fn webserver_services_compose(_: &Context) -> Result<()> {
    let instruction = format!(
        "If you maintain your own webserver.conf volume, add these lines to it:\n  {}=1\n  {}=1\nthen run `docker-compose up -d`.",
        SERVICES[0], SERVICES[1]
    );
    if !ui::manual(&instruction) {
        bail!("the webserver.conf lines of Canopsis 3.40.0 were not confirmed; run canup again once they are added");
    }
    Ok(())
}
