//! Shared test fixtures: the simulated Canopsis host, paths of the built guest modules, and
//! loopback servers. Used by the end-to-end tests and by `cargo xtask demo`.

pub mod simhost;

use std::path::PathBuf;

/// The workspace's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    dir.canonicalize().unwrap_or(dir)
}

/// The `canup` binary built by `cargo test`/`cargo build` (the tests crate cannot name
/// another package's binary through `CARGO_BIN_EXE_*`).
pub fn canup_bin() -> PathBuf {
    let path = target_dir().join("debug/canup");
    assert!(path.is_file(), "{} is missing: run the tests with `cargo xtask test`", path.display());
    path
}

/// The cargo profile guests are built with (see the workspace `Cargo.toml`).
pub const GUEST_PROFILE: &str = "step";

/// A guest component built by `cargo xtask build-guests` (run by `cargo xtask test`).
pub fn guest_wasm(crate_name: &str) -> PathBuf {
    let path = target_dir().join("wasm32-wasip2").join(GUEST_PROFILE).join(format!("{}.wasm", crate_name.replace('-', "_")));
    assert!(path.is_file(), "guest module {} is missing: run the tests with `cargo xtask test`, which builds the guests first", path.display());
    path
}

/// Serves `router` on an ephemeral 127.0.0.1 port for the life of the current runtime.
pub async fn serve(router: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}

/// Whether a process still runs (a zombie counts as gone: it runs nothing).
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}
