//! The standard upgrade procedure of the 22.10, 23.04, 23.10 and 24.04 eras for package
//! installs, shipped with every 22.x, 23.x and 24.x release (`mise-a-jour-par-version/release-23.04.md`,
//! `release-23.10.md` and `release-24.04.md`; 22.10 published no text of its own and its
//! packages follow the release-4.6 text, which the 23.x CentOS 7 section repeats word for
//! word). The 24.04 text is the 23.10 one without its CentOS 7 section: « L'installation
//! CentOS 7 a été dépréciée depuis la version 23.04 » and 24.04 publishes only EL8 and EL9
//! packages, so a CentOS 7 host is refused for a 24.x target before anything changes.
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
//! migration guide disables, and restarting a template instance would start it again. From
//! 23.10, Pro's SNMP engine (`canopsis-engine-python-snmp`, which the 23.10.0 migration guide
//! enables on RHEL 8) is restarted with the others, though the text's list omits it.
//!
//! `canopsis-reconfigure` on RHEL 8 gets the flags the vendor's own pre-set command line gives
//! (the 24.04 `canopsis-reconfigure.service`, the 22.10+ Compose reference's `reconfigure`
//! service, the 24.04.0 migration guide's RHEL 8 command): `-migrate-mongo=true` too, so that
//! a package update runs the MongoDB migrations a Compose update runs. On both OSes, the
//! operator's `conf.d/canopsis-override.toml`, where settings go since 4.6.0, is passed with
//! `-override` when it exists: without it reconfigure ignores that file.

use canup_sdk::{Context, Result, bail, exec::Command, fs, helpers, helpers::PackageManager, semver::Version, ui};

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

/// Pro's SNMP engine, back from 23.10 (enabled by the 23.10.0 migration guide on RHEL 8).
const SNMP_UNIT: &str = "canopsis-engine-python-snmp";

/// The units the RHEL 8 text restarts for `edition`, and from 23.10 Pro's SNMP engine.
pub fn units(edition: &str, target: &Version) -> Vec<&'static str> {
    let mut units = if edition == "cat" { PRO_UNITS.to_vec() } else { COMMUNITY_UNITS.to_vec() };
    if edition == "cat" && *target >= Version::new(23, 10, 0) {
        units.push(SNMP_UNIT);
    }
    units
}

fn update(ctx: &Context) -> Result<()> {
    let manager = helpers::package_manager()?;
    if manager == PackageManager::Yum && ctx.target >= Version::new(24, 0, 0) {
        bail!(
            "Canopsis {} publishes no CentOS 7 packages (its update procedure covers RHEL 8 only; « L'installation CentOS 7 a été dépréciée depuis la version 23.04 »): stay on 23.10 or move the installation to RHEL 8 or 9",
            ctx.target
        );
    }
    manager.update_canopsis_to(&ctx.target)
}

fn finalize(ctx: &Context) -> Result<()> {
    let (edition, name) = match ctx.edition.as_str() {
        "core" => ("core", "community"),
        "cat" => ("cat", "pro"),
        other => bail!("unknown edition {other:?}"),
    };
    let override_file: Vec<&str> = if fs::exists(helpers::CANOPSIS_OVERRIDE)? { vec!["-override", helpers::CANOPSIS_OVERRIDE] } else { vec![] };
    // go-engines-vars.conf is exported by canup (the rule's env_file), never read by the step.
    let reconfigure = Command::new("/opt/canopsis/bin/canopsis-reconfigure");
    match helpers::package_manager()? {
        PackageManager::Yum => {
            Command::new("/usr/bin/su").args(["-", "canopsis", "-c", &format!("canopsinit --canopsis-edition {edition}")]).run()?;
            reconfigure
                .args(["-migrate-postgres=true", "-postgres-migration-mode=up", "-postgres-migration-directory=/opt/canopsis/share/migrations/postgres"])
                .args(override_file)
                .run()?;
            Command::new("/usr/bin/systemctl").arg("daemon-reload").run()?;
            Command::new("/usr/bin/canoctl").arg("restart").run()?;
        }
        PackageManager::Dnf => {
            reconfigure.args(["-edition", name, "-migrate-postgres=true", "-migrate-mongo=true"]).args(override_file).run()?;
            for unit in units(edition, &ctx.target) {
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
