//! A CIFAR-LT run's data in a fraction of the official release's bytes: the long-tailed
//! training selection at one imbalance ratio and the first N test images, in CIFAR's binary
//! record layout, with a manifest of checksums. For machines the official archive cannot
//! reach (a lent GPU machine takes a few tens of MB of luggage): the CIFAR-10-LT IF 100
//! training set is 38 MB, the release's training files 154 MB.
//!
//! Written by [`write_subset`] (`proco data subset`) from the checked official files; read by
//! the CIFAR recipes when `--data-dir` holds [`MANIFEST`] and no official release. The
//! training images are the ones [`long_tailed`] selects from the official release, in its
//! order, so a run on the subset trains on exactly the data of a run on the release; only the
//! test figures are over the first N test images rather than all 10,000.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::cifar::{decode_batch, load_cifar, md5_file, Checksum, CifarVariant, Layout, Split};
use crate::data::long_tail::{long_tailed, LongTailProfile};
use crate::data::memory::InMemoryDataset;
use crate::data::Dataset;
use crate::error::{ProcoError, Result};

/// The manifest's file name.
pub const MANIFEST: &str = "proco-cifar-lt-subset.json";
const TRAIN_FILE: &str = "train.bin";
const TEST_FILE: &str = "test.bin";

/// What a subset holds, with the checksums of its two files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubsetManifest {
    /// `cifar10` or `cifar100`.
    pub variant: String,
    /// Imbalance ratio of the training selection.
    pub imbalance_ratio: f64,
    /// Training images (the long-tailed selection).
    pub train_images: usize,
    /// Test images (the first ones of the official test set).
    pub test_images: usize,
    /// MD5 of `train.bin`.
    pub train_md5: String,
    /// MD5 of `test.bin`.
    pub test_md5: String,
    /// Class names, in label order.
    pub class_names: Vec<String>,
}

fn variant_name(v: CifarVariant) -> &'static str {
    match v {
        CifarVariant::Cifar10 => "cifar10",
        CifarVariant::Cifar100 => "cifar100",
    }
}

