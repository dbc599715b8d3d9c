//! Canopsis 3.38.0, pre-update.
//!
//! The release note says: « Avant de réaliser la mise à jour des paquets ou des images
//! Docker, vous devez vous connecter à MongoDB et y exécuter les requêtes suivantes :
//! `db.default_rights.update({'_id' : 'root'},{ "$rename" : {'shadowpass' : 'shadowpasswd'}});`
//! `db.default_rights.update({'_id' : 'canopsis'},{ "$rename" : {'shadowpass' : 'shadowpasswd'}});` »
//!
//! `$rename` of a field that is already renamed does nothing, so running the queries again
//! (a resumed upgrade) is harmless. They run on the `mongo` database endpoint: canup connects
//! with the host's CPS_MONGO_URL (the database `canopsis`), the step names no host. In a Compose install MongoDB lives in a container canup
//! does not reach yet: the queries are shown for the operator to run.

use canup_sdk::{Context, Result, bail, database, ui};

canup_sdk::export_step! {
    "3.38.0/rename-shadowpass" => rename,
    "3.38.0/rename-shadowpass-compose" => rename_compose,
}

const QUERIES: &str = "db.default_rights.update({'_id' : 'root'},{ \"$rename\" : {'shadowpass' : 'shadowpasswd'}});db.default_rights.update({'_id' : 'canopsis'},{ \"$rename\" : {'shadowpass' : 'shadowpasswd'}});";

fn rename(_: &Context) -> Result<()> {
    database::mongo(QUERIES).run()?;
    ui::info("renamed shadowpass to shadowpasswd for root and canopsis");
    Ok(())
}

fn rename_compose(_: &Context) -> Result<()> {
    let instruction = format!("Connect to MongoDB (docker-compose exec mongodb mongo canopsis) and run:\n  {}", QUERIES.replace(";db.", ";\n  db."));
    if !ui::manual(&instruction) {
        bail!("the MongoDB queries of Canopsis 3.38.0 were not confirmed; run canup again once they are done");
    }
    Ok(())
}
