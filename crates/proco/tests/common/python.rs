//! The project's Python, for the tests that compare with PyTorch or TensorBoard.

use std::path::PathBuf;

/// $VIRTUAL_ENV's python, else .venv's at the workspace root (scripts/setup.sh makes it).
pub fn python() -> PathBuf {
    let venv = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    venv.join("bin/python")
}
