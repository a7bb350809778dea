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
    /// Print the class histogram of a long-tailed training set and draw it as a PNG (log scale).
    Show {
        /// Dataset.
        #[arg(long, value_enum, default_value_t = DatasetArg::Cifar10)]
        dataset: DatasetArg,
        /// Imbalance ratio (largest / smallest class), e.g. 100, 50, 10; 1 keeps the balanced set.
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
}

/// Datasets `proco data show` knows.
#[derive(Clone, Copy, ValueEnum)]
pub enum DatasetArg {
    /// CIFAR-10 (10 classes).
    Cifar10,
    /// CIFAR-100 (100 classes, fine labels).
    Cifar100,
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
        DataCommand::Show { dataset, imbalance, profile, data_dir: dir, png } => {
            let dir = data_dir(dir);
            let variant = match dataset {
                DatasetArg::Cifar10 => CifarVariant::Cifar10,
                DatasetArg::Cifar100 => CifarVariant::Cifar100,
            };
            let train = load_cifar(&dir, variant, Split::Train, Checksum::Official).with_context(|| {
                format!("loading the training set from {} (fetch it with `proco data fetch --archive {}`)", dir.display(), OFFICIAL_ARCHIVES[if matches!(variant, CifarVariant::Cifar10) { 0 } else { 2 }].0)
            })?;
            let profile = match profile {
                ProfileArg::Exponential => LongTailProfile::Exponential,
                ProfileArg::Step => LongTailProfile::Step,
            };
            let base = Arc::new(train);
            let (subset, counts) = long_tailed(base.clone(), profile, imbalance, 0)?;
            let names = base.class_names();
            println!("{} images in {} classes (imbalance {imbalance}, {:?} profile, LDAM-DRW selection, seed 0)", subset.len(), counts.len(), profile);
            let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64;
            for (c, &n) in counts.iter().enumerate() {
                let name = names.and_then(|v| v.get(c)).map(String::as_str).unwrap_or("");
                let bar = "#".repeat(((n as f64).max(1.0).ln() / top.ln().max(1.0) * 40.0).round() as usize);
                println!("{c:>4} {name:<14} {n:>6} {bar}");
            }
            let g = ShotGroups::from_counts(&counts);
            println!("many-shot (>100): {} classes, medium (20-100): {}, few (<20): {}", g.many, g.medium, g.few);
            let groups: Vec<usize> = counts.iter().map(|&n| match Shot::of(n) { Shot::Many => 0, Shot::Medium => 1, Shot::Few => 2 }).collect();
            let values: Vec<f64> = counts.iter().map(|&n| n as f64).collect();
            let title = format!("{} TRAINING IMAGES PER CLASS, IMBALANCE {imbalance}", subset.len());
            proco::plot::log_bar_chart(&png, &title, &values, &groups, &["MANY", "MEDIUM", "FEW"])?;
            println!("bar chart (log scale) written to {}", png.display());
            Ok(())
        }
    }
}
