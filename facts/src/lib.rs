//! Canopsis as the vendor ships it, release by release: the facts in `facts/*.toml` and what
//! is built from them. One crate so that the simulated host, `cargo xtask vendor-check` and
//! the steps that need them (the Compose resync) read the same facts the same way.
//!
//! - `canopsis.toml`: packages, units, configuration (read by `canup-sim`'s `facts` module).
//! - `compose.toml`: the reference Compose files ([`compose`]).

pub mod compose;
mod version;

pub use version::{Version, covers};

/// The package, unit and configuration facts.
pub const CANOPSIS_TOML: &str = include_str!("../canopsis.toml");
/// The reference Compose facts.
pub const COMPOSE_TOML: &str = include_str!("../compose.toml");
