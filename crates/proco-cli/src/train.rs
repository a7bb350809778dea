//! `proco train` and `proco eval`: resolve the recipe, build the CIFAR-LT data, run, print.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use proco::data::cifar::{load_cifar, Checksum, CifarVariant, Split};
use proco::data::long_tail::{long_tailed, LongTailProfile};
use proco::data::{Dataset, InMemoryDataset, Subset};
use proco::pipeline::{CifarTestView, CifarTrainViews};
use proco::train::recipe::{DatasetKind, PRESETS};
use proco::train::{evaluate_run, train, Progress, Recipe, RunOptions, ShotAccuracy, TrainData};

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
    /// Data directory (default: $PROCO_DATA_DIR, else ~/.cache/proco/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Use only about N training images (the same fraction of every class, at least one each)
    /// and the first N test images: quick checks on a slice of the real data.
    #[arg(long)]
    limit: Option<usize>,
}

/// Flags of `proco eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// Run directory written by `proco train`.
    #[arg(long)]
    checkpoint: PathBuf,
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
        let base = Recipe::cifar(recipe.dataset, recipe.imbalance_ratio, e);
        recipe = Recipe { epochs: e, warmup_epochs: base.warmup_epochs, milestones: base.milestones, ..recipe };
    }
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        recipe = recipe.merge_toml(&text).with_context(|| format!("in {}", path.display()))?;
    }
    for kv in &args.set {
        let Some((k, v)) = kv.split_once('=') else { bail!("--set expects FIELD=VALUE, got `{kv}`") };
        let (k, v) = (k.trim(), v.trim());
        // A TOML value as written (0.1, [80, 90], "cosine", true), else a bare word as a string.
        let value = match toml::from_str::<toml::Table>(&format!("v = {v}")) {
            Ok(_) => v.to_string(),
            Err(_) => toml::Value::String(v.to_string()).to_string(),
        };
        recipe = recipe.merge_toml(&format!("{k} = {value}")).with_context(|| format!("--set {kv}"))?;
    }
    if let Some(s) = args.seed {
        recipe.seed = s;
    }
    if args.limit.is_some() {
        recipe.limit = args.limit;
    }
    recipe.validate()?;
    Ok(recipe)
}

fn variant(recipe: &Recipe) -> Result<CifarVariant> {
    Ok(match recipe.dataset {
        DatasetKind::Cifar10 => CifarVariant::Cifar10,
        DatasetKind::Cifar100 => CifarVariant::Cifar100,
        other => bail!("{other:?} training is not available from the command line yet; CIFAR-10/100-LT are"),
    })
}

/// A prefix of a dataset (for --limit on the test set).
fn head<D: Dataset>(d: Arc<D>, limit: Option<usize>) -> Result<Subset<D>> {
    let n = limit.map_or(d.len(), |l| l.min(d.len()));
    Ok(Subset::new(d, (0..n).collect())?)
}

