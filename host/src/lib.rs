//! canup: upgrades a single-node Canopsis by running the vendor's release steps as signed,
//! sandboxed WebAssembly components. This crate knows nothing about Canopsis; the steps do.
//!
//! Where things live:
//! - [`capabilities`]: the rules and the one checkpoint per host call (exec, fs, http);
//! - [`sandbox`]: the engine, the step contract's host side, limits and trap mapping;
//! - [`sysroot`]: `--sysroot` path mapping;
//! - [`audit`], [`backup`]: the records a run leaves behind;
//! - [`manifest`], [`config`]: what the vendor declares and what the operator allows;
//! - [`cli`]: the `canup` command.

pub mod audit;
pub mod backup;
pub mod cache;
pub mod capabilities;
pub mod config;
pub mod exit;
#[doc(hidden)]
pub mod fuzz;
pub mod journal;
pub mod manifest;
pub mod plan;
pub mod repository;
pub mod sandbox;
pub mod sysroot;
pub mod ui;
pub mod upgrade;

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
