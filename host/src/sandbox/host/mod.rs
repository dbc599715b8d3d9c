//! The host side of each `canup:step` interface, one file per interface (as wasmtime's
//! `crates/wasi` does): each host function starts with its capability checkpoint and reads
//! top-down; the rules are in `crate::capabilities`, what changing calls share in `call.rs`.

mod context;
mod database;
pub mod detect;
mod exec;
mod fs;
mod http;
mod ui;

use super::bindings::wit;
use super::call::StepState;

impl wit::types::Host for StepState {}
