//! Our own binaries, as built by `cargo build` (the Makefile builds them
//! before the tests run: cargo cannot build them from inside a test).

use std::path::PathBuf;

use anyhow::{Result, bail};

/// The target directory cargo builds into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Path of `redis-webhook` or `redis-operator` (debug build).
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = target_dir().join("debug").join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build --workspace --bins` (make test does) before the tests",
            path.display()
        );
    }
    Ok(path)
}

/// The repository root, for the chart and example manifests.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Pins rustls to ring in a test process (HTTP clients need a provider);
/// idempotent, so every test may call it.
pub fn init_crypto() {
    // Err only means another test installed it first.
    let _ = rustls_ring_default();
}

fn rustls_ring_default() -> Result<(), ()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| ())
}
