//! canup: upgrades a single-node Canopsis by running the vendor's release steps as signed,
//! sandboxed WebAssembly components. This crate knows nothing about Canopsis; the steps do.
//!
//! Where things live, in the order an upgrade uses them:
//! - [`upgrade`]: detect, plan, back up, prefetch, apply and resume, status, restore-files,
//!   rollback: the driver;
//! - [`repository`]: the signed release repository (TUF via tough, the persisted root of
//!   trust, the release index, and `publish`: the vendor's side);
//! - [`plan`]: releases and steps from installed to target, and admission against the policy;
//! - [`sandbox`]: the engine, the host side of the step contract (one file per interface),
//!   limits and trap mapping;
//! - [`capabilities`]: the rules and the one checkpoint per host call (exec, fs, http);
//! - [`journal`]: runs, steps and changing actions, fsync'd, and the apply lock;
//! - [`audit`], [`backup`]: the records a run leaves behind (the run's backup set and
//!   `canup rollback` are the upgrade's: `upgrade::backups`, `upgrade::rollback`);
//! - [`cache`]: compiled components;
//! - [`durable`]: atomic, synced file writes (everything canup writes goes through it);
//! - [`manifest`], [`config`]: what the vendor declares and what the operator allows;
//! - [`sysroot`]: `--sysroot` path mapping;
//! - [`ui`]: the port through which steps reach the operator;
//! - [`exit`]: the exit codes, the operator's contract;
//! - `fuzz`: fuzz targets over the parsers and the planner (hidden from the docs).
//!
//! The `canup` command line itself belongs to the binary (`src/cli/`).

pub mod audit;
pub mod backup;
pub mod cache;
pub mod capabilities;
pub mod config;
pub mod durable;
pub mod exit;
pub mod formats;
#[doc(hidden)]
pub mod fuzz;
pub mod journal;
pub mod manifest;
pub mod plan;
pub mod policy;
pub mod repository;
pub mod restore;
pub mod sandbox;
pub mod sysroot;
pub mod ui;
pub mod upgrade;
pub mod version;

/// Lower-case hex sha256: how modules, cache entries and targets are named and compared.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every message in an error's source chain, without repeats: libraries (tough, reqwest) wrap
/// the telling part (which role expired, which hash mismatched) in a generic outer error.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}
