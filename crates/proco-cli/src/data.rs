//! `proco data`: fetch official archives, and show the class histogram of a long-tailed set.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use proco::data::cifar::{load_cifar, Checksum, CifarVariant, Split};
use proco::data::fetch::{fetch, official_archive, OFFICIAL_ARCHIVES};
use proco::data::long_tail::{long_tailed, LongTailProfile, Shot, ShotGroups};
use proco::data::Dataset;
use proco::train::recipe::DatasetKind;
use proco::data::class_counts;
use proco::train::run_data::{check_sources, load_splits};

/// `proco data ...` subcommands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Download an official archive (checksum verified, unpacked atomically) into the data directory.
    Fetch {
        /// Which archive: cifar10-binary, cifar10-python, cifar100-binary or cifar100-python.
        #[arg(long, default_value = "cifar10-binary")]
        archive: String,
        /// Data directory (default: $PROCO_DATA_DIR, else ~/.cache/proco/data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Print the class histogram of a long-tailed training set and its shot groups (and the
    /// val / test images per shot group), and draw it as a PNG (log scale).
    Show {
        /// Dataset: cifar10 / cifar100 (long-tailed here by --imbalance), imagenet-lt and
        /// inat2018 (the authors' list files in --data-dir), or own (train/ with val/ and/or
        /// test/ class folders, or train.txt with val.txt and/or test.txt, in --data-dir).
        #[arg(long, value_enum, default_value_t = DatasetArg::Cifar10)]
        dataset: DatasetArg,
        /// Imbalance ratio (largest / smallest class) of the CIFAR selection, e.g. 100, 50,
        /// 10; 1 keeps the balanced set. Other datasets are shown as they are.
        #[arg(long, default_value_t = 100.0)]
        imbalance: f64,
        /// Class-size profile.
        #[arg(long, value_enum, default_value_t = ProfileArg::Exponential)]
        profile: ProfileArg,
        /// Data directory (default: $PROCO_DATA_DIR, else ~/.cache/proco/data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where to write the bar chart.
        #[arg(long, default_value = "class_histogram.png")]
        png: PathBuf,
    },
    /// Decode every image of every split before a long run and report every problem at once
    /// (malformed list lines, labels outside the training classes, missing, truncated,
    /// corrupt or non-image files, paths leaving the data directory). Exits with status 1
    /// if there is any.
    Check {
        /// Dataset (as for `show`).
        #[arg(long, value_enum)]
        dataset: DatasetArg,
        /// Data directory (default: $PROCO_DATA_DIR, else ~/.cache/proco/data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Decoding threads (default: every core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Write a CIFAR-LT run's data in a fraction of the release's bytes (the long-tailed
    /// training selection and the first test images, checksummed), for a machine the official
    /// archive cannot reach: pass the output directory as that machine's --data-dir.
    Subset {
        /// cifar10 or cifar100.
        #[arg(long, value_enum, default_value_t = DatasetArg::Cifar10)]
        dataset: DatasetArg,
        /// Imbalance ratio of the training selection (the recipe's).
        #[arg(long, default_value_t = 100.0)]
        imbalance: f64,
        /// Test images to keep (the first ones of the test set; default all).
        #[arg(long)]
        test_images: Option<usize>,
        /// Data directory holding the official release (default: $PROCO_DATA_DIR, else ~/.cache/proco/data).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Datasets `proco data show` and `check` know.
#[derive(Clone, Copy, ValueEnum)]
pub enum DatasetArg {
    /// CIFAR-10 (10 classes).
    Cifar10,
    /// CIFAR-100 (100 classes, fine labels).
    Cifar100,
    /// ImageNet-LT (ImageNet_LT_{train,val,test}.txt).
    ImagenetLt,
    /// iNaturalist 2018 (iNaturalist18_{train,val}.txt).
    Inat2018,
    /// Own images (class folders or list files).
    Own,
}

impl DatasetArg {
    fn kind(self) -> DatasetKind {
        match self {
            DatasetArg::Cifar10 => DatasetKind::Cifar10,
            DatasetArg::Cifar100 => DatasetKind::Cifar100,
            DatasetArg::ImagenetLt => DatasetKind::ImagenetLt,
            DatasetArg::Inat2018 => DatasetKind::Inat2018,
            DatasetArg::Own => DatasetKind::Own,
        }
    }
}

/// Long-tail profiles.
#[derive(Clone, Copy, ValueEnum)]
pub enum ProfileArg {
    /// n_c = n_max * IF^(-c/(C-1)).
    Exponential,
    /// Half the classes at n_max, half at n_max / IF.
    Step,
}

/// The data directory: the flag, else $PROCO_DATA_DIR, else ~/.cache/proco/data.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("PROCO_DATA_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("proco/data")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/proco/data")))
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Runs a `proco data` subcommand.
pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Subset { dataset, imbalance, test_images, data_dir: dir, out } => {
            let variant = match dataset {
                DatasetArg::Cifar10 => CifarVariant::Cifar10,
                DatasetArg::Cifar100 => CifarVariant::Cifar100,
                _ => anyhow::bail!("subsets are of CIFAR-10 or CIFAR-100 (--dataset cifar10 or cifar100)"),
            };
            let m = proco::data::cifar_subset::write_subset(&data_dir(dir), variant, imbalance, test_images, &out)?;
            println!("{}: {} training images (IF {}), {} test images; train --data-dir {} with the {} recipe", out.display(), m.train_images, m.imbalance_ratio, m.test_images, out.display(), m.variant);
            Ok(())
        }
        DataCommand::Fetch { archive, data_dir: dir } => {
            let dir = data_dir(dir);
            let archive = official_archive(&archive)?;
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .context("progress template")?
                    .progress_chars("=> "),
            );
            bar.set_message(archive.url.clone());
            let out = fetch(&archive, &dir, &mut |done, total| {
                if let Some(t) = total {
                    bar.set_length(t);
                }
                bar.set_position(done);
            })?;
            bar.finish_and_clear();
            println!("{} is ready (archive MD5 {} verified)", out.display(), archive.md5);
            Ok(())
        }
        DataCommand::Show { dataset, imbalance, profile, data_dir: dir, png } => show(dataset, imbalance, profile, &data_dir(dir), &png),
        DataCommand::Check { dataset, data_dir: dir, threads } => check(dataset, &data_dir(dir), threads),
    }
}

