//! The example step of `cargo xtask demo`: one of each capability against the simulated host.
//! It reads the installed version, queries rpm, asks the Canopsis API for its version,
//! reconfigures with `go-engines-vars.conf` exported by canup, enables a web service in
//! `webserver.conf` if missing, and restarts the engines after the operator confirms.

use canup_sdk::{Context, Result, bail, exec::Command, fs, helpers, http, ui};

canup_sdk::export_step!(run);

fn run(ctx: &Context) -> Result<()> {
    ui::info(&format!("step {} of release {} ({} edition, {} method): {} -> {}", ctx.step_id, ctx.release, ctx.edition, ctx.method, ctx.installed, ctx.target));
    let version = fs::read_to_string("/opt/canopsis/VERSION.txt")?;
    ui::info(&format!("VERSION.txt says {:?}", version.trim()));
    let rpm = Command::new("/usr/bin/rpm").args(["-q", "canopsis-core"]).run()?;
    ui::info(&format!("rpm: {}", rpm.stdout_text().trim()));
    let api = http::Request::get("canopsis-api", "/api/v4/app-info").send()?;
    ui::info(&format!("canopsis-api answered {}: {}", api.status(), api.text().trim()));
    ui::progress(1, Some(3), "reconfiguring");
    // canup exports go-engines-vars.conf to it (the rule's env_file); the step never reads it.
    Command::new("/opt/canopsis/bin/canopsis-reconfigure").run()?;
    ui::progress(2, Some(3), "webserver.conf");
    let added = helpers::ensure_line(
        "/opt/canopsis/etc/webserver.conf",
        "canopsis.webcore.services.broadcast_message",
        "canopsis.webcore.services.broadcast_message=1",
    )?;
    ui::info(if added { "enabled the broadcast_message service" } else { "broadcast_message service already enabled" });
    if !ui::confirm("Restart the Canopsis engines now?") {
        bail!("the operator declined the restart; run the step again when ready");
    }
    Command::new("/usr/bin/canoctl").arg("restart").run()?;
    ui::progress(3, Some(3), "done");
    println!("example step finished");
    Ok(())
}
