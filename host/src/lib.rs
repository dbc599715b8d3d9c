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
pub mod cli;
pub mod config;
pub mod journal;
pub mod manifest;
pub mod plan;
pub mod repository;
pub mod sandbox;
pub mod sysroot;
pub mod ui;
pub mod upgrade;
