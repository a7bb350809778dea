//! The `proco` command. Argument parsing and printing only; the work is in the `proco` library.

mod bench;
mod data;
mod experiment;
mod train;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use proco::tch::{Cuda, Device};

/// ProCo: probabilistic contrastive learning for long-tailed recognition.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate log I_nu(x), log I_nu(x) - nu log x and I_{nu+1}(x)/I_nu(x) exactly, next to the
    /// authors' recurrence.
    Bessel {
        /// Order nu >= 0 (ProCo uses nu = p/2 - 1).
        #[arg(long)]
        nu: f64,
        /// Argument x >= 0.
        #[arg(long)]
        x: f64,
    },
    /// Train ProCo (two branches, CE + alpha * ProCo) from a paper recipe.
    Train(train::TrainArgs),
    /// Evaluate a saved run on its test set: top-1 and many / medium / few-shot accuracy.
    Eval(train::EvalArgs),
    /// Comparisons over a grid of runs (the paper's batch-size experiment).
    Experiment {
        #[command(subcommand)]
        command: experiment::ExperimentCommand,
    },
    /// Download, inspect and summarise datasets.
    Data {
        #[command(subcommand)]
        command: data::DataCommand,
    },
    /// Measure Bessel throughput, ProCo loss step time, the data pipeline and training speed on
    /// this machine.
    Bench {
        /// Device for the loss and training timings: `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Seconds spent per throughput measurement (the least timed per training figure).
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Timed steps per loss configuration (after one warm-up step); the least timed steps
        /// per training figure.
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Floating-point type of the features in the loss timings.
        #[arg(long, value_enum, default_value_t = Precision::F32)]
        precision: Precision,
        /// Which measurements: the ProCo mathematics, the CIFAR data pipeline, the training
        /// figures, all of these, or (not part of all) the ImageNet-LT pipeline and JPEG
        /// decoding (imagenet-data, over ImageNet_LT_train.txt in --data-dir) and the
        /// ResNet-50 ImageNet-LT training step (train-imagenet).
        #[arg(long, value_enum, default_value_t = bench::Suite::All)]
        only: bench::Suite,
        /// Loader threads for the data-pipeline measurement.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Epochs timed in the data-pipeline measurements (CIFAR-10-LT IF 100, or the
        /// ImageNet-data images).
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        /// Data directory holding cifar-10-batches-bin (default: $PROCO_DATA_DIR, else ~/.cache/proco/data).
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Also time one full CIFAR-10-LT (IF 100) epoch with evaluation (training suite; slow:
        /// about a minute or more on two CPU cores).
        #[arg(long)]
        full_epoch: bool,
        /// Batch size of the ImageNet-LT training step (train-imagenet suite).
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        /// Image side of the ImageNet-LT training step (train-imagenet suite).
        #[arg(long, default_value_t = 224)]
        image_size: u32,
        /// Run the ImageNet-LT training step under bf16 autocast (train-imagenet suite).
        #[arg(long)]
        bf16: bool,
    },
}

/// Floating-point type of tensors.
#[derive(Clone, Copy, ValueEnum)]
pub enum Precision {
    F32,
    F64,
}

/// Parses `cpu`, `cuda` or `cuda:N`, failing clearly when CUDA is asked for but absent.
pub fn parse_device(spec: &str) -> Result<Device> {
    let device = match spec {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        s if s.starts_with("cuda:") => Device::Cuda(s[5..].parse().with_context(|| format!("bad CUDA index in `{s}`"))?),
        s => bail!("unknown device `{s}`; use cpu, cuda or cuda:N"),
    };
    if let Device::Cuda(i) = device {
        let n = Cuda::device_count();
        if i as i64 >= n {
            bail!("CUDA device {i} requested but {n} CUDA device(s) are available (is the NVIDIA driver loaded?)");
        }
    }
    Ok(device)
}

fn bessel(nu: f64, x: f64) -> Result<()> {
    if !(nu >= 0.0 && nu.is_finite() && x >= 0.0 && x.is_finite()) {
        bail!("need finite nu >= 0 and x >= 0, got nu = {nu}, x = {x}");
    }
    println!("nu = {nu}, x = {x}");
    println!("log I_nu(x)              {:.17e}", proco_vmf::log_bessel_i(nu, x));
    println!("log I_nu(x) - nu log x   {:.17e}", proco_vmf::log_bessel_i_minus_nu_log_x(nu, x));
    println!("I_(nu+1)(x) / I_nu(x)    {:.17e}", proco_vmf::bessel_ratio(nu, x));
    if x > 0.0 {
        let (l0, _) = proco_vmf::compat::log_bessel_ive_pair(nu, x);
        println!("authors' recurrence: log I = {:.17e}, ratio = {:.17e} (order {}, clipped at 1)", l0 + x, proco_vmf::compat::bessel_ratio_clipped(nu, x), nu.trunc());
    }
    Ok(())
}

fn main() -> Result<()> {
    // Before any tensor exists: training reuses its activation buffers instead of faulting
    // them in afresh every step (see the module notes).
    proco::allocator::retain_freed_memory();
    match Cli::parse().command {
        Command::Bessel { nu, x } => bessel(nu, x),
        Command::Bench { device, seconds, steps, precision, only, threads, epochs, data_dir, full_epoch, batch_size, image_size, bf16 } => {
            bench::run(&bench::BenchArgs { device, seconds, steps, precision, only, threads, epochs, data_dir, full_epoch, batch_size, image_size, bf16 })
        }
        Command::Data { command } => data::run(command),
        Command::Experiment { command } => experiment::run(command),
        Command::Train(args) => train::run_train(args),
        Command::Eval(args) => train::run_eval(args),
    }
}
