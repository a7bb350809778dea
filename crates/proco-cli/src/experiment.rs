//! `proco experiment batch-size`: the paper's batch-size comparison as one command.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use proco::experiment::{BatchSizeGrid, GridProgress};
use proco::loss::ContrastiveLoss;
use proco::train::recipe::DatasetKind;
use proco::train::{Progress, Recipe};

use crate::data::data_dir;
use crate::parse_device;
use crate::train::{apply_sets, run_data, summary};

/// Experiments that compare methods over a grid of runs.
#[derive(Subcommand)]
pub enum ExperimentCommand {
    /// Accuracy against batch size for ProCo, SupCon and BCL under SupCon's two-stage
    /// protocol (the contrastive loss alone, then a linear classifier on the frozen
    /// backbone). Each cell is a resumable run directory under --out; run the command again
    /// to continue an interrupted grid. Writes results.csv, results.md and
    /// accuracy_vs_batch_size.svg.
    BatchSize(BatchSizeArgs),
}

/// Flags of `proco experiment batch-size`.
#[derive(Args)]
pub struct BatchSizeArgs {
    /// Dataset: cifar10 or cifar100.
    #[arg(long, default_value = "cifar100", value_parser = ["cifar10", "cifar100"])]
    dataset: String,
    /// Imbalance ratio of the long-tailed training set (1 = the full balanced set).
    #[arg(long, default_value_t = 100.0)]
    imbalance: f64,
    /// Stage-1 batch sizes, comma-separated; the learning rate scales linearly from 0.3 at 256.
    #[arg(long, value_delimiter = ',', default_values_t = [32usize, 64, 128, 256, 512])]
    batch_sizes: Vec<usize>,
    /// Methods, comma-separated: proco, supcon, bcl.
    #[arg(long, value_delimiter = ',', default_values_t = ["proco".to_string(), "supcon".to_string(), "bcl".to_string()])]
    methods: Vec<String>,
    /// Epochs of stage 1 (the CIFAR recipe's warm-up and milestones for this length).
    #[arg(long, default_value_t = 200)]
    epochs: usize,
    /// Epochs of the linear stage (batch 256, cosine from lr 0.1).
    #[arg(long, default_value_t = 10)]
    linear_epochs: usize,
    /// SupCon cells contrast every batch against a queue of this many earlier feature rows
    /// (both views, detached; 0 = within the batch alone, as Khosla et al.).
    #[arg(long, default_value_t = 0)]
    supcon_queue: usize,
    /// Override a field of every cell's recipe, e.g. `--set temperature=0.07` (TOML values).
    #[arg(long = "set", value_name = "FIELD=VALUE")]
    set: Vec<String>,
    /// Use only about N training images and N test images (the same fraction of every class).
    #[arg(long)]
    limit: Option<usize>,
    /// Random seed of every cell.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory of the grid (default: runs/batch-size-<dataset>-if<imbalance>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Data directory (default: $PROCO_DATA_DIR, else ~/.cache/proco/data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Device: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(command: ExperimentCommand) -> Result<()> {
    match command {
        ExperimentCommand::BatchSize(args) => batch_size(args),
    }
}

fn method(name: &str) -> Result<ContrastiveLoss> {
    Ok(match name.trim() {
        "proco" => ContrastiveLoss::Proco,
        "supcon" => ContrastiveLoss::Supcon,
        "bcl" => ContrastiveLoss::Bcl,
        // Refused by the grid, with the reason.
        "none" => ContrastiveLoss::None,
        other => bail!("unknown method `{other}`; choose among proco, supcon and bcl"),
    })
}

fn batch_size(args: BatchSizeArgs) -> Result<()> {
    let kind = if args.dataset == "cifar10" { DatasetKind::Cifar10 } else { DatasetKind::Cifar100 };
    let mut base = Recipe::cifar(kind, args.imbalance, args.epochs);
    base.linear_epochs = args.linear_epochs;
    base.seed = args.seed;
    base.limit = args.limit;
    let base = apply_sets(base, &args.set)?;
    let methods = args.methods.iter().map(|m| method(m)).collect::<Result<Vec<_>>>()?;
    let grid = BatchSizeGrid::new(base.clone(), args.batch_sizes.clone(), methods)?.with_supcon_queue(args.supcon_queue);
    let device = parse_device(&args.device)?;
    let out = args.out.unwrap_or_else(|| PathBuf::from(format!("runs/batch-size-{}-if{}", args.dataset, args.imbalance)));
    // The data as the smallest cell sees it (the base's batch of 256 only sets the lr scale).
    let smallest = grid.cell_recipe(grid.methods()[0], grid.batch_sizes()[0]);
    let data = run_data(&smallest, &data_dir(args.data_dir))?;
    println!(
        "proco experiment batch-size: {} x batch {:?} on {:?} (IF {}), {} training / {} test images, {} + {} linear epochs per cell, in {}",
        grid.methods().iter().map(|m| m.as_str()).collect::<Vec<_>>().join(","),
        grid.batch_sizes(),
        kind,
        args.imbalance,
        data.train.len(),
        data.eval.first().map_or(0, |s| s.dataset.len()),
        base.epochs,
        base.linear_epochs,
        out.display()
    );
    let mut cell = String::new();
    let mut on_progress = |p: GridProgress| match p {
        GridProgress::CellStart { index, cells, method, batch_size, run_dir, done_epochs } => {
            cell = format!("[{}/{cells} {} b{batch_size}]", index + 1, method.as_str());
            let state = match done_epochs {
                0 => "starting".to_string(),
                d => format!("{d} epochs done"),
            };
            println!("{cell} {} ({state})", run_dir.display());
        }
        GridProgress::Train(Progress::EpochEnd(r)) => {
            let eval = r.val.as_ref().map_or_else(|| "not evaluated (stage 1)".to_string(), summary);
            println!("{cell} epoch {:>3} {:?}: {eval}  | loss {:.3}  {:.0} img/s  {:.0}s", r.epoch, r.stage, r.ce_loss_train + r.proco_loss_train, r.images_per_sec, r.seconds);
        }
        GridProgress::Train(_) => {}
    };
    let results = grid.run(&data, &out, device, &mut on_progress).with_context(|| format!("the grid in {}", out.display()))?;
    println!("{}", std::fs::read_to_string(out.join("results.md")).unwrap_or_default());
    println!("{} cells; table: {1}/results.md and results.csv, chart: {1}/accuracy_vs_batch_size.svg", results.len(), out.display());
    Ok(())
}
