//! The standard upgrade procedure of Canopsis 3.x (`mise-a-jour-3.x.md`) for package
//! installs, shipped with every 3.x release.
//!
//! The procedure says: « Sur un environnement CentOS : `yum update` », then « `su - canopsis
//! -c "canopsinit --canopsis-edition cat --canopsis-stack go"` » (« Valeurs acceptées :
//! --canopsis-edition core OU cat, --canopsis-stack python OU go. "core" et "python" sont les
//! valeurs par défaut »), « `systemctl daemon-reload` » and « `canoctl restart` ». The update is
//! pinned to exactly the target version, never "latest"; canopsinit gets the site's own stack,
//! never a switch to Go: `go` where the Go engines run (`canopsis-engine-go@engine-che`
//! enabled), else `python`. (Detection and the Compose update are the `detect` and
//! `compose-update` crates.)

use canup_sdk::{Context, Result, bail, exec::Command, helpers};

canup_sdk::export_step! {
    "procedure-3.x/yum-update" => yum_update,
    "procedure-3.x/canopsinit" => canopsinit,
}

fn yum_update(ctx: &Context) -> Result<()> {
    Command::new("/usr/bin/yum").args(["update", "-y"]).args(helpers::pinned_canopsis_packages(&ctx.target)?).run()?;
    Ok(())
}

fn canopsinit(ctx: &Context) -> Result<()> {
    let edition = match ctx.edition.as_str() {
        e @ ("core" | "cat") => e,
        other => bail!("unknown edition {other:?}"),
    };
    let go = Command::new("/usr/bin/systemctl").args(["is-enabled", "canopsis-engine-go@engine-che"]).output()?.success();
    let stack = if go { "go" } else { "python" };
    Command::new("/usr/bin/su").args(["-", "canopsis", "-c", &format!("canopsinit --canopsis-edition {edition} --canopsis-stack {stack}")]).run()?;
    Command::new("/usr/bin/systemctl").arg("daemon-reload").run()?;
    Command::new("/usr/bin/canoctl").arg("restart").run()?;
    Ok(())
}
