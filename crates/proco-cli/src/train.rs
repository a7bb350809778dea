//! `proco train` and `proco eval`: resolve the recipe, load the run's data, run, print.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use proco::distributed::launch::{launch_local, LocalLaunch};
use proco::distributed::WorldSpec;
use proco::tch::Device;
use proco::train::recipe::{Precision, PRESETS};
use proco::train::{evaluate_run, load_run_data, train, Progress, Recipe, RunData, RunOptions, ShotAccuracy};

use crate::data::data_dir;
use crate::parse_device;

/// Flags of `proco train`.
#[derive(Args)]
pub struct TrainArgs {
    /// Paper recipe to start from (see --help for the list).
    #[arg(long, default_value = "cifar10-lt-if100", help = format!("Paper recipe to start from: {}", PRESETS.join(", ")))]
    preset: String,
    /// TOML file whose fields override the preset (same field names as the saved recipe.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one recipe field, e.g. `--set lr=0.1 --set milestones=[80,90]` (TOML values).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Total epochs of the schedule (keeps the preset's rule for warm-up and milestones).
    #[arg(long)]
    epochs: Option<usize>,
    /// Random seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Run only the first K epochs of the schedule (the learning rate follows the full schedule).
    #[arg(long)]
    stop_after: Option<usize>,
    /// Continue the run in --run-dir from its latest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Run directory (default: runs/<preset>-seed<seed>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Data directory (default: $PROCO_DATA_DIR, else ~/.cache/proco/data). CIFAR: the
    /// official files; ImageNet-LT: ImageNet_LT_{train,val,test}.txt; iNaturalist 2018:
    /// iNaturalist18_{train,val}.txt (image paths relative to it); own data (`--preset
    /// own-data`): train.txt with val.txt and/or test.txt, else train/<class>/ with val/ and/or test/.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Arithmetic of the network: fp32, or bf16 autocast (convolutions and matrix products in
    /// bfloat16; weights, losses and the optimiser in f32). Saved in the recipe.
    #[arg(long, value_parser = ["fp32", "bf16"])]
    precision: Option<String>,
    /// Use only about N training images and N images of each val / test split (the same
    /// fraction of every class, at least one per class): quick checks on a slice of the real data.
    #[arg(long)]
    limit: Option<usize>,
    /// Data-parallel training in N local processes (Gloo on CPU, NCCL with --device cuda: one
    /// GPU per process). The recipe's batch size stays the global batch. Under torchrun
    /// (RANK, WORLD_SIZE, MASTER_ADDR, ... set) the processes are torchrun's and this flag is
    /// not needed.
    #[arg(long, value_name = "N")]
    nproc: Option<usize>,
    /// Seconds a data-parallel rank waits for the others (rendezvous, every collective)
    /// before it fails naming the rank at fault.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    dist_timeout: u64,
    /// Port of the rendezvous store that --nproc hosts on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    master_port: u16,
}

/// Flags of `proco eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Run directory written by `proco train`.
    #[arg(long, required_unless_present = "import", conflicts_with = "import")]
    checkpoint: Option<PathBuf>,
    /// Evaluate one of the authors' released checkpoints (`.pth.tar`) instead: its
    /// ResNet-32 / ResNet-50 / ResNeXt-50 weights load into our network (pickle code is never
    /// run). Needs --dataset.
    #[arg(long = "import", value_name = "FILE", requires = "dataset")]
    import: Option<PathBuf>,
    /// Dataset of an imported checkpoint: cifar10, cifar100, imagenet-lt, inat2018 or own.
    #[arg(long, value_parser = ["cifar10", "cifar100", "imagenet-lt", "inat2018", "own"])]
    dataset: Option<String>,
    /// Imbalance ratio of the CIFAR training set the imported checkpoint was trained on (its
    /// class counts define the many / medium / few groups and the prior).
    #[arg(long, default_value_t = 100.0)]
    imbalance: f64,
    /// Where an imported checkpoint's figures go (default: <FILE>.eval/ beside it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Evaluate the latest checkpoint instead of the best epoch.
    #[arg(long)]
    latest: bool,
    /// Also redraw the run's plots (training curves, per-class accuracy) from its metrics.
    #[arg(long)]
    plots: bool,
    /// Data directory (default: $PROCO_DATA_DIR, else ~/.cache/proco/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn resolve_recipe(args: &TrainArgs) -> Result<Recipe> {
    let mut recipe = Recipe::preset(&args.preset)?;
    if let Some(e) = args.epochs {
        recipe = recipe.with_epochs(e);
    }
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        recipe = recipe.merge_toml(&text).with_context(|| format!("in {}", path.display()))?;
    }
    recipe = apply_sets(recipe, &args.set)?;
    if let Some(s) = args.seed {
        recipe.seed = s;
    }
    if args.limit.is_some() {
        recipe.limit = args.limit;
    }
    match args.precision.as_deref() {
        Some("bf16") => recipe.precision = Precision::Bf16,
        Some(_) => recipe.precision = Precision::Fp32,
        None => {}
    }
    recipe.validate()?;
    Ok(recipe)
}

