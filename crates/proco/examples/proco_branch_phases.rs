//! Where the time of one ProCo branch goes (the "ProCo loss + estimator" figure of
//! `proco bench --only train`): the same synthetic setup (three views of N unit features,
//! p = 128, CIFAR-10-LT's 10 classes, estimators updated every step), run through the
//! library's [`ProCoBranch`] and timed phase by phase with
//! [`ProCoBranch::forward_with_phases`], then backward.
//!
//! Run: `cargo run --release -p proco --example proco_branch_phases -- [N] [steps]`
//! (defaults 256 and 2000).

use std::time::Instant;

use proco::loss::{BranchPhases, ProCoBranch};
use proco::tch::{Device, Kind, Tensor};
use proco::{EstimatorPair, LogPrior};
use rand::SeedableRng;

fn main() -> proco::Result<()> {
    proco::allocator::retain_freed_memory();
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let steps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let (c, p) = (10usize, 128usize);
    let counts: Vec<f64> = (0..c).map(|j| (5000.0 * 0.01f64.powf(j as f64 / 9.0)).floor()).collect();
    let branch = ProCoBranch::new(p, 0.1, LogPrior::from_counts(&counts)?)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut estimators = EstimatorPair::new(c, p, &mut rng)?;
    proco::tch::manual_seed(0);
    let raw = Tensor::f_randn([3 * n, p as i64], (Kind::Float, Device::Cpu))?;
    let base = raw.f_div(&raw.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?)?;
    let y = Tensor::f_randint(c as i64, [n], (Kind::Int64, Device::Cpu))?;

    let warm_up = 5;
    let mut phases = BranchPhases::default();
    let mut backward = 0.0;
    for step in 0..steps + warm_up {
        if step == warm_up {
            phases = BranchPhases::default();
            backward = 0.0;
        }
        let z = base.detach().set_requires_grad(true);
        let out = branch.forward_with_phases(&z, &y, &mut estimators, &mut phases)?;
        let t = Instant::now();
        out.loss.f_backward()?;
        std::hint::black_box(z.grad().f_sum(z.kind())?.f_double_value(&[])?);
        backward += t.elapsed().as_secs_f64();
    }
    let us = |v: f64| v / steps as f64 * 1e6;
    println!("ProCo branch at N = {n}, C = {c}, p = {p}, mean over {steps} steps (microseconds)");
    let rows = [
        ("to host, checks, stats", phases.statistics.as_secs_f64()),
        ("host pass + gradient", phases.host_pass.as_secs_f64()),
        ("attach gradient", phases.attach.as_secs_f64()),
        ("backward + grad sum", backward),
    ];
    for (name, secs) in rows {
        println!("{name:<22} {:>10.1}", us(secs));
    }
    println!("{:<22} {:>10.1}", "total", us(rows.iter().map(|r| r.1).sum()));
    Ok(())
}
