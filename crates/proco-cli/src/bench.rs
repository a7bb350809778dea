//! `proco bench`: prints the measurements of `proco::bench`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use proco::bench::{
    bessel_throughput, decode_throughput, full_epoch, imagenet_train_step_throughput, inference_throughput, log_spaced, loss_step_time, peak_rss_bytes, pipeline_throughput, proco_step_time,
    train_step_throughput, BesselKernel, ImageDecoder, TimingBudget, TRAIN_BENCH_PRESET,
};
use proco::data::list_file::ListFileDataset;
use proco::pipeline::ImageNetTrainViews;
use proco::data::cifar::{load_cifar, Checksum, CifarVariant, Split};
use proco::data::long_tail::{long_tailed, LongTailProfile};
use proco::data::Dataset;
use proco::pipeline::CifarTrainViews;
use proco::tch::Kind;
use proco::train::Recipe;
use proco::BesselRoute;

use crate::{parse_device, Precision};

/// Which measurements `proco bench` runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Suite {
    /// Everything (the full epoch only with --full-epoch).
    All,
    /// Bessel throughput and ProCo loss step time.
    Math,
    /// Three-view CIFAR augmentation pipeline.
    Data,
    /// The ImageNet-LT three-view pipeline (224 px) and JPEG decoding, over the images of
    /// `ImageNet_LT_train.txt` in --data-dir (bench/gen_jpeg_set.py writes such a set).
    ImagenetData,
    /// The imagenet-lt-r50 training step (ResNet-50 + ProCo, 1000 classes, p = 1024) at
    /// --batch-size and --image-size, f32 or --bf16.
    TrainImagenet,
    /// ResNet-32 + ProCo training step and inference throughput, ProCo time per step, peak
    /// memory, and with --full-epoch one CIFAR-10-LT epoch.
    Train,
}

/// Batch sizes of the training figures.
const TRAIN_BATCH_SIZES: [usize; 2] = [128, 256];

/// Untimed steps before each training figure.
const TRAIN_WARMUP_STEPS: usize = 2;

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
    pub full_epoch: bool,
    pub batch_size: usize,
    pub image_size: u32,
    pub bf16: bool,
}

/// Runs and prints the selected benchmarks.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.full_epoch && !matches!(args.only, Suite::All | Suite::Train) {
        bail!("--full-epoch belongs to the training suite; use it with --only train or --only all");
    }
    if matches!(args.only, Suite::All | Suite::Math) {
        math(&args.device, args.seconds, args.steps, args.precision)?;
    }
    if matches!(args.only, Suite::All | Suite::Data) {
        data(args)?;
    }
    if matches!(args.only, Suite::All | Suite::Train) {
        training(args)?;
    }
    if args.only == Suite::ImagenetData {
        imagenet_data(args)?;
    }
    if args.only == Suite::TrainImagenet {
        let device = parse_device(&args.device)?;
        let budget = TimingBudget { warmup: 1, min_steps: args.steps, min_secs: args.seconds };
        let precision = if args.bf16 { proco::model::Precision::Bf16 } else { proco::model::Precision::Fp32 };
        println!(
            "imagenet-lt-r50 training step: ResNet-50 + ProCo (1000 classes, p = 1024), {} px, {precision:?}, device {device:?}, {} LibTorch threads (1 warm-up step, then at least {} steps and {} s)",
            args.image_size,
            proco::tch::get_num_threads(),
            args.steps,
            args.seconds
        );
        let ips = imagenet_train_step_throughput(args.batch_size, args.image_size, precision, device, budget)?;
        println!("resnet50 train step images/s, batch {}: {ips:.2}", args.batch_size);
    }
    Ok(())
}

