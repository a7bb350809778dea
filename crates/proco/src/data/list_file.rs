//! Bring-your-own images listed in a text file, one `relative/path.jpg label` per line: the
//! format of the ImageNet-LT (`ImageNet_LT_train.txt`) and iNaturalist 2018 split lists.
//!
//! Paths are relative to a root directory and may not leave it: absolute paths and `..`
//! components are refused when the list is read, and each file is resolved (symbolic links
//! included) and checked to lie inside the root before it is opened.

use std::fs;
use std::path::{Component, Path, PathBuf};

use image::RgbImage;

use crate::data::folder::decode_rgb;
use crate::data::Dataset;
use crate::error::{ProcoError, Result};

/// Largest number of classes a list file may declare (labels must be below it).
pub const MAX_CLASSES: usize = 1_000_000;

/// Images under a root directory, listed with their labels in a text file; decoded lazily.
///
/// Labels are the integers of the list (0-based); the number of classes is the largest label
/// plus one. Sample order is the order of the lines.
#[derive(Debug, Clone)]
pub struct ListFileDataset {
    /// The root, canonical (absolute, no symbolic links).
    root: PathBuf,
    /// The list file, for error messages.
    list: PathBuf,
    samples: Vec<Entry>,
    num_classes: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Path relative to the root, as listed.
    path: PathBuf,
    label: u32,
    /// 1-based line of the list file.
    line: usize,
}

impl ListFileDataset {
    /// Reads the list file `list`, whose paths are relative to `root`.
    ///
    /// Each non-blank line is a path, white space, and a non-negative integer label (the last
    /// white-space-separated field; the path may itself contain spaces). Fails with
    /// [`ProcoError::Data`] naming the list file and line for a line without a label, a label
    /// that is not a non-negative integer, or a path that is absolute or contains `..`; for a
    /// list without entries; and with [`ProcoError::Io`] when the list or the root cannot be
    /// read. Image files are not opened here: see [`Self::resolve`].
    pub fn open(list: &Path, root: &Path) -> Result<Self> {
        let bytes = fs::read(list).map_err(|source| ProcoError::Io { path: list.to_path_buf(), source })?;
        Self::from_bytes(&bytes, list, root)
    }

    /// [`Self::open`] on the list's contents `bytes` already read; `list` names it in errors.
    pub fn from_bytes(bytes: &[u8], list: &Path, root: &Path) -> Result<Self> {
        let root = fs::canonicalize(root).map_err(|source| ProcoError::Io { path: root.to_path_buf(), source })?;
        let text = std::str::from_utf8(bytes).map_err(|_| ProcoError::Data { path: list.to_path_buf(), reason: "the list is not UTF-8 text".into() })?;
        let mut samples = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                samples.push(parse_line(line, i + 1).map_err(|reason| ProcoError::Data { path: list.to_path_buf(), reason })?);
            }
        }
        let Some(max_label) = samples.iter().map(|e| e.label).max() else {
            return Err(ProcoError::Data { path: list.to_path_buf(), reason: "the list has no entries".into() });
        };
        // Classes are 0..=max label: a stray huge label would size every per-class table.
        if max_label as usize >= MAX_CLASSES {
            return Err(ProcoError::Data {
                path: list.to_path_buf(),
                reason: format!("label {max_label} is beyond the supported {MAX_CLASSES} classes (iNaturalist 2018 has 8,142); is a line corrupt?"),
            });
        }
        Ok(Self { root, list: list.to_path_buf(), samples, num_classes: max_label as usize + 1 })
    }

    /// The file of sample i (i < len), resolved: symbolic links followed, made absolute.
    /// Fails with [`ProcoError::Io`] if it does not exist, and with [`ProcoError::Data`] if it
    /// resolves outside the root (through a symbolic link), naming the list line.
    pub fn resolve(&self, i: usize) -> Result<PathBuf> {
        let entry = &self.samples[i];
        let joined = self.root.join(&entry.path);
        let real = fs::canonicalize(&joined).map_err(|source| ProcoError::Io { path: joined.clone(), source })?;
        if !real.starts_with(&self.root) {
            let reason = format!(
                "resolves to {}, outside the root {} (listed at {}:{}); symbolic links must stay inside the root",
                real.display(),
                self.root.display(),
                self.list.display(),
                entry.line
            );
            return Err(ProcoError::Data { path: joined, reason });
        }
        Ok(real)
    }
}

/// Parses `path label` (line number `n`, for messages).
fn parse_line(line: &str, n: usize) -> std::result::Result<Entry, String> {
    let line = line.trim();
    let Some((path, label)) = line.rsplit_once(|c: char| c.is_whitespace()) else {
        return Err(format!("line {n}: expected `relative/path label`, found {line:?}"));
    };
    let label: u32 = label.parse().map_err(|_| format!("line {n}: label {label:?} is not a non-negative integer"))?;
    let path = PathBuf::from(path.trim_end());
    if path.components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_))) {
        return Err(format!("line {n}: path {} leaves the root; list paths must be relative, without `..`", path.display()));
    }
    Ok(Entry { path, label, line: n })
}

impl Dataset for ListFileDataset {
    fn len(&self) -> usize {
        self.samples.len()
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn label(&self, i: usize) -> usize {
        self.samples[i].label as usize
    }
    fn image(&self, i: usize) -> Result<RgbImage> {
        decode_rgb(&self.resolve(i)?)
    }
}