/// `recipe` with each `--set FIELD=VALUE` applied in turn.
pub(crate) fn apply_sets(mut recipe: Recipe, sets: &[String]) -> Result<Recipe> {
    for kv in sets {
        let Some((k, v)) = kv.split_once('=') else { bail!("--set expects FIELD=VALUE, got `{kv}`") };
        let (k, v) = (k.trim(), v.trim());
        // A TOML value as written (0.1, [80, 90], "cosine", true), else a bare word as a string.
        let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
            Ok(_) => v.to_string(),
            Err(_) => toml::Value::String(v.to_string()).to_string(),
        };
        recipe = recipe.merge_toml(&format!("{k} = {value}")).with_context(|| format!("--set {kv}"))?;
    }
    Ok(recipe)
}

/// The run's data from `dir`, with the data directory named on failure.
pub(crate) fn run_data(recipe: &Recipe, dir: &std::path::Path) -> Result<RunData> {
    use proco::train::recipe::DatasetKind;
    let fetch = match recipe.dataset {
        DatasetKind::Cifar10 => "; `proco data fetch --archive cifar10-binary` (or scripts/fetch-cifar10.sh) fetches CIFAR-10, `proco data subset` writes a CIFAR-LT subset from it",
        DatasetKind::Cifar100 => "; `proco data fetch --archive cifar100-binary` fetches CIFAR-100",
        _ => "; `proco data check` lists every problem of the data at once",
    };
    load_run_data(recipe, dir).with_context(|| format!("loading the {:?} data of the recipe from {} (set --data-dir{fetch})", recipe.dataset, dir.display()))
}

fn pct(a: Option<f64>) -> String {
    a.map_or("-".into(), |v| format!("{v:.2}"))
}

pub(crate) fn summary(a: &ShotAccuracy) -> String {
    format!("top-1 {:.2}  many {}  medium {}  few {}", a.top1, pct(a.many), pct(a.medium), pct(a.few))
}

/// Runs `proco train`: as the launcher of `--nproc` workers, as one rank of a job (torchrun's
/// variables), or alone.
pub fn run_train(args: TrainArgs) -> Result<()> {
    let world = WorldSpec::from_env()?;
    // At most a week: LibTorch adds the timeout to the clock in milliseconds.
    let timeout = std::time::Duration::from_secs(args.dist_timeout.clamp(1, 7 * 24 * 3600));
    match (args.nproc, &world) {
        (Some(0), _) => bail!("--nproc must be at least 1"),
        (Some(n), Some(w)) if n != w.world_size => bail!("--nproc {n} disagrees with WORLD_SIZE={} of the launcher", w.world_size),
        (Some(n), None) if n > 1 => {
            // Validate the flags once here, not in every worker.
            resolve_recipe(&args)?;
            parse_device(&args.device)?;
            let launch = LocalLaunch {
                nproc: n,
                program: std::env::current_exe().context("finding this program to start the workers")?,
                args: std::env::args_os().skip(1).collect(),
                env: worker_threads(n),
                port: args.master_port,
                timeout,
            };
            launch_local(&launch)?;
            return Ok(());
        }
        _ => {}
    }
    let rank = world.as_ref().map_or(0, |w| w.rank);
    let result = train_rank(args, world, timeout);
    match result {
        Err(e) if rank > 0 && !matches!(e.downcast_ref::<proco::ProcoError>(), Some(proco::ProcoError::Distributed { .. })) => Err(e.context(format!("rank {rank}"))),
        other => other,
    }
}

/// As torchrun: unless OMP_NUM_THREADS is set, each of `n` local workers gets an equal share
/// of the cores for LibTorch's threads (instead of each taking every core).
fn worker_threads(n: usize) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    if std::env::var_os("OMP_NUM_THREADS").is_some() {
        return Vec::new();
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    vec![("OMP_NUM_THREADS".into(), (cores / n).max(1).to_string().into())]
}

