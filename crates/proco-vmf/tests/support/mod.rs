//! Shared by the golden-vector tests of every crate: where the golden files are and how to read them.
#![allow(dead_code)]

use std::path::PathBuf;

/// The golden directory: `PROCO_GOLDEN_DIR` if set, else `../shared/golden` next to the
/// workspace root. A missing directory or file is a test failure with a message, never a skip.
pub fn golden_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROCO_GOLDEN_DIR") {
        return PathBuf::from(dir);
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    workspace.join("../shared/golden")
}

/// Parses one golden JSON file, panicking with the path and the fix when it is absent.
pub fn load(name: &str) -> serde_json::Value {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} could not be read ({e}); set PROCO_GOLDEN_DIR to the directory holding the golden vectors",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("golden file {} is not valid JSON: {e}", path.display()))
}

/// A JSON number as f64 (`null` becomes NaN).
pub fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A JSON array of numbers.
pub fn vec1(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(f).collect()
}

/// A JSON matrix (array of arrays) of numbers, row-major.
pub fn vec2(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array().expect("matrix").iter().map(vec1).collect()
}