/// Appends sample `i` of `ds` as a binary record of `variant` (CIFAR-100: coarse label 0).
fn push_record(out: &mut Vec<u8>, ds: &InMemoryDataset, i: usize, variant: CifarVariant) {
    if variant == CifarVariant::Cifar100 {
        out.push(0);
    }
    out.push(ds.label(i) as u8);
    // Interleaved RGB in memory, planar R, G, B planes on disk.
    let px = ds.pixels_of(i);
    for c in 0..3 {
        out.extend(px.iter().skip(c).step_by(3));
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<String> {
    std::fs::write(path, bytes).map_err(ProcoError::io_at(path))?;
    md5_file(path)
}

/// Writes the subset of the official `variant` release in `root` (checked as training
/// checks it) into `out`: the long-tailed selection at `imbalance_ratio` and the first
/// `test_images` test images (all when `None`).
///
/// # Errors
/// As [`load_cifar`] for the release; [`ProcoError::InvalidConfig`] for 0 test images or an
/// imbalance ratio below 1; [`ProcoError::Io`] when `out` cannot be written.
pub fn write_subset(root: &Path, variant: CifarVariant, imbalance_ratio: f64, test_images: Option<usize>, out: &Path) -> Result<SubsetManifest> {
    if test_images == Some(0) {
        return Err(ProcoError::InvalidConfig { reason: "a subset needs at least 1 test image".into() });
    }
    let train = std::sync::Arc::new(load_cifar(root, variant, Split::Train, Checksum::Official)?);
    let test = load_cifar(root, variant, Split::Test, Checksum::Official)?;
    let (lt, _) = long_tailed(train.clone(), LongTailProfile::Exponential, imbalance_ratio, 0)?;
    std::fs::create_dir_all(out).map_err(ProcoError::io_at(out))?;
    let mut bytes = Vec::new();
    for &i in lt.indices() {
        push_record(&mut bytes, &train, i, variant);
    }
    let train_md5 = write_file(&out.join(TRAIN_FILE), &bytes)?;
    let n_test = test_images.unwrap_or(test.len()).min(test.len());
    bytes.clear();
    for i in 0..n_test {
        push_record(&mut bytes, &test, i, variant);
    }
    let test_md5 = write_file(&out.join(TEST_FILE), &bytes)?;
    let manifest = SubsetManifest {
        variant: variant_name(variant).into(),
        imbalance_ratio,
        train_images: lt.indices().len(),
        test_images: n_test,
        train_md5,
        test_md5,
        class_names: train.class_names().map(<[String]>::to_vec).unwrap_or_default(),
    };
    let path = out.join(MANIFEST);
    let text = serde_json::to_string_pretty(&manifest).map_err(|e| ProcoError::InvalidConfig { reason: e.to_string() })?;
    std::fs::write(&path, text).map_err(ProcoError::io_at(&path))?;
    Ok(manifest)
}

/// Whether `dir` holds a subset (its manifest).
pub fn is_subset(dir: &Path) -> bool {
    dir.join(MANIFEST).is_file()
}

/// The manifest of the subset in `dir`.
///
/// # Errors
/// [`ProcoError::Io`] / [`ProcoError::Data`] for a missing or unreadable manifest.
pub fn manifest(dir: &Path) -> Result<SubsetManifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(ProcoError::io_at(&path))?;
    serde_json::from_str(&text).map_err(|e| ProcoError::Data { path, reason: format!("not a subset manifest ({e}); write the subset again from the official release") })
}

/// Reads the subset in `dir` as (training set, test set), after checking that it is of
/// `variant` at `imbalance_ratio` and that both files match the manifest's checksums.
///
/// # Errors
/// [`ProcoError::Data`] naming the file for a missing, damaged or mismatched subset, with
/// how to make a matching one.
pub fn load_subset(dir: &Path, variant: CifarVariant, imbalance_ratio: f64) -> Result<(InMemoryDataset, InMemoryDataset)> {
    let path = dir.join(MANIFEST);
    let m = manifest(dir)?;
    let bad = |path: &Path, what: String| ProcoError::Data {
        path: path.to_path_buf(),
        reason: format!("{what}; write a matching subset ({} at imbalance {imbalance_ratio}) from the official release", variant_name(variant)),
    };
    if m.variant != variant_name(variant) || m.imbalance_ratio != imbalance_ratio {
        return Err(bad(&path, format!("this subset is {} at imbalance {}, the recipe asks for {} at {imbalance_ratio}", m.variant, m.imbalance_ratio, variant_name(variant))));
    }
    let read = |name: &str, md5: &str, count: usize| -> Result<InMemoryDataset> {
        let file = dir.join(name);
        let got = md5_file(&file)?;
        if got != md5 {
            return Err(bad(&file, format!("MD5 {got} differs from the manifest's {md5} (a damaged copy?)")));
        }
        let bytes = std::fs::read(&file).map_err(ProcoError::io_at(&file))?;
        let ds = decode_batch(&bytes, &file, variant, Layout::Binary)?;
        if ds.len() != count {
            return Err(bad(&file, format!("{} images, the manifest says {count}", ds.len())));
        }
        if m.class_names.len() == variant.num_classes() {
            return ds.with_class_names(m.class_names.clone());
        }
        Ok(ds)
    };
    Ok((read(TRAIN_FILE, &m.train_md5, m.train_images)?, read(TEST_FILE, &m.test_md5, m.test_images)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cifar_root() -> std::path::PathBuf {
        std::env::var_os("PROCO_DATA_DIR").map(std::path::PathBuf::from).unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data"))
    }

    #[test]
    fn a_subset_holds_exactly_the_long_tailed_selection_and_the_first_test_images() {
        let root = cifar_root();
        let out = std::env::temp_dir().join(format!("proco-subset-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let m = write_subset(&root, CifarVariant::Cifar10, 100.0, Some(300), &out).expect("CIFAR-10 under data/ (scripts/fetch-cifar10.sh)");
        assert_eq!((m.train_images, m.test_images), (12406, 300));
        let (train, test) = load_subset(&out, CifarVariant::Cifar10, 100.0).unwrap();
        let full = std::sync::Arc::new(load_cifar(&root, CifarVariant::Cifar10, Split::Train, Checksum::Official).unwrap());
        let (lt, _) = long_tailed(full.clone(), LongTailProfile::Exponential, 100.0, 0).unwrap();
        for (k, &i) in lt.indices().iter().enumerate() {
            assert_eq!((train.label(k), train.pixels_of(k)), (full.label(i), full.pixels_of(i)), "training image {k}");
        }
        let full_test = load_cifar(&root, CifarVariant::Cifar10, Split::Test, Checksum::Official).unwrap();
        for k in 0..300 {
            assert_eq!((test.label(k), test.pixels_of(k)), (full_test.label(k), full_test.pixels_of(k)), "test image {k}");
        }
        assert_eq!(train.class_names(), full.class_names());

        let err = load_subset(&out, CifarVariant::Cifar10, 50.0).unwrap_err().to_string();
        assert!(err.contains("at imbalance 100") && err.contains("write a matching subset (cifar10 at imbalance 50)"), "{err}");
        // A damaged training file is refused by its checksum.
        let file = out.join(TRAIN_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[5000] ^= 1;
        std::fs::write(&file, bytes).unwrap();
        let err = load_subset(&out, CifarVariant::Cifar10, 100.0).unwrap_err().to_string();
        assert!(err.contains("differs from the manifest"), "{err}");
        let _ = std::fs::remove_dir_all(&out);
    }
}
