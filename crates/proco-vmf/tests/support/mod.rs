//! Shared by the golden-vector tests of every crate: where the golden files are and how to read
//! them. Every accessor fails the test, naming the file and the JSON path, when a field is
//! absent or has the wrong type, so a golden set of another size or with a missing column is
//! reported, never silently skipped or truncated.
#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The golden directory: `PROCO_GOLDEN_DIR` if set (a relative path is taken from the
/// directory the test command was started in, see [`resolve_golden_dir`]), else the
/// repository's own set in `golden/` at the workspace root.
pub fn golden_dir() -> PathBuf {
    resolve_golden_dir(std::env::var_os("PROCO_GOLDEN_DIR"), std::env::var_os("PWD"))
}

/// [`golden_dir`] from the values of `PROCO_GOLDEN_DIR` and `PWD`. Cargo runs each test
/// binary in its crate's directory but leaves the caller's `PWD` as it was, so a relative
/// path is joined to `PWD` when that is an absolute path naming a directory (else to the
/// process's working directory).
pub fn resolve_golden_dir(var: Option<OsString>, pwd: Option<OsString>) -> PathBuf {
    match var {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                return dir;
            }
            let caller = pwd
                .map(PathBuf::from)
                .filter(|p| p.is_absolute() && p.is_dir())
                .or_else(|| std::env::current_dir().ok())
                .unwrap_or_else(|| PathBuf::from("."));
            caller.join(dir)
        }
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../golden"),
    }
}

/// One parsed golden file, with its name for messages.
pub struct Golden {
    pub name: String,
    pub root: Value,
}

/// Parses one golden JSON file, panicking with the path and the fix when it is absent.
pub fn load(name: &str) -> Golden {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} could not be read ({e}); the repository's set is golden/ (scripts/golden.sh regenerates it), \
             or set PROCO_GOLDEN_DIR to a directory of the same schema",
            path.display()
        )
    });
    let root = serde_json::from_str(&text).unwrap_or_else(|e| panic!("golden file {} is not valid JSON: {e}", path.display()));
    Golden { name: display(&path), root }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// A place in a golden file: the file and the JSON path to a value, carried along so that
/// every failure names exactly which entry was wrong or missing.
#[derive(Clone)]
pub struct At<'a> {
    pub file: &'a str,
    pub value: &'a Value,
    path: String,
}

impl Golden {
    /// The file's top-level object.
    pub fn at(&self) -> At<'_> {
        At { file: &self.name, value: &self.root, path: String::new() }
    }
}

impl<'a> At<'a> {
    /// Where this value is, for messages: `file: path`.
    pub fn here(&self) -> String {
        format!("{}: {}", self.file, if self.path.is_empty() { "<top level>" } else { &self.path })
    }