/// `proco data show`.
fn show(dataset: DatasetArg, imbalance: f64, profile: ProfileArg, dir: &std::path::Path, png: &std::path::Path) -> Result<()> {
    let kind = dataset.kind();
    let (counts, names, eval, what) = if kind.is_cifar() {
        let variant = if matches!(dataset, DatasetArg::Cifar10) { CifarVariant::Cifar10 } else { CifarVariant::Cifar100 };
        let train = load_cifar(dir, variant, Split::Train, Checksum::Official).with_context(|| {
            format!("loading the training set from {} (fetch it with `proco data fetch --archive {}`)", dir.display(), OFFICIAL_ARCHIVES[if matches!(variant, CifarVariant::Cifar10) { 0 } else { 2 }].0)
        })?;
        let profile = match profile {
            ProfileArg::Exponential => LongTailProfile::Exponential,
            ProfileArg::Step => LongTailProfile::Step,
        };
        let base = Arc::new(train);
        let (subset, counts) = long_tailed(base.clone(), profile, imbalance, 0)?;
        let names = base.class_names().map(<[String]>::to_vec);
        let what = format!("imbalance {imbalance}, {profile:?} profile, LDAM-DRW selection, seed 0");
        println!("{} images in {} classes ({what})", subset.len(), counts.len());
        (counts, names, Vec::new(), format!("IMBALANCE {imbalance}"))
    } else {
        let splits = load_splits(kind, 1.0, dir).with_context(|| format!("reading the {kind:?} splits in {}", dir.display()))?;
        let counts = class_counts(&*splits.train);
        println!("{} training images in {} classes ({kind:?} in {})", splits.train.len(), counts.len(), dir.display());
        (counts, splits.class_names, splits.eval, format!("{kind:?}").to_uppercase())
    };
    print_histogram(&counts, names.as_deref());
    let g = ShotGroups::from_counts(&counts);
    println!("shot groups of the training histogram: many-shot (>100): {} classes, medium (20-100): {}, few (<20): {}", g.many, g.medium, g.few);
    for split in &eval {
        let g = ShotGroups::images_per_group(&counts, (0..split.dataset.len()).map(|i| split.dataset.label(i)));
        println!("{} ({} images): many {} / medium {} / few {} images", split.name, split.dataset.len(), g.many, g.medium, g.few);
    }
    // Largest class first, whatever the label order.
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(counts[j]));
    let groups: Vec<usize> = order.iter().map(|&j| Shot::of(counts[j]).index()).collect();
    let values: Vec<f64> = order.iter().map(|&j| counts[j] as f64).collect();
    let title = format!("{} TRAINING IMAGES PER CLASS, {what}, LARGEST FIRST", counts.iter().sum::<usize>());
    proco::plot::log_bar_chart(png, &title, &values, &groups, &["MANY", "MEDIUM", "FEW"])?;
    println!("bar chart (log scale) written to {}", png.display());
    Ok(())
}

/// One line per class up to 100 classes; beyond, the ten largest and ten smallest.
fn print_histogram(counts: &[usize], names: Option<&[String]>) {
    let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let line = |c: usize| {
        let n = counts[c];
        let name = names.and_then(|v| v.get(c)).map(String::as_str).unwrap_or("");
        let bar = "#".repeat(((n as f64).max(1.0).ln() / top.ln().max(1.0) * 40.0).round() as usize);
        println!("{c:>5} {:<14} {n:>6} {bar}", name.chars().take(14).collect::<String>());
    };
    if counts.len() <= 100 {
        (0..counts.len()).for_each(line);
        return;
    }
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&j| (std::cmp::Reverse(counts[j]), j));
    println!("ten largest classes:");
    order[..10].iter().for_each(|&c| line(c));
    println!("ten smallest classes:");
    order[order.len() - 10..].iter().for_each(|&c| line(c));
    let mut sorted: Vec<usize> = counts.to_vec();
    sorted.sort_unstable();
    println!("median class {} images, largest {}, smallest {} (imbalance {:.1})", sorted[sorted.len() / 2], sorted[sorted.len() - 1], sorted[0], sorted[sorted.len() - 1] as f64 / sorted[0].max(1) as f64);
}

/// `proco data check`.
fn check(dataset: DatasetArg, dir: &std::path::Path, threads: Option<usize>) -> Result<()> {
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template("{prefix} [{bar:40}] {pos}/{len} {per_sec} eta {eta}").context("progress template")?.progress_chars("=> "));
    let report = check_sources(dataset.kind(), dir, threads, &|split, done, total| {
        bar.set_prefix(format!("checking {split}"));
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    let scanned: Vec<String> = report.splits.iter().map(|(n, k)| format!("{k} {n}")).collect();
    println!("scanned {} images in {} ({})", report.splits.iter().map(|s| s.1).sum::<usize>(), dir.display(), scanned.join(", "));
    if report.problems.is_empty() {
        println!("no problems found");
        return Ok(());
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    anyhow::bail!("{} problem(s) found in {}; fix them before training", report.problems.len(), dir.display())
}
