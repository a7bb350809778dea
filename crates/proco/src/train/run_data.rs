//! The data of a run, assembled from a recipe and a data directory: the training set (the
//! long-tailed selection on CIFAR; the list or folder as it is elsewhere), cut down by the
//! recipe's `limit`, the evaluation splits, the views, and the training images per class.
//! The command line and a library user get the same run from the same recipe.
//!
//! Layouts of the data directory, by [`DatasetKind`]:
//! - CIFAR-10 / 100: `cifar-10-batches-bin/` (or the other official forms, see
//!   [`crate::data::cifar`]); the test set selects the best epoch, as the authors' code does.
//! - ImageNet-LT: `ImageNet_LT_train.txt` and `ImageNet_LT_val.txt` and / or
//!   `ImageNet_LT_test.txt`, image paths relative to the directory; val selects the best
//!   epoch, test is reported beside it.
//! - iNaturalist 2018: `iNaturalist18_train.txt`, `iNaturalist18_val.txt`; val selects and
//!   is reported.
//! - Own data: list files `train.txt` with `val.txt` and / or `test.txt` (paths relative to
//!   the directory) where `train.txt` exists; otherwise class sub-folders `train/<class>/...`
//!   with `val/` and / or `test/` beside it. Val selects where there is one, else test.
//!
//! For list files the classes are 0..=the largest training label and every class needs at
//! least one training image; val and test labels must be training classes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::data::cifar::{load_cifar, Checksum, CifarVariant, Split};
use crate::data::cifar_subset;
use crate::data::folder::ImageFolder;
use crate::data::list_file::ListFileDataset;
use crate::data::long_tail::{long_tailed, LongTailProfile};
use crate::data::{class_counts, Dataset, Subset};
use crate::error::{ProcoError, Result};
use crate::loader::SampleTransform;
use crate::pipeline::{CifarTestView, CifarTrainViews, ImageNetTestView, ImageNetTrainViews};
use crate::train::recipe::{DatasetKind, Recipe};

/// A split the run evaluates every epoch.
#[derive(Clone)]
pub struct EvalSplit {
    /// `val` or `test`.
    pub name: &'static str,
    /// Its samples.
    pub dataset: Arc<dyn Dataset>,
}

/// Everything a run reads.
#[derive(Clone)]
pub struct RunData {
    /// Training set.
    pub train: Arc<dyn Dataset>,
    /// Evaluation splits; the first selects the best epoch.
    pub eval: Vec<EvalSplit>,
    /// Classification view + two contrastive views.
    pub train_transform: Arc<dyn SampleTransform>,
    /// Test-time preprocessing (one view).
    pub test_transform: Arc<dyn SampleTransform>,
    /// Training images per class (for the prior and the shot groups).
    pub class_counts: Vec<usize>,
    /// Class names, where the source has them.
    pub class_names: Option<Vec<String>>,
}

impl RunData {
    /// The split that selects the best epoch.
    pub fn selection(&self) -> Result<&EvalSplit> {
        self.eval.first().ok_or_else(|| ProcoError::InvalidConfig { reason: "the run has no val or test split to evaluate".into() })
    }

    /// A split by name.
    pub fn split(&self, name: &str) -> Option<&EvalSplit> {
        self.eval.iter().find(|s| s.name == name)
    }
}

/// The list files of ImageNet-LT and iNaturalist 2018 in the authors' layout: (train, val, test).
pub fn list_names(kind: DatasetKind) -> Option<(&'static str, &'static str, Option<&'static str>)> {
    match kind {
        DatasetKind::ImagenetLt => Some(("ImageNet_LT_train.txt", "ImageNet_LT_val.txt", Some("ImageNet_LT_test.txt"))),
        DatasetKind::Inat2018 => Some(("iNaturalist18_train.txt", "iNaturalist18_val.txt", None)),
        DatasetKind::Own => Some(("train.txt", "val.txt", Some("test.txt"))),
        _ => None,
    }
}

