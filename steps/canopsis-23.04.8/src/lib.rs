//! Canopsis 23.04.8: engine-service started once with `-recomputeAllOnInit`, after the
//! standard procedure restarted the engines.
//!
//! The release note says: « Un des bugs corrigés dans cette version nécessite de démarrer le
//! moteur `engine-service` avec le flag `-recomputeAllOnInit`. Cette opération est à réaliser
//! une fois uniquement. Lorsque le moteur est démarré et que le calcul des compteurs est
//! terminé, vous pouvez supprimer ce flag. »
//!
//! The flag acts when the engine starts ("OnInit"): a temporary drop-in gives the unit the
//! engine's command line plus the flag, the engine is restarted with it, and the drop-in is
//! removed at once (then `daemon-reload`), so that the running engine computes the counters
//! and every later start is a normal one. The command line is the unit's own: the last
//! `ExecStart` of the operator's drop-ins, else the packaged template's with `%i` resolved.
//! A re-run after an interruption starts over (the drop-in may be left from a killed run;
//! recomputing twice is what the flag does at any start).

use canup_sdk::{Context, Error, Result, bail, exec::Command, fs, ui};

canup_sdk::export_step! {
    "23.04.8/recompute-counters" => recompute,
    "23.04.8/recompute-counters-compose" => recompute_compose,
}

const UNIT: &str = "canopsis-engine-go@engine-service";
const TEMPLATE: &str = "/usr/lib/systemd/system/canopsis-engine-go@.service";
const DROPINS: &str = "/etc/systemd/system/canopsis-engine-go@engine-service.service.d";
const OURS: &str = "canup-recompute.conf";
const FLAG: &str = "-recomputeAllOnInit";

/// The last non-empty `ExecStart=` of a unit file's text.
fn exec_start(text: &str) -> Option<String> {
    text.lines().filter_map(|l| l.trim().strip_prefix("ExecStart=")).map(str::trim).rfind(|c| !c.is_empty()).map(str::to_owned)
}

/// engine-service's command line, as systemd would run it.
fn command_line() -> Result<String> {
    let mut line = exec_start(&fs::read_to_string(TEMPLATE)?).map(|l| l.replace("%i", "engine-service"));
    if fs::exists(DROPINS)? {
        let mut names: Vec<String> = fs::list_dir(DROPINS)?.into_iter().filter(|n| n.ends_with(".conf") && n != OURS).collect();
        names.sort();
        for name in names {
            if let Some(l) = exec_start(&fs::read_to_string(&format!("{DROPINS}/{name}"))?) {
                line = Some(l);
            }
        }
    }
    line.ok_or_else(|| Error::msg(format!("no ExecStart for {UNIT} in {TEMPLATE} or {DROPINS}")))
}

fn recompute(_: &Context) -> Result<()> {
    let ours = format!("{DROPINS}/{OURS}");
    let line = command_line()?;
    let line = if line.split_whitespace().any(|a| a == FLAG) { line } else { format!("{line} {FLAG}") };
    fs::create_dir(DROPINS, None)?;
    fs::write(
        &ours,
        format!("# canup: Canopsis 23.04.8, one start of engine-service with {FLAG}; removed right after\n[Service]\nExecStart=\nExecStart={line}\n"),
    )?;
    let systemctl = |args: &[&str]| Command::new("/usr/bin/systemctl").args(args.iter().copied()).run();
    systemctl(&["daemon-reload"])?;
    let started = systemctl(&["restart", UNIT]);
    // Whatever the restart did, the flag must not stay for the next start.
    fs::remove(&ours)?;
    systemctl(&["daemon-reload"])?;
    started?;
    ui::info(&format!("engine-service started with {FLAG}: it recomputes the counters; later starts are normal"));
    Ok(())
}

fn recompute_compose(_: &Context) -> Result<()> {
    if !ui::manual(&format!(
        "Start the service engine once with {FLAG}: add it to the command of the service service in your Compose files, docker compose up -d service, and remove it once the counters are computed (the engine logs it)"
    )) {
        bail!("the one start of engine-service with {FLAG} (Canopsis 23.04.8) was not confirmed; run canup again once it is done");
    }
    Ok(())
}