/// Trains as one rank (rank 0 of 1 without `world`); only rank 0 prints.
fn train_rank(args: TrainArgs, world: Option<WorldSpec>, timeout: std::time::Duration) -> Result<()> {
    let recipe = resolve_recipe(&args)?;
    let leader = world.as_ref().is_none_or(|w| w.rank == 0);
    let device = match (parse_device(&args.device)?, &world) {
        // One GPU per local rank.
        (Device::Cuda(_), Some(w)) => parse_device(&format!("cuda:{}", w.local_rank))?,
        (d, _) => d,
    };
    let run_dir = args.run_dir.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{}-seed{}", args.preset, recipe.seed)));
    let dir = data_dir(args.data_dir.clone());
    let data = run_data(&recipe, &dir)?;
    let print = |line: String| {
        if leader {
            println!("{line}");
        }
    };
    let splits: Vec<String> = data.eval.iter().map(|s| format!("{} {}", s.dataset.len(), s.name)).collect();
    print(format!(
        "proco train: {} on {:?}{}, {} classes, {} training / {} images, {} epochs{}{}{}, run dir {}",
        args.preset,
        recipe.dataset,
        if recipe.dataset.is_cifar() { format!(" (IF {})", recipe.imbalance_ratio) } else { String::new() },
        data.class_counts.len(),
        data.train.len(),
        splits.join(" / "),
        recipe.epochs,
        match recipe.stages {
            proco::train::recipe::Stages::One => String::new(),
            proco::train::recipe::Stages::Two => format!(" of {} then {} linear-stage epochs", recipe.contrastive_loss.as_str(), recipe.linear_epochs),
        },
        args.stop_after.map_or(String::new(), |k| format!(" (stopping after {k})")),
        world.as_ref().map_or(String::new(), |w| format!(", {} ranks of batch {}", w.world_size, recipe.batch_size / w.world_size.max(1))),
        run_dir.display()
    ));
    let options = RunOptions { stop_after: args.stop_after, resume: args.resume, world, collective_timeout: timeout, ..RunOptions::new(run_dir.clone(), device) };
    let bar = ProgressBar::hidden();
    let started = Instant::now();
    let contrastive = recipe.contrastive_loss.as_str();
    let mut on_progress = |p: Progress| match p {
        _ if !leader => {}
        Progress::EpochStart { epoch, lr, batches } => {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.reset();
            bar.set_length(batches as u64);
            bar.set_style(
                ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch} lr {lr:.4}"));
        }
        Progress::Step { step, ce_loss, proco_loss, accuracy, images_per_sec } => {
            bar.set_position(step as u64 + 1);
            bar.set_message(format!("ce {ce_loss:.3} {contrastive} {proco_loss:.3} acc {} {images_per_sec:.0} img/s", if accuracy.is_nan() { "-".to_string() } else { format!("{accuracy:.1}%") }));
        }
        Progress::EpochEnd(r) => {
            bar.finish_and_clear();
            print(format!(
                "epoch {:>3}  {}{}  | train ce {:.3} {contrastive} {:.3} acc {}{}  {:.0} img/s  {:.0}s (total {:.0}s)",
                r.epoch,
                r.val.as_ref().map_or_else(|| "stage 1 (representation, not evaluated)".to_string(), summary),
                r.test.as_ref().map(|t| format!("  | test {}", summary(t))).unwrap_or_default(),
                r.ce_loss_train,
                r.proco_loss_train,
                r.train_top1.map_or("-".to_string(), |a| format!("{a:.1}%")),
                r.kappa.as_ref().map(|k| format!("  kappa {:.0}/{:.0}/{:.0}", k.p10, k.median, k.p90)).unwrap_or_default(),
                r.images_per_sec,
                r.seconds,
                started.elapsed().as_secs_f64()
            ));
        }
    };
    let out = train(&recipe, &data, &options, &mut on_progress).map_err(resume_hint)?;
    if let Some(b) = out.best {
        let selection = data.eval.first().map_or("val", |s| s.name);
        print(format!("best epoch {} (by {selection}): {}{}", b.epoch, summary(&b.accuracy), b.test.as_ref().map(|t| format!("  | test {}", summary(t))).unwrap_or_default()));
    }
    print(format!("metrics: {0}/metrics.jsonl, plots: {0}/plots/, TensorBoard: tensorboard --logdir {0}", run_dir.display()));
    Ok(())
}

/// Adds the flags that act on a run-directory error.
fn resume_hint(e: proco::ProcoError) -> anyhow::Error {
    let hint = match &e {
        proco::ProcoError::RunExists { .. } => "pass --resume to continue it, or --run-dir for a new run",
        proco::ProcoError::RecipeMismatch { .. } => "resume with the same --preset, --config and --set flags",
        _ => return e.into(),
    };
    anyhow::Error::new(e).context(hint)
}

