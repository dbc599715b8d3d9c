//! The standard upgrade procedure of the 22.10, 23.04 and 23.10 eras for package installs,
//! shipped with every 22.x and 23.x release (`mise-a-jour-par-version/release-23.04.md` and
//! `release-23.10.md`; 22.10 published no text of its own and its packages follow the
//! release-4.6 text, which the 23.x CentOS 7 section repeats word for word).
//!
//! CentOS 7: « `yum --disablerepo="*" --enablerepo="canopsis*" update` », « `su - canopsis -c
//! "canopsinit --canopsis-edition core"` » (or `cat`), then with go-engines-vars.conf
//! exported « `/opt/canopsis/bin/canopsis-reconfigure -migrate-postgres=true
//! -postgres-migration-mode=up -postgres-migration-directory=/opt/canopsis/share/migrations/postgres` »,
//! « `systemctl daemon-reload` » and « `canoctl restart` ».
//!
//! RHEL 8: « `dnf makecache` », « `dnf --disablerepo="*" --enablerepo="canopsis*" update` »,
//! then « `/opt/canopsis/bin/canopsis-reconfigure -edition community -migrate-postgres=true` »
//! (`-edition pro` for Pro) and « `systemctl restart` » of the edition's units, listed below
//! as the text lists them. No canopsinit, no canoctl: RHEL 8 packages have neither.
//!
//! Updates are pinned to exactly the target version. The units are restarted one by one, and
//! only those enabled on the host: the 23.10 text still lists engine-service, which the 23.10
//! migration guide disables, and restarting a template instance would start it again.

use canup_sdk::{Context, Result, bail, exec::Command, helpers, helpers::PackageManager, ui};

canup_sdk::export_step! {
    "procedure-22.x/update" => update,
    "procedure-22.x/finalize" => finalize,
}

/// « `systemctl restart …` » of the RHEL 8 text, Canopsis Community.
const COMMUNITY_UNITS: &[&str] = &[
    "canopsis-engine-go@engine-action",
    "canopsis-engine-go@engine-axe",
    "canopsis-engine-go@engine-che.service",
    "canopsis-engine-go@engine-fifo.service",
    "canopsis-engine-go@engine-pbehavior.service",
    "canopsis-engine-go@engine-service.service",
    "canopsis-service@canopsis-api.service",
];

/// The same for Canopsis Pro.
const PRO_UNITS: &[&str] = &[
    "canopsis-engine-go@engine-action",
    "canopsis-engine-go@engine-axe",
    "canopsis-engine-go@engine-che.service",
    "canopsis-engine-go@engine-correlation.service",
    "canopsis-engine-go@engine-dynamic-infos.service",
    "canopsis-engine-go@engine-fifo.service",
    "canopsis-engine-go@engine-pbehavior.service",
    "canopsis-engine-go@engine-service.service",
    "canopsis-service@canopsis-api.service",
    "canopsis-engine-go@engine-remediation",
    "canopsis-engine-go@engine-webhook",
];

/// The units the RHEL 8 text restarts for `edition`.
pub fn units(edition: &str) -> &'static [&'static str] {
    if edition == "cat" { PRO_UNITS } else { COMMUNITY_UNITS }
}

fn update(ctx: &Context) -> Result<()> {
    helpers::package_manager()?.update_canopsis_to(&ctx.target)
}

fn finalize(ctx: &Context) -> Result<()> {
    let (edition, name) = match ctx.edition.as_str() {
        "core" => ("core", "community"),
        "cat" => ("cat", "pro"),
        other => bail!("unknown edition {other:?}"),
    };
    let vars = helpers::read_env_file("/opt/canopsis/etc/go-engines-vars.conf")?;
    let reconfigure = Command::new("/opt/canopsis/bin/canopsis-reconfigure").envs(vars);
    match helpers::package_manager()? {
        PackageManager::Yum => {
            Command::new("/usr/bin/su").args(["-", "canopsis", "-c", &format!("canopsinit --canopsis-edition {edition}")]).run()?;
            reconfigure
                .args(["-migrate-postgres=true", "-postgres-migration-mode=up", "-postgres-migration-directory=/opt/canopsis/share/migrations/postgres"])
                .run()?;
            Command::new("/usr/bin/systemctl").arg("daemon-reload").run()?;
            Command::new("/usr/bin/canoctl").arg("restart").run()?;
        }
        PackageManager::Dnf => {
            reconfigure.args(["-edition", name, "-migrate-postgres=true"]).run()?;
            for unit in units(edition) {
                if !Command::new("/usr/bin/systemctl").args(["is-enabled", unit]).output()?.success() {
                    ui::warn(&format!("{unit} is in the procedure's restart list but not enabled on this host: not started"));
                    continue;
                }
                Command::new("/usr/bin/systemctl").args(["restart", unit]).run()?;
            }
        }
    }
    Ok(())
}