/// JPEG decoding and the ImageNet-LT three-view pipeline over a list of images.
fn imagenet_data(args: &BenchArgs) -> Result<()> {
    let dir = crate::data::data_dir(args.data_dir.clone());
    let list = dir.join("ImageNet_LT_train.txt");
    let ds = ListFileDataset::open(&list, &dir).with_context(|| format!("the ImageNet data benchmark reads {} (write a set with bench/gen_jpeg_set.py)", list.display()))?;
    let paths = (0..ds.len()).map(|i| ds.resolve(i)).collect::<proco::Result<Vec<_>>>()?;
    let bytes: u64 = paths.iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum();
    println!("{} images in {} ({:.0} KB on average), {} threads", ds.len(), dir.display(), bytes as f64 / ds.len().max(1) as f64 / 1e3, args.threads);
    #[allow(unused_mut)]
    let mut decoders = vec![("proco (zune-jpeg)", ImageDecoder::Proco), ("image crate default", ImageDecoder::ImageCrate)];
    #[cfg(feature = "libjpeg-turbo")]
    decoders.push(("libjpeg-turbo (turbojpeg crate)", ImageDecoder::LibjpegTurbo));
    for (name, decoder) in decoders {
        let (ips, mps) = decode_throughput(&paths, decoder, args.threads, args.epochs)?;
        println!("decode {name}: {mps:.1} MP/s ({ips:.1} images/s)");
    }
    let n = ds.len();
    let (ds, views) = (Arc::new(ds), Arc::new(ImageNetTrainViews::new(224)?));
    let ips = pipeline_throughput(ds.clone(), views.clone(), args.threads, 64, args.epochs, true)?;
    println!("Three-view ImageNet-LT pipeline (RandomResizedCrop 224 + flip + ColorJitter + RandAugment n2 m10, 2x SimCLR views), batch 64");
    println!("proco images/s: {ips:.1} ({} epochs of {n} images)", args.epochs);
    // DCT-domain reduced decoding off and on, in turn (off, on, off, on, ...: the machine's
    // drift falls on both), after the first pass, which also grew the heap to its working
    // size; medians of three pairs. Where no image is reduced (ImageNet's 500 x 375) the
    // ratio shows only the noise.
    let mut pairs = Vec::new();
    for _ in 0..3 {
        let full = pipeline_throughput(ds.clone(), views.clone(), args.threads, 64, args.epochs, false)?;
        let reduced = pipeline_throughput(ds.clone(), views.clone(), args.threads, 64, args.epochs, true)?;
        pairs.push((full, reduced));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (full, reduced) = (median(pairs.iter().map(|p| p.0).collect()), median(pairs.iter().map(|p| p.1).collect()));
    let ratio = median(pairs.iter().map(|p| p.1 / p.0).collect());
    println!("proco images/s, every image decoded in full: {full:.1}; reduced decoding where it pays: {reduced:.1} ({ratio:.2}x, medians of 3 pairs)");
    Ok(())
}

/// Training figures of ResNet-32 + ProCo, one `name: value` line each (read by
/// bench/compare.sh next to bench/pytorch_reference.py's identical lines).
fn training(args: &BenchArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let budget = TimingBudget { warmup: TRAIN_WARMUP_STEPS, min_steps: args.steps, min_secs: args.seconds };
    println!();
    println!(
        "Training figures: ResNet-32 + ProCo ({TRAIN_BENCH_PRESET} recipe, 10 classes, p = 128), device {device:?}, {} LibTorch threads",
        proco::tch::get_num_threads()
    );
    println!(
        "(synthetic 32x32 inputs; a train step is the forward of 3N views, CE on view 1 + ProCo on views 2-3 with estimator updates, backward, SGD; images/s counts N; {TRAIN_WARMUP_STEPS} warm-up steps, then at least {} steps and {} s)",
        args.steps, args.seconds
    );
    for batch in TRAIN_BATCH_SIZES {
        println!("train step images/s, batch {batch}: {:.1}", train_step_throughput(batch, device, budget)?);
    }
    for batch in TRAIN_BATCH_SIZES {
        println!("inference images/s, batch {batch}: {:.1}", inference_throughput(batch, device, budget)?);
    }
    for batch in TRAIN_BATCH_SIZES {
        println!("ProCo loss + estimator ms/step, batch {batch}: {:.3}", proco_step_time(batch, device, budget)? * 1e3);
    }
    if args.full_epoch {
        epoch(args, device)?;
    }
    match peak_rss_bytes() {
        Ok(bytes) => println!("peak RSS MiB: {:.1}", bytes as f64 / (1024.0 * 1024.0)),
        Err(e) => println!("peak RSS: unavailable ({e})"),
    }
    Ok(())
}

/// One full epoch of the CIFAR-10-LT (IF 100) recipe through `proco::train::train`, into a
/// temporary run directory that is removed afterwards.
fn epoch(args: &BenchArgs, device: proco::tch::Device) -> Result<()> {
    let recipe = Recipe::preset(TRAIN_BENCH_PRESET)?;
    let dir = crate::data::data_dir(args.data_dir.clone());
    let data = proco::train::load_run_data(&recipe, &dir)
        .with_context(|| format!("the full-epoch benchmark needs CIFAR-10 under {} (scripts/fetch-cifar10.sh)", dir.display()))?;
    let run_dir = std::env::temp_dir().join(format!("proco-bench-epoch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    let result = full_epoch(&recipe, &data, device, &run_dir);
    let _ = std::fs::remove_dir_all(&run_dir);
    let epoch = result.with_context(|| format!("full epoch in {}", run_dir.display()))?;
    let r = &epoch.record;
    println!(
        "full epoch: {} training images in batches of {}, {} loader threads, lr {}, then {} test images; test top-1 after it {}, train loop {:.1} images/s",
        data.train.len(),
        recipe.batch_size,
        recipe.loader_threads,
        r.lr,
        data.eval.first().map_or(0, |s| s.dataset.len()),
        r.val.as_ref().map_or("not evaluated (representation stage)".into(), |v| format!("{:.2}%", v.top1)),
        r.images_per_sec
    );
    println!("full epoch seconds: {:.1}", r.seconds);
    println!("(the whole train() call, with network set-up, checkpoint, metrics and plots: {:.1} s)", epoch.total_seconds);
    Ok(())
}

/// Three-view CIFAR-10-LT pipeline throughput with our loader.
fn data(args: &BenchArgs) -> Result<()> {
    let dir = crate::data::data_dir(args.data_dir.clone());
    let train = load_cifar(&dir, CifarVariant::Cifar10, Split::Train, Checksum::Official)
        .with_context(|| format!("the data benchmark needs CIFAR-10 under {} (scripts/fetch-cifar10.sh)", dir.display()))?;
    let (lt, _) = long_tailed(Arc::new(train), LongTailProfile::Exponential, 100.0, 0)?;
    let n = lt.len();
    let ips = pipeline_throughput(Arc::new(lt), Arc::new(CifarTrainViews::new()), args.threads, 256, args.epochs, false)?;
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

