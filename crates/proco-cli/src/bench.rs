//! `proco bench`: prints the measurements of `proco::bench`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::ValueEnum;
use proco::bench::{bessel_throughput, log_spaced, loss_step_time, pipeline_throughput, BesselKernel};
use proco::data::cifar::{load_cifar, Checksum, CifarVariant, Split};
use proco::data::long_tail::{long_tailed, LongTailProfile};
use proco::data::Dataset;
use proco::pipeline::CifarTrainViews;
use proco::tch::Kind;
use proco::BesselRoute;

use crate::{parse_device, Precision};

/// Which measurements `proco bench` runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Everything.
    All,
    /// Bessel throughput and ProCo loss step time.
    Math,
    /// Three-view CIFAR augmentation pipeline.
    Data,
}

/// The flags of `proco bench`.
pub struct BenchArgs {
    pub device: String,
    pub seconds: f64,
    pub steps: usize,
    pub precision: Precision,
    pub only: Suite,
    pub threads: usize,
    pub epochs: usize,
    pub data_dir: Option<PathBuf>,
}

/// Runs and prints the selected benchmarks.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.only != Suite::Data {
        math(&args.device, args.seconds, args.steps, args.precision)?;
    }
    if args.only != Suite::Math {
        data(args)?;
    }
    Ok(())
}

/// Three-view CIFAR-10-LT pipeline throughput with our loader.
fn data(args: &BenchArgs) -> Result<()> {
    let dir = crate::data::data_dir(args.data_dir.clone());
    let train = load_cifar(&dir, CifarVariant::Cifar10, Split::Train, Checksum::Official)
        .with_context(|| format!("the data benchmark needs CIFAR-10 under {} (scripts/fetch-cifar10.sh)", dir.display()))?;
    let (lt, _) = long_tailed(Arc::new(train), LongTailProfile::Exponential, 100.0, 0)?;
    let n = lt.len();
    let ips = pipeline_throughput(Arc::new(lt), Arc::new(CifarTrainViews::new()), args.threads, 256, args.epochs)?;
    println!();
    println!("Three-view CIFAR-10-LT pipeline (crop+flip+AutoAugment+Cutout, 2x SimCLR views), batch 256, {} threads", args.threads);
    println!("proco images/s: {ips:.1} ({} epochs of {n} images)", args.epochs);
    Ok(())
}

/// Bessel throughput and loss timings.
fn math(device: &str, seconds: f64, steps: usize, precision: Precision) -> Result<()> {
    let device = parse_device(device)?;
    let kind = match precision {
        Precision::F32 => Kind::Float,
        Precision::F64 => Kind::Double,
    };
    let threads = proco::tch::get_num_threads();
    println!("proco bench: device {device:?}, {threads} LibTorch threads, features {kind:?}");
    println!();
    println!("Bessel throughput, x log-spaced over [1e-3, 1e5] (million evaluations per second, one core)");
    println!("{:>6}  {:>12}  {:>12}  {:>22}", "nu", "log_bessel_i", "bessel_ratio", "authors' recurrence");
    let xs = log_spaced(1e-3, 1e5, 4096);
    for nu in [63.0, 511.0] {
        let l = bessel_throughput(BesselKernel::LogI, nu, &xs, seconds) / 1e6;
        let r = bessel_throughput(BesselKernel::Ratio, nu, &xs, seconds) / 1e6;
        let a = bessel_throughput(BesselKernel::AuthorsRecurrence, nu, &xs, seconds) / 1e6;
        println!("{nu:>6}  {l:>12.3}  {r:>12.3}  {a:>22.3}");
    }
    println!();
    println!("ProCo loss step (estimator update + forward + backward), mean of {steps} steps, milliseconds");
    println!("{:>5} {:>5} {:>5}  {:>8}  {:>9}  {:>8}  {:>8}  {:>16}", "N", "C", "p", "estim.", "forward", "backward", "total", "authors' numerics");
    for (n, c, p) in [(256usize, 100usize, 128usize), (256, 1000, 1024)] {
        let t = loss_step_time(n, c, p, kind, device, BesselRoute::Exact, steps)?;
        let a = loss_step_time(n, c, p, kind, device, BesselRoute::AuthorsCompat, steps)?;
        let ms = |s: f64| s * 1e3;
        println!(
            "{n:>5} {c:>5} {p:>5}  {:>8.2}  {:>9.2}  {:>8.2}  {:>8.2}  {:>16.2}",
            ms(t.estimator),
            ms(t.forward),
            ms(t.backward),
            ms(t.estimator + t.forward + t.backward),
            ms(a.estimator + a.forward + a.backward)
        );
    }
    println!();
    println!("(\"authors' numerics\" runs the same pipeline with their Miller recurrence in Rust; their own code also pays a Python loop of 2*nu tensor operations per evaluation.)");
    Ok(())
}

