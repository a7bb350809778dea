//! Bring-your-own images listed in a text file, one `relative/path.jpg label` per line: the
//! format of the ImageNet-LT (`ImageNet_LT_train.txt`) and iNaturalist 2018 split lists.
//!
//! Paths are relative to a root directory and may not leave it: absolute paths and `..`
//! components are refused when the list is read, and each file is resolved (symbolic links
//! included) and checked to lie inside the root before it is opened.
//!
//! Memory: the paths are kept in one buffer (the list's own bytes, compacted in place), with
//! three 4-byte numbers per sample (end of its path, label, line), so iNaturalist's 437,513
//! training lines (about 30 MB of text) take about 30 MB, not a heap allocation per path.

use std::fs;
use std::path::{Component, Path, PathBuf};

use image::RgbImage;

use crate::data::decode::{decode_file, decode_file_reduced, DecodedImage};
use crate::data::Dataset;
use crate::error::{ImageProblem, ProcoError, Result};

/// Largest number of classes a list file may declare (labels must be below it).
pub const MAX_CLASSES: usize = 1_000_000;

/// Images under a root directory, listed with their labels in a text file; decoded lazily.
///
/// Labels are the integers of the list (0-based); the number of classes is the largest label
/// plus one unless set with [`ListFileDataset::with_num_classes`]. Sample order is the order
/// of the lines.
#[derive(Debug, Clone)]
pub struct ListFileDataset {
    /// The root, canonical (absolute, no symbolic links).
    root: PathBuf,
    /// The list file, for error messages.
    list: PathBuf,
    /// Every listed path, back to back.
    paths: String,
    /// End of sample i's path in `paths` (it starts at the previous end).
    ends: Vec<u32>,
    labels: Vec<u32>,
    /// 1-based line of the list file of each sample.
    lines: Vec<u32>,
    num_classes: usize,
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
        Self::from_vec(bytes, list, root)
    }

    /// [`Self::open`] on the list's contents `bytes` already read; `list` names it in errors.
    pub fn from_bytes(bytes: &[u8], list: &Path, root: &Path) -> Result<Self> {
        Self::from_vec(bytes.to_vec(), list, root)
    }

    /// [`Self::open`] that skips malformed lines instead of failing on the first, returning
    /// them as [`ProcoError::Data`] errors (each naming the list and line) beside the
    /// dataset of the good lines: for a check that reports every problem at once.
    pub fn open_lenient(list: &Path, root: &Path) -> Result<(Self, Vec<ProcoError>)> {
        let bytes = fs::read(list).map_err(|source| ProcoError::Io { path: list.to_path_buf(), source })?;
        let mut skipped = Vec::new();
        let ds = Self::parse(bytes, list, root, Some(&mut skipped))?;
        Ok((ds, skipped))
    }

    /// [`Self::open`] on the list's contents, reusing `bytes` as the path buffer.
    fn from_vec(bytes: Vec<u8>, list: &Path, root: &Path) -> Result<Self> {
        Self::parse(bytes, list, root, None)
    }

    /// Parses a list; with `skipped`, bad lines are pushed there instead of failing.
    fn parse(bytes: Vec<u8>, list: &Path, root: &Path, mut skipped: Option<&mut Vec<ProcoError>>) -> Result<Self> {
        let root = fs::canonicalize(root).map_err(|source| ProcoError::Io { path: root.to_path_buf(), source })?;
        let data = |reason: String| ProcoError::Data { path: list.to_path_buf(), reason };
        if bytes.len() > u32::MAX as usize {
            return Err(data(format!("the list is {} bytes; lists up to 4 GiB are supported", bytes.len())));
        }
        let rows = bytes.iter().filter(|&&b| b == b'\n').count() + 1;
        let (mut ends, mut labels, mut lines) = (Vec::with_capacity(rows), Vec::with_capacity(rows), Vec::with_capacity(rows));
        // Paths are moved to the front of the same buffer as they are parsed: each line's
        // path lies at or after the write position, so nothing unread is overwritten.
        let mut buf = bytes;
        let (mut read, mut write, mut n) = (0usize, 0usize, 0u32);
        while read < buf.len() {
            n += 1;
            let end = buf[read..].iter().position(|&b| b == b'\n').map_or(buf.len(), |p| read + p);
            let parsed = std::str::from_utf8(&buf[read..end]).map_err(|_| format!("line {n} is not UTF-8")).and_then(|line| {
                if line.trim().is_empty() {
                    Ok(None)
                } else {
                    parse_line(line, n as usize).map(|(path, label)| Some((read + (path.as_ptr() as usize - line.as_ptr() as usize), path.len(), label)))
                }
            });
            let parsed = match (parsed, skipped.as_deref_mut()) {
                (Ok(p), _) => p,
                (Err(reason), Some(skipped)) => {
                    skipped.push(data(reason));
                    None
                }
                (Err(reason), None) => return Err(data(reason)),
            };
            if let Some((start, len, label)) = parsed {
                buf.copy_within(start..start + len, write);
                write += len;
                ends.push(write as u32);
                labels.push(label);
                lines.push(n);
            }
            read = end + 1;
        }
        buf.truncate(write);
        buf.shrink_to_fit();
        // Each kept line was checked to be UTF-8 and each path is a sub-slice of such a line
        // cut at character boundaries, so the buffer is valid UTF-8.
        let paths = String::from_utf8(buf).map_err(|_| data("the list is not UTF-8 text".into()))?;
        let Some(&max_label) = labels.iter().max() else {
            return Err(data("the list has no entries".into()));
        };
        Ok(Self { root, list: list.to_path_buf(), paths, ends, labels, lines, num_classes: max_label as usize + 1 })
    }

    /// The same samples with `num_classes` classes (a val or test list whose classes are the
    /// training list's). Fails with [`ProcoError::Data`] naming the list line of the first
    /// label that is not below `num_classes`.
    pub fn with_num_classes(mut self, num_classes: usize) -> Result<Self> {
        if let Some(e) = self.labels_outside(num_classes).into_iter().next() {
            return Err(e);
        }
        self.num_classes = num_classes;
        Ok(self)
    }

    /// A [`ProcoError::Data`] naming the list line of every label not below `num_classes`.
    pub fn labels_outside(&self, num_classes: usize) -> Vec<ProcoError> {
        (0..self.labels.len())
            .filter(|&i| self.labels[i] as usize >= num_classes)
            .map(|i| ProcoError::Data {
                path: self.list.clone(),
                reason: format!(
                    "line {}: label {} is outside the {num_classes} classes of the training set (labels 0..{}); fix the line or the list",
                    self.lines[i],
                    self.labels[i],
                    num_classes.saturating_sub(1)
                ),
            })
            .collect()
    }

    /// The list file this dataset was read from.
    pub fn list_path(&self) -> &Path {
        &self.list
    }

    /// The path of sample i (i < len) as listed, relative to the root.
    pub fn listed_path(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.paths[start..self.ends[i] as usize]
    }

    /// `list.txt:LINE` of sample i (i < len), as error messages name it.
    pub fn listed_at(&self, i: usize) -> String {
        format!("{}:{}", self.list.display(), self.lines[i])
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Bytes held for the paths and the per-sample numbers (what the dataset costs in memory).
    pub fn heap_bytes(&self) -> usize {
        self.paths.capacity() + 4 * (self.ends.capacity() + self.labels.capacity() + self.lines.capacity())
    }

    /// The file of sample i (i < len), resolved: symbolic links followed, made absolute.
    /// Fails with [`ProcoError::Image`] naming the file and list line if it does not exist,
    /// cannot be read, or resolves outside the root (through a symbolic link).
    pub fn resolve(&self, i: usize) -> Result<PathBuf> {
        let joined = self.root.join(self.listed_path(i));
        let fail = |problem| ProcoError::Image { path: joined.clone(), listed_at: Some(self.listed_at(i)), problem };
        let real = fs::canonicalize(&joined).map_err(|e| {
            fail(match e.kind() {
                std::io::ErrorKind::NotFound => ImageProblem::Missing,
                _ => ImageProblem::Unreadable(e.to_string()),
            })
        })?;
        if !real.starts_with(&self.root) {
            return Err(fail(ImageProblem::OutsideRoot { resolved: real.display().to_string(), root: self.root.display().to_string() }));
        }
        Ok(real)
    }
}