/// About `limit` samples keeping the class proportions: the first ceil(n_c * limit / N) of
/// every class (so the long tail keeps its shape and no class disappears).
fn stratified<D: Dataset>(d: Arc<D>, limit: Option<usize>) -> Result<Subset<D>> {
    let Some(limit) = limit.filter(|&l| l < d.len()) else {
        let n = d.len();
        return Ok(Subset::new(d, (0..n).collect())?);
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
    Ok(Subset::new(d, keep)?)
}

type Cifar = Subset<Subset<InMemoryDataset>>;

/// The CIFAR-LT data of `recipe` from `dir`: the long-tailed training set (cut down by the
/// recipe's `limit`), the test set, the three training views and the test view.
pub(crate) fn cifar_data(recipe: &Recipe, dir: &Path) -> Result<TrainData<Cifar, Subset<InMemoryDataset>, CifarTrainViews, CifarTestView>> {
    let v = variant(recipe)?;
    let limit = recipe.limit;
    let train_set = Arc::new(load_cifar(dir, v, Split::Train, Checksum::Official)?);
    let test_set = Arc::new(load_cifar(dir, v, Split::Test, Checksum::Official)?);
    let (lt, counts) = long_tailed(train_set, LongTailProfile::Exponential, recipe.imbalance_ratio, 0)?;
    let train = Arc::new(stratified(Arc::new(lt), limit)?);
    let class_counts = if limit.is_some() {
        let mut c = vec![0usize; counts.len()];
        (0..train.len()).for_each(|i| c[train.label(i)] += 1);
        c
    } else {
        counts
    };
    Ok(TrainData {
        train,
        test: Arc::new(head(test_set, limit)?),
        train_transform: Arc::new(CifarTrainViews::new()),
        test_transform: Arc::new(CifarTestView),
        class_counts,
    })
}

fn pct(a: Option<f64>) -> String {
    a.map_or("-".into(), |v| format!("{v:.2}"))
}

fn summary(a: &ShotAccuracy) -> String {
    format!("top-1 {:.2}  many {}  medium {}  few {}", a.top1, pct(a.many), pct(a.medium), pct(a.few))
}

/// Runs `proco train`.
pub fn run_train(args: TrainArgs) -> Result<()> {
    let recipe = resolve_recipe(&args)?;
    let device = parse_device(&args.device)?;
    let run_dir = args.run_dir.clone().unwrap_or_else(|| PathBuf::from(format!("runs/{}-seed{}", args.preset, recipe.seed)));
    let dir = data_dir(args.data_dir.clone());
    let data = cifar_data(&recipe, &dir)?;
    println!(
        "proco train: {} on {:?} (IF {}), {} training / {} test images, {} epochs{}, run dir {}",
        args.preset,
        recipe.dataset,
        recipe.imbalance_ratio,
        data.train.len(),
        data.test.len(),
        recipe.epochs,
        args.stop_after.map_or(String::new(), |k| format!(" (stopping after {k})")),
        run_dir.display()
    );
    let options = RunOptions { run_dir: run_dir.clone(), device, stop_after: args.stop_after, resume: args.resume, eval_batch_size: 512 };
    let bar = ProgressBar::hidden();
    let started = Instant::now();
    let mut on_progress = |p: Progress| match p {
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
            bar.set_message(format!("ce {ce_loss:.3} proco {proco_loss:.3} acc {accuracy:.1}% {images_per_sec:.0} img/s"));
        }
        Progress::EpochEnd(r) => {
            bar.finish_and_clear();
            println!(
                "epoch {:>3}  {}  | train ce {:.3} proco {:.3} acc {:.1}%  {:.0} img/s  {:.0}s (total {:.0}s)",
                r.epoch,
                summary(&r.val),
                r.ce_loss_train,
                r.proco_loss_train,
                r.train_top1,
                r.images_per_sec,
                r.seconds,
                started.elapsed().as_secs_f64()
            );
        }
    };
    let out = train(&recipe, &data, &options, &mut on_progress)?;
    if let Some(b) = out.best {
        println!("best epoch {}: {}", b.epoch, summary(&b.accuracy));
    }
    println!("metrics: {0}/metrics.jsonl, plots: {0}/plots/, TensorBoard: tensorboard --logdir {0}", run_dir.display());
    Ok(())
}

/// Runs `proco eval`.
pub fn run_eval(args: EvalArgs) -> Result<()> {
    let recipe = proco::train::trainer::load_recipe(&args.checkpoint)?;
    let device = parse_device(&args.device)?;
    let data = cifar_data(&recipe, &data_dir(args.data_dir))?;
    let (acc, loss) = evaluate_run(&args.checkpoint, args.latest, data.test.clone(), data.test_transform.clone(), &data.class_counts, device)?;
    println!("{}: {}  (logit-adjusted CE {loss:.4})", args.checkpoint.display(), summary(&acc));
    if args.plots {
        proco::train::trainer::redraw_plots(&args.checkpoint, &data.class_counts)?;
        println!("plots redrawn in {}", args.checkpoint.join("plots").display());
    }
    Ok(())
}