/// The sources of a run in `dir` before any image is read: used by [`load_run_data`] and by
/// the data check.
pub enum Sources {
    /// CIFAR in memory.
    Cifar(CifarVariant),
    /// List files: (split name, list path) with the training list first.
    Lists(Vec<(&'static str, PathBuf)>),
    /// Image folders: (split name, folder) with the training folder first.
    Folders(Vec<(&'static str, PathBuf)>),
}

/// Finds the sources of `kind` in `dir`. Fails with [`ProcoError::Data`] naming what is
/// missing and the layout expected.
pub fn find_sources(kind: DatasetKind, dir: &Path) -> Result<Sources> {
    let missing = |reason: String| Err(ProcoError::Data { path: dir.to_path_buf(), reason });
    match kind {
        DatasetKind::Cifar10 => return Ok(Sources::Cifar(CifarVariant::Cifar10)),
        DatasetKind::Cifar100 => return Ok(Sources::Cifar(CifarVariant::Cifar100)),
        // With a train.txt, the lists describe the data (their paths may well point into a
        // train/ folder); without one, train/ is a folder of class folders.
        DatasetKind::Own if dir.join("train").is_dir() && !dir.join("train.txt").is_file() => {
            let splits: Vec<_> = [("train", "train"), ("val", "val"), ("test", "test")].into_iter().map(|(name, d)| (name, dir.join(d))).filter(|(_, p)| p.is_dir()).collect();
            if splits.len() < 2 {
                return missing("own data has train/ but neither val/ nor test/: hold some images out in val/<class>/ or test/<class>/".into());
            }
            return Ok(Sources::Folders(splits));
        }
        _ => {}
    }
    let Some((train, val, test)) = list_names(kind) else { unreachable!("every other kind has list names") };
    let mut splits = vec![("train", dir.join(train))];
    if !splits[0].1.is_file() {
        let also = if kind == DatasetKind::Own { " or a train/ folder of class sub-folders" } else { "" };
        return missing(format!("no {train}{also} here; expected the training list (lines `relative/path.jpg label`) with image paths relative to this directory"));
    }
    splits.extend([("val", Some(val)), ("test", test)].into_iter().filter_map(|(n, f)| Some((n, dir.join(f?)))).filter(|(_, p)| p.is_file()));
    if splits.len() < 2 {
        let names = [Some(val), test].into_iter().flatten().collect::<Vec<_>>().join(" or ");
        return missing(format!("{train} is here but no {names}: a run needs a held-out split to evaluate"));
    }
    Ok(Sources::Lists(splits))
}

/// Assembles the data of `recipe` from `dir` (see the module notes for the layouts).
///
/// ```no_run
/// use proco::train::{load_run_data, train, Recipe, RunOptions};
/// # fn main() -> proco::Result<()> {
/// let recipe = Recipe::preset("own-data")?.merge_toml("image_size = 160\nbatch_size = 64")?;
/// let data = load_run_data(&recipe, std::path::Path::new("/data/birds"))?; // train/ + val/ (+ test/)
/// let options = RunOptions { eval_batch_size: 256, ..RunOptions::new("runs/birds", tch::Device::Cpu) };
/// let summary = train(&recipe, &data, &options, &mut |_progress| {})?;
/// println!("best epoch {:?}", summary.best.map(|b| (b.epoch, b.accuracy.top1, b.test.map(|t| t.top1))));
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`ProcoError::Data`] / [`ProcoError::Io`] for a missing or malformed source (naming the
/// file and line where there is one), [`ProcoError::InvalidConfig`] for a recipe the data
/// cannot serve.
pub fn load_run_data(recipe: &Recipe, dir: &Path) -> Result<RunData> {
    recipe.validate()?;
    let Splits { train, eval, class_names } = load_splits(recipe.dataset, recipe.imbalance_ratio, dir)?;
    let train: Arc<dyn Dataset> = Arc::new(stratified(train, recipe.limit)?);
    // Evaluation splits are cut by class too: the authors' val and test lists are sorted by
    // class, so their first N lines would hold a few classes only.
    let eval = eval.into_iter().map(|s| Ok(EvalSplit { name: s.name, dataset: Arc::new(stratified(s.dataset, recipe.limit)?) })).collect::<Result<Vec<_>>>()?;
    let class_counts = crate::data::class_counts(&*train);
    let (train_transform, test_transform): (Arc<dyn SampleTransform>, Arc<dyn SampleTransform>) = if recipe.dataset.is_cifar() {
        (Arc::new(CifarTrainViews::new()), Arc::new(CifarTestView))
    } else {
        (Arc::new(ImageNetTrainViews::new(recipe.image_size)?), Arc::new(ImageNetTestView::for_size(recipe.image_size)?))
    };
    if train.len() < recipe.batch_size {
        return Err(ProcoError::InvalidConfig {
            reason: format!("the training set has {} images, fewer than one batch of {}; lower batch_size", train.len(), recipe.batch_size),
        });
    }
    Ok(RunData { train, eval, train_transform, test_transform, class_counts, class_names })
}

/// The splits of a dataset, as they are on disk (CIFAR: the long-tailed selection at
/// `imbalance_ratio`), before any limit.
pub struct Splits {
    /// Training set.
    pub train: Arc<dyn Dataset>,
    /// Evaluation splits, the selecting one first.
    pub eval: Vec<EvalSplit>,
    /// Class names, where the source has them.
    pub class_names: Option<Vec<String>>,
}

/// Reads the splits of `kind` from `dir` (see the module notes for the layouts).
///
/// # Errors
/// As [`load_run_data`].
pub fn load_splits(kind: DatasetKind, imbalance_ratio: f64, dir: &Path) -> Result<Splits> {
    let (train, eval, class_names): (Arc<dyn Dataset>, Vec<EvalSplit>, Option<Vec<String>>) = match find_sources(kind, dir)? {
        Sources::Cifar(variant) if cifar_subset::is_subset(dir) => {
            // Already the long-tailed selection (see data::cifar_subset).
            let (train, test) = cifar_subset::load_subset(dir, variant, imbalance_ratio)?;
            let names = train.class_names().map(<[String]>::to_vec);
            (Arc::new(train), vec![EvalSplit { name: "test", dataset: Arc::new(test) }], names)
        }
        Sources::Cifar(variant) => {
            let train_set = Arc::new(load_cifar(dir, variant, Split::Train, Checksum::Official)?);
            let test_set = Arc::new(load_cifar(dir, variant, Split::Test, Checksum::Official)?);
            let names = train_set.class_names().map(<[String]>::to_vec);
            let (lt, _) = long_tailed(train_set, LongTailProfile::Exponential, imbalance_ratio, 0)?;
            (Arc::new(lt), vec![EvalSplit { name: "test", dataset: test_set }], names)
        }
        Sources::Lists(splits) => {
            let train = ListFileDataset::open(&splits[0].1, dir)?;
            let c = train.num_classes();
            let mut eval = Vec::new();
            for (name, path) in &splits[1..] {
                eval.push(EvalSplit { name, dataset: Arc::new(ListFileDataset::open(path, dir)?.with_num_classes(c)?) as Arc<dyn Dataset> });
            }
            check_every_class_trained(&class_counts(&train), &splits[0].1)?;
            (Arc::new(train), eval, None)
        }
        Sources::Folders(splits) => {
            let train = ImageFolder::open(&splits[0].1)?;
            let classes = train.class_names().map(<[String]>::to_vec).unwrap_or_default();
            let mut eval = Vec::new();
            for (name, path) in &splits[1..] {
                eval.push(EvalSplit { name, dataset: Arc::new(ImageFolder::open_with_classes(path, &classes)?) as Arc<dyn Dataset> });
            }
            (Arc::new(train), eval, Some(classes))
        }
    };
    Ok(Splits { train, eval, class_names })
}

/// What [`check_sources`] found.
pub struct DataCheck {
    /// (split name, samples) of every split scanned, training first.
    pub splits: Vec<(&'static str, usize)>,
    /// Every problem: malformed list lines, labels outside the training classes, classes
    /// without training images, and every image that does not decode.
    pub problems: Vec<ProcoError>,
}

/// Scans the data of `kind` in `dir` before a long run: parses every list line (reporting
/// every malformed one), checks val / test labels against the training classes, and decodes
/// every image of every split on `threads` threads, collecting every problem.
/// `progress(split, done, total)` reports the scan.
///
/// # Errors
/// Only when the layout itself is missing (no training list or folder, no held-out split),
/// or a folder or list cannot be read at all; problems with lines and images are reported in
/// [`DataCheck::problems`].
pub fn check_sources(kind: DatasetKind, dir: &Path, threads: usize, progress: &(dyn Fn(&str, usize, usize) + Sync)) -> Result<DataCheck> {
    let mut problems = Vec::new();
    let mut sets: Vec<(&'static str, Arc<dyn Dataset>)> = Vec::new();
    match find_sources(kind, dir)? {
        Sources::Cifar(_) => {
            let ratio = if cifar_subset::is_subset(dir) { cifar_subset::manifest(dir)?.imbalance_ratio } else { 1.0 };
            let s = load_splits(kind, ratio, dir)?;
            sets.push(("train", s.train));
            sets.extend(s.eval.into_iter().map(|e| (e.name, e.dataset)));
        }
        Sources::Lists(lists) => {
            // The training list's classes, once it could be read.
            let mut num_classes: Option<usize> = None;
            for (k, (name, path)) in lists.iter().enumerate() {
                let (ds, skipped) = match ListFileDataset::open_lenient(path, dir) {
                    Ok(read) => read,
                    // An unreadable or empty list is one more problem; the other splits are
                    // still checked.
                    Err(e) => {
                        problems.push(e);
                        continue;
                    }
                };
                problems.extend(skipped);
                if k == 0 {
                    num_classes = Some(ds.num_classes());
                    if let Err(e) = check_every_class_trained(&class_counts(&ds), path) {
                        problems.push(e);
                    }
                } else if let Some(c) = num_classes {
                    problems.extend(ds.labels_outside(c));
                }
                sets.push((name, Arc::new(ds)));
            }
        }
        Sources::Folders(folders) => {
            let train = ImageFolder::open(&folders[0].1)?;
            let classes = train.class_names().map(<[String]>::to_vec).unwrap_or_default();
            sets.push(("train", Arc::new(train)));
            for (name, path) in &folders[1..] {
                match ImageFolder::open_with_classes(path, &classes) {
                    Ok(ds) => sets.push((name, Arc::new(ds))),
                    Err(e) => problems.push(e),
                }
            }
        }
    }
    let mut splits = Vec::new();
    for (name, ds) in &sets {
        let total = ds.len();
        progress(name, 0, total);
        problems.extend(crate::data::check::scan_images(&**ds, threads, &|done| progress(name, done, total)).into_iter().map(|(_, e)| e));
        splits.push((*name, total));
    }
    Ok(DataCheck { splits, problems })
}

/// A class without training images has no prior and no estimate: refuse it, naming the list.
fn check_every_class_trained(counts: &[usize], list: &Path) -> Result<()> {
    let empty: Vec<usize> = counts.iter().enumerate().filter(|(_, &n)| n == 0).map(|(j, _)| j).collect();
    if let Some(&first) = empty.first() {
        let shown = empty.iter().take(10).map(usize::to_string).collect::<Vec<_>>().join(", ");
        return Err(ProcoError::Data {
            path: list.to_path_buf(),
            reason: format!(
                "{} of the {} classes (labels {shown}{}) have no training image; labels must run 0..C-1 with every class present (class {first} first)",
                empty.len(),
                counts.len(),
                if empty.len() > 10 { ", ..." } else { "" }
            ),
        });
    }
    Ok(())
}

/// About `limit` samples keeping the class proportions: the first ceil(n_c * limit / N) of
/// every class, at least one (so the long tail keeps its shape and no class disappears).
pub fn stratified(d: Arc<dyn Dataset>, limit: Option<usize>) -> Result<Subset<dyn Dataset>> {
    let Some(limit) = limit.filter(|&l| l < d.len()) else {
        let n = d.len();
        return Subset::new(d, (0..n).collect());
    };
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); d.num_classes()];
    (0..d.len()).for_each(|i| by_class[d.label(i)].push(i));
    let keep = by_class
        .iter()
        .flat_map(|idx| {
            let k = (idx.len() * limit).div_ceil(d.len()).max(1).min(idx.len());
            idx[..k].to_vec()
        })
        .collect();
    Subset::new(d, keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::InMemoryDataset;

    #[test]
    fn stratified_limit_keeps_every_class() {
        let labels: Vec<u32> = (0..100).map(|i| if i < 90 { 0 } else { 1 + (i % 2) }).collect();
        let d: Arc<dyn Dataset> = Arc::new(InMemoryDataset::new(1, 1, vec![0; 300], labels, 3).unwrap());
        let s = stratified(d.clone(), Some(10)).unwrap();
        assert_eq!(class_counts(&s), [9, 1, 1]);
        assert_eq!(stratified(d, None).unwrap().len(), 100);
    }

    #[test]
    fn missing_layouts_say_what_is_expected() {
        let dir = std::env::temp_dir().join(format!("proco-run-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = find_sources(DatasetKind::ImagenetLt, &dir).err().unwrap().to_string();
        assert!(err.contains("ImageNet_LT_train.txt"), "{err}");
        std::fs::write(dir.join("ImageNet_LT_train.txt"), "a.jpg 0\n").unwrap();
        let err = find_sources(DatasetKind::ImagenetLt, &dir).err().unwrap().to_string();
        assert!(err.contains("ImageNet_LT_val.txt or ImageNet_LT_test.txt"), "{err}");
        let err = find_sources(DatasetKind::Own, &dir).err().unwrap().to_string();
        assert!(err.contains("train.txt or a train/ folder"), "{err}");
        std::fs::create_dir_all(dir.join("train/a")).unwrap();
        let err = find_sources(DatasetKind::Own, &dir).err().unwrap().to_string();
        assert!(err.contains("neither val/ nor test/"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(check_every_class_trained(&[3, 0, 2], Path::new("t.txt")).unwrap_err().to_string().contains("labels 1"));
    }
}