/// Parses `path label` (line number `n`, for messages) into the path, as a sub-slice of
/// `line`, and the label.
fn parse_line(line: &str, n: usize) -> std::result::Result<(&str, u32), String> {
    let line = line.trim();
    let Some((path, label)) = line.rsplit_once(|c: char| c.is_whitespace()) else {
        return Err(format!("line {n}: expected `relative/path label`, found {line:?}"));
    };
    let label: u32 = label.parse().map_err(|_| format!("line {n}: label {label:?} is not a non-negative integer"))?;
    // Classes are 0..=the largest label: a stray huge label would size every per-class table.
    if label as usize >= MAX_CLASSES {
        return Err(format!("line {n}: label {label} is beyond the supported {MAX_CLASSES} classes (iNaturalist 2018 has 8,142); is the line corrupt?"));
    }
    let path = path.trim_end();
    if Path::new(path).components().any(|c| matches!(c, Component::ParentDir | Component::RootDir | Component::Prefix(_))) {
        return Err(format!("line {n}: path {path} leaves the root; list paths must be relative, without `..`"));
    }
    Ok((path, label))
}

impl ListFileDataset {
    fn image_error(&self, i: usize, problem: crate::error::ImageProblem) -> ProcoError {
        ProcoError::Image { path: self.root.join(self.listed_path(i)), listed_at: Some(self.listed_at(i)), problem }
    }
}

impl Dataset for ListFileDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }
    fn image(&self, i: usize) -> Result<RgbImage> {
        let path = self.resolve(i)?;
        decode_file(&path).map_err(|problem| self.image_error(i, problem))
    }
    fn image_reduced(&self, i: usize, choose: &dyn Fn(u32, u32) -> u32) -> Result<DecodedImage> {
        let path = self.resolve(i)?;
        decode_file_reduced(&path, choose).map_err(|problem| self.image_error(i, problem))
    }
    fn describe(&self, i: usize) -> String {
        format!("{} ({})", self.root.join(self.listed_path(i)).display(), self.listed_at(i))
    }
}
