//! Canopsis 24.04.3: the `perf_data_name` migration, and a notice on periodic behaviours.
//!
//! The release note says: « La transformation de la vue SQL perf_data_name en table nécessite
//! d'exécuter un script de migration manuellement », with `psql $CPS_POSTGRES_URL -v
//! ON_ERROR_STOP=1 --echo-errors -f …/17_update_perf_data_name_table.up.sql` on packages and
//! the same SQL through `docker compose exec timescaledb psql …` on Docker Compose.
//!
//! Why by hand: 24.04.3 inserted this migration as number 17 of the PostgreSQL migrations, and a
//! database that 24.04.0–24.04.2's reconfigure took to 19 never runs it. So neither the
//! migrations' table nor the version installed says whether it is done; the database does:
//! `perf_data_name` is a materialized view (`relkind` `m`) before and a table (`r`) after.
//! The step asks, and runs the SQL (the release's signed `postgres/perf_data_name.sql`) only
//! on the view: a second run changes nothing. The vendor's SQL, run twice, fails (« is not a
//! materialized view »).
//!
//! On packages the step runs it on the `postgres` database endpoint: canup connects with the
//! installation's `CPS_POSTGRES_URL`, which the step never holds. On Docker Compose the
//! database is inside the `timescaledb` container: the note's command is shown for the
//! operator to run.

use canup_sdk::{Context, Result, bail, context, database, ui};

canup_sdk::export_step! {
    "24.04.3/periodic-behaviour-notice" => notice,
    "24.04.3/perf-data-name" => perf_data_name,
    "24.04.3/perf-data-name-compose" => perf_data_name_compose,
}

const MIGRATION: &str = "postgres/perf_data_name.sql";

/// What `perf_data_name` is: `m` (materialized view), `r` (table), empty (absent).
const KIND: &str = "SELECT relkind FROM pg_class WHERE oid = to_regclass('perf_data_name')";

fn notice(_: &Context) -> Result<()> {
    ui::info(
        "Canopsis 24.04.3 note: in a scenario step of type « Comportement périodique » the behaviour's name must be unique; the form now asks for a prefix and names it « {prefix} {entity_id} {start}-{stop} ». Review the scenarios that create periodic behaviours",
    );
    Ok(())
}

fn migration_sql() -> Result<String> {
    String::from_utf8(context::data(MIGRATION)?).map_err(|_| canup_sdk::Error::msg(format!("{MIGRATION} of release 24.04.3 is not UTF-8")))
}

fn kind() -> Result<Option<String>> {
    let out = database::postgres(KIND).read_only().run()?;
    Ok((!out.simulated()).then(|| out.stdout_text().trim().to_owned()))
}

fn perf_data_name(_: &Context) -> Result<()> {
    let sql = migration_sql()?;
    match kind()?.as_deref() {
        // A dry run: the query is listed, and the migration with it.
        None => {}
        Some("r") => {
            ui::info("perf_data_name is already a table: the 24.04.3 migration was applied before; nothing to do");
            return Ok(());
        }
        Some("m") => {}
        Some("") => bail!(
            "the Canopsis PostgreSQL database has no perf_data_name, which its migrations create as a view before 24.04.3: check that CPS_POSTGRES_URL names the Canopsis database and that canopsis-reconfigure ran its PostgreSQL migrations, then run canup again"
        ),
        Some(other) => bail!(
            "perf_data_name is neither the materialized view nor the table the 24.04.3 note knows (pg_class.relkind {other:?}): migrate it by hand, then run canup again"
        ),
    }
    database::postgres(&sql).run()?;
    if let Some(after) = kind()?
        && after != "r"
    {
        bail!("the perf_data_name migration ran but perf_data_name is still not a table (relkind {after:?}); check the database before running canup again");
    }
    ui::info("perf_data_name is now a table, filled from perf_data");
    Ok(())
}

fn perf_data_name_compose(_: &Context) -> Result<()> {
    let sql = migration_sql()?;
    let body: String = sql.lines().filter(|l| !l.starts_with("--")).map(|l| format!("{l}\n")).collect();
    let instruction = format!(
        "Canopsis 24.04.3 « Migration manuelle »: in your Docker Compose directory, turn perf_data_name into a table, once (adapt the edition and the URL to your compose.env):\n  CPS_EDITION=pro docker compose exec timescaledb psql postgresql://cpspostgres:canopsis@timescaledb:5432/canopsis -v ON_ERROR_STOP=1 --echo-errors -c \"BEGIN;\n{body}END;\"\nIf it says perf_data_name « is not a materialized view », it was done before."
    );
    if !ui::manual(&instruction) {
        bail!("the perf_data_name migration of Canopsis 24.04.3 was not confirmed; run canup again once it is done");
    }
    Ok(())
}