/// Prints one split's figures and writes its report into `dir`.
fn report_split(label: &str, split: &str, images: usize, e: &proco::train::Evaluation, counts: &[usize], names: &[String], dir: &std::path::Path) -> Result<()> {
    let calibration = e.calibration()?;
    println!(
        "{label} {split} ({images} images): {}  (logit-adjusted CE {:.4}, ECE {:.2}% over {} bins)",
        summary(&e.accuracy),
        e.ce_loss,
        100.0 * calibration.ece,
        proco::train::ECE_BINS
    );
    let confusions = e.confusion(counts.len())?.top_confusions(5);
    if !confusions.is_empty() {
        let list: Vec<String> = confusions.iter().map(|(t, p, n)| format!("{} -> {} ({n})", names[*t], names[*p])).collect();
        println!("  most frequent confusions (true -> predicted): {}", list.join(", "));
    }
    let written = proco::train::report::write_evaluation_report(dir, split, e, counts, names)?;
    let files: Vec<String> = written.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
    println!("  written to {}: {}", dir.display(), files.join(", "));
    Ok(())
}

/// Runs `proco eval`: every evaluation split of the run's data (val and test where both
/// exist), with calibration, the most frequent confusions and the figures under
/// `<run>/eval/<split>/`; or, with `--import`, the same for one of the authors' checkpoints.
pub fn run_eval(args: EvalArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    if let Some(file) = &args.import {
        return eval_import(&args, file, device);
    }
    let Some(run) = args.checkpoint.as_ref() else { bail!("pass --checkpoint RUN_DIR, or --import FILE with --dataset") };
    let recipe = proco::train::trainer::load_recipe(run)?;
    let data = run_data(&recipe, &data_dir(args.data_dir.clone()))?;
    let names = proco::train::report::class_names_or_indices(data.class_names.as_deref(), data.class_counts.len());
    for split in &data.eval {
        let e = evaluate_run(run, args.latest, split.dataset.clone(), data.test_transform.clone(), &data.class_counts, device)?;
        report_split(&run.display().to_string(), split.name, split.dataset.len(), &e, &data.class_counts, &names, &run.join("eval").join(split.name))?;
    }
    if args.plots {
        proco::train::trainer::redraw_plots(run, &data.class_counts)?;
        println!("plots redrawn in {}", run.join("plots").display());
    }
    Ok(())
}

/// `proco eval --import FILE --dataset D`.
fn eval_import(args: &EvalArgs, file: &std::path::Path, device: Device) -> Result<()> {
    use proco::train::recipe::DatasetKind;
    let ckpt = proco::import::read_authors_checkpoint(file)?;
    let kind = match args.dataset.as_deref() {
        Some("cifar10") => DatasetKind::Cifar10,
        Some("cifar100") => DatasetKind::Cifar100,
        Some("imagenet-lt") => DatasetKind::ImagenetLt,
        Some("inat2018") => DatasetKind::Inat2018,
        Some("own") => DatasetKind::Own,
        _ => bail!("--import needs --dataset (cifar10, cifar100, imagenet-lt, inat2018 or own)"),
    };
    let base = if kind.is_cifar() { Recipe::cifar(kind, args.imbalance, 200) } else { Recipe::imagenet_scale(kind) };
    let recipe = Recipe { arch: ckpt.config.arch, classifier: ckpt.config.classifier, feature_dim: ckpt.config.feature_dim, hidden_dim: ckpt.config.hidden_dim, ..base };
    recipe.validate().with_context(|| format!("the {:?} network of {} on {kind:?}", ckpt.config.arch, file.display()))?;
    println!(
        "{}: {:?} with a {:?} classifier of {} classes, projection {} -> {}{}{}",
        file.display(),
        ckpt.config.arch,
        ckpt.config.classifier,
        ckpt.num_classes,
        ckpt.config.hidden_dim,
        ckpt.config.feature_dim,
        ckpt.epoch.map_or(String::new(), |e| format!(", epoch {e}")),
        ckpt.best_acc1.map_or(String::new(), |a| format!(", best_acc1 {a:.2} (as saved)"))
    );
    println!("  entries: {}", ckpt.entries.iter().map(|(k, v)| format!("{k} ({v})")).collect::<Vec<_>>().join(", "));
    if !ckpt.opaque_globals.is_empty() {
        println!("  pickled objects left unloaded (never imported or called): {}", ckpt.opaque_globals.join(", "));
    }
    let data = run_data(&recipe, &data_dir(args.data_dir.clone()))?;
    if data.class_counts.len() != ckpt.num_classes {
        bail!("{} classifies {} classes but {kind:?} has {}; pass the --dataset it was trained on", file.display(), ckpt.num_classes, data.class_counts.len());
    }
    let net = ckpt.network(device, file)?;
    let names = proco::train::report::class_names_or_indices(data.class_names.as_deref(), data.class_counts.len());
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{}.eval", file.display())));
    for split in &data.eval {
        let e = proco::train::evaluate_detailed(&net, split.dataset.clone(), data.test_transform.clone(), &data.class_counts, 512, recipe.loader_threads, recipe.reduced_decode, None)?;
        report_split(&file.display().to_string(), split.name, split.dataset.len(), &e, &data.class_counts, &names, &out.join(split.name))?;
    }
    Ok(())
}
