//! The `proco` command. Argument parsing and printing only; the work is in the `proco` library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use proco::bench::{bessel_throughput, log_spaced, loss_step_time, BesselKernel};
use proco::tch::{Cuda, Device, Kind};
use proco::BesselRoute;

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
    /// Measure Bessel throughput and ProCo loss step time on this machine.
    Bench {
        /// Device for the loss timings: `cpu`, `cuda` or `cuda:N`.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Seconds spent per throughput measurement.
        #[arg(long, default_value_t = 1.0)]
        seconds: f64,
        /// Timed steps per loss configuration (after one warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Floating-point type of the features in the loss timings.
        #[arg(long, value_enum, default_value_t = Precision::F32)]
        precision: Precision,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    F32,
    F64,
}

/// Parses `cpu`, `cuda` or `cuda:N`, failing clearly when CUDA is asked for but absent.
fn parse_device(spec: &str) -> Result<Device> {
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

fn bench(device: &str, seconds: f64, steps: usize, precision: Precision) -> Result<()> {
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

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Bessel { nu, x } => bessel(nu, x),
        Command::Bench { device, seconds, steps, precision } => bench(&device, seconds, steps, precision),
    }
}
