//! The standard upgrade procedure of Canopsis 4.x (`mise-a-jour.md`) for package installs,
//! shipped with every 4.x release.
//!
//! The procedure says: « `yum --disablerepo="*" --enablerepo="canopsis*" update` », then
//! « `su - canopsis -c "canopsinit --canopsis-edition core"` » (or `cat`), « `set -o allexport ;
//! source /opt/canopsis/etc/go-engines-vars.conf` / `/opt/canopsis/bin/canopsis-reconfigure` »,
//! « `systemctl daemon-reload` » and « `canoctl restart` ». The update is pinned to exactly the
//! target version; the variables of `go-engines-vars.conf` are read and passed as the
//! environment of `canopsis-reconfigure` (no shell `source`).
//!
//! From 4.5.0 on (PostgreSQL with TimescaleDB came with the 4.5.0 migration guide, and the
//! release-4.6 text of the procedure writes it), `canopsis-reconfigure` also applies the
//! PostgreSQL migrations: « `/opt/canopsis/bin/canopsis-reconfigure -migrate-postgres=true
//! -postgres-migration-mode=up -postgres-migration-directory=/opt/canopsis/share/migrations/postgres` ».

use canup_sdk::{Context, Result, bail, exec::Command, helpers, semver::Version};

/// `canopsis-reconfigure`'s options in the era of `target`.
pub fn reconfigure_args(target: &Version) -> &'static [&'static str] {
    if *target >= Version::new(4, 5, 0) {
        &["-migrate-postgres=true", "-postgres-migration-mode=up", "-postgres-migration-directory=/opt/canopsis/share/migrations/postgres"]
    } else {
        &[]
    }
}

canup_sdk::export_step! {
    "procedure-4.x/yum-update" => yum_update,
    "procedure-4.x/finalize" => finalize,
}

/// yum on CentOS 7 (the 4.x procedure's command); on a RHEL 8 host, whose package manager is
/// dnf, the RHEL 8 procedure's `dnf makecache` and `dnf … update`.
fn yum_update(ctx: &Context) -> Result<()> {
    helpers::package_manager()?.update_canopsis_to(&ctx.target)
}

fn finalize(ctx: &Context) -> Result<()> {
    let edition = match ctx.edition.as_str() {
        e @ ("core" | "cat") => e,
        other => bail!("unknown edition {other:?}"),
    };
    Command::new("/usr/bin/su").args(["-", "canopsis", "-c", &format!("canopsinit --canopsis-edition {edition}")]).run()?;
    // go-engines-vars.conf is exported by canup (the rule's env_file), never read by the step.
    Command::new("/opt/canopsis/bin/canopsis-reconfigure").args(reconfigure_args(&ctx.target).iter().copied()).run()?;
    Command::new("/usr/bin/systemctl").arg("daemon-reload").run()?;
    Command::new("/usr/bin/canoctl").arg("restart").run()?;
    Ok(())
}
