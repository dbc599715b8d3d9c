//! `cargo xtask publish --out DIR`: the release crates under `steps/`, published into a signed
//! repository at DIR with a development key (`target/dev-keys/`).

use std::path::Path;

use anyhow::Result;

use crate::util::{build_canup, build_guests};

pub fn run(out: &Path) -> Result<()> {
    build_guests()?;
    let canup = build_canup()?;
    let out = if out.is_absolute() { out.to_path_buf() } else { std::env::current_dir()?.join(out) };
    let key = canup_tests::publish_steps(&canup, &out, &canup_tests::target_dir().join("dev-keys"))?;
    let releases = canup_tests::step_sources()?.iter().filter(|s| s.steps.release.is_some()).count();
    println!("published {releases} releases into {}", out.display());
    println!("trusted root: {}/metadata/1.root.json (development key {})", out.display(), key.display());
    Ok(())
}