    /// The field `key`, failing when it is absent.
    pub fn get(&self, key: &str) -> At<'a> {
        let value = self.value.get(key).unwrap_or_else(|| panic!("{}: field `{key}` is missing", self.here()));
        At { file: self.file, value, path: format!("{}.{key}", self.path) }
    }

    /// The field `key`, if present (for optional fields only).
    pub fn get_opt(&self, key: &str) -> Option<At<'a>> {
        self.value.get(key).map(|value| At { file: self.file, value, path: format!("{}.{key}", self.path) })
    }

    /// The elements of this array, failing when it is not an array or is empty.
    pub fn items(&self) -> Vec<At<'a>> {
        let arr = self.value.as_array().unwrap_or_else(|| panic!("{} is not an array", self.here()));
        assert!(!arr.is_empty(), "{} holds no case: a golden file must hold at least one", self.here());
        arr.iter().enumerate().map(|(i, value)| At { file: self.file, value, path: format!("{}[{i}]", self.path) }).collect()
    }

    /// A number. `null` (the schema's non-finite value, allowed only in columns no test reads)
    /// fails like any other non-number.
    pub fn f64(&self) -> f64 {
        self.value.as_f64().unwrap_or_else(|| panic!("{} is not a number: {}", self.here(), self.value))
    }

    /// A non-negative integer.
    pub fn usize(&self) -> usize {
        let n = self.value.as_u64().unwrap_or_else(|| panic!("{} is not a non-negative integer: {}", self.here(), self.value));
        usize::try_from(n).unwrap_or_else(|_| panic!("{} = {n} does not fit in usize", self.here()))
    }

    /// An integer.
    pub fn i64(&self) -> i64 {
        self.value.as_i64().unwrap_or_else(|| panic!("{} is not an integer: {}", self.here(), self.value))
    }

    /// A string.
    pub fn str(&self) -> &'a str {
        self.value.as_str().unwrap_or_else(|| panic!("{} is not a string: {}", self.here(), self.value))
    }

    /// A vector of numbers of exactly `len` entries.
    pub fn vec(&self, len: usize) -> Vec<f64> {
        let v = self.vec_len_any();
        assert_eq!(v.len(), len, "{} has {} entries, the case's sizes say {len}", self.here(), v.len());
        v
    }

    /// A non-empty vector of numbers, of whatever length.
    pub fn vec_any(&self) -> Vec<f64> {
        let v = self.vec_len_any();
        assert!(!v.is_empty(), "{} is empty", self.here());
        v
    }

    fn vec_len_any(&self) -> Vec<f64> {
        let arr = self.value.as_array().unwrap_or_else(|| panic!("{} is not an array", self.here()));
        arr.iter().enumerate().map(|(i, v)| At { file: self.file, value: v, path: format!("{}[{i}]", self.path) }.f64()).collect()
    }

    /// A vector of integers of exactly `len` entries.
    pub fn ints(&self, len: usize) -> Vec<i64> {
        let arr = self.value.as_array().unwrap_or_else(|| panic!("{} is not an array", self.here()));
        assert_eq!(arr.len(), len, "{} has {} entries, the case's sizes say {len}", self.here(), arr.len());
        arr.iter().enumerate().map(|(i, v)| At { file: self.file, value: v, path: format!("{}[{i}]", self.path) }.i64()).collect()
    }

    /// A non-empty vector of integers, of whatever length.
    pub fn ints_any(&self) -> Vec<i64> {
        let len = self.value.as_array().map_or(0, Vec::len);
        assert!(len > 0, "{} is not a non-empty array", self.here());
        self.ints(len)
    }

    /// A vector of strings of exactly `len` entries.
    pub fn strs(&self, len: usize) -> Vec<&'a str> {
        let arr = self.value.as_array().unwrap_or_else(|| panic!("{} is not an array", self.here()));
        assert_eq!(arr.len(), len, "{} has {} entries, the case's sizes say {len}", self.here(), arr.len());
        arr.iter().enumerate().map(|(i, v)| At { file: self.file, value: v, path: format!("{}[{i}]", self.path) }.str()).collect()
    }

    /// A `rows` x `cols` matrix, flattened row-major; every row must have `cols` entries.
    pub fn matrix(&self, rows: usize, cols: usize) -> Vec<f64> {
        let arr = self.value.as_array().unwrap_or_else(|| panic!("{} is not a matrix", self.here()));
        assert_eq!(arr.len(), rows, "{} has {} rows, the case's sizes say {rows}", self.here(), arr.len());
        let mut out = Vec::with_capacity(rows * cols);
        for (i, row) in arr.iter().enumerate() {
            out.extend(At { file: self.file, value: row, path: format!("{}[{i}]", self.path) }.vec(cols));
        }
        out
    }
}

/// Pairs two slices element by element, failing (instead of silently truncating, as a bare
/// `zip` would) when their lengths differ.
pub fn zip_exact<'a, A, B>(a: &'a [A], b: &'a [B], what: &str) -> impl Iterator<Item = (&'a A, &'a B)> {
    assert_eq!(a.len(), b.len(), "{what}: {} values against {} expected", a.len(), b.len());
    a.iter().zip(b)
}
