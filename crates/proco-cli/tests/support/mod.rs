//! Helpers shared by the binary's integration tests.
// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the built `proco` binary with `args` (no backtraces in its messages).
pub fn proco(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proco")).args(args).env("RUST_BACKTRACE", "0").output().expect("the proco binary runs")
}

/// Where the real CIFAR-10 lies: `PROCO_DATA_DIR`, else the checkout's `data/`.
pub fn data_dir() -> PathBuf {
    std::env::var_os("PROCO_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data"))
}

/// Every file below `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
