//! Where the time of one ProCo branch goes (the "ProCo loss + estimator" figure of
//! `proco bench --only train`): the same synthetic setup (three views of N unit features,
//! p = 128, CIFAR-10-LT's 10 classes, estimators updated every step), timed phase by phase,
//! and the same tensor plumbing with the host mathematics left out, which bounds from below
//! what any host computation can reach inside this harness.
//!
//! Run: `cargo run --release -p proco --example proco_branch_phases -- [N] [steps]`
//! (defaults 256 and 2000).

use std::time::Instant;

use proco::loss::{HostBatch, HostGradient};
use proco::tch::{Device, Kind, Tensor};
use proco::validate::FeatureRows;
use proco::{validate, BatchStatistics, EstimatorPair, LogPrior, ProCoLoss};
use rand::SeedableRng;

fn main() -> proco::Result<()> {
    proco::allocator::retain_freed_memory();
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let steps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let (c, p) = (10usize, 128usize);
    let counts: Vec<f64> = (0..c).map(|j| (5000.0 * 0.01f64.powf(j as f64 / 9.0)).floor()).collect();
    let prior = LogPrior::from_counts(&counts)?;
    let loss_fn = ProCoLoss::new(p, 0.1)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut estimators = EstimatorPair::new(c, p, &mut rng)?;
    proco::tch::manual_seed(0);
    let raw = Tensor::f_randn([3 * n, p as i64], (Kind::Float, Device::Cpu))?;
    let base = raw.f_div(&raw.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?)?;
    let y = Tensor::f_randint(c as i64, [n], (Kind::Int64, Device::Cpu))?;

    let zeros = vec![0.0; 2 * n as usize * p];
    let names = ["to host, checks, stats", "host pass + gradient", "attach gradient", "backward + grad sum"];
    let mut full = [0.0f64; 4];
    let mut plumbing = [0.0f64; 4];
    for step in 0..steps + 5 {
        let timed = step >= 5;
        for with_math in [true, false] {
            let z = base.detach().set_requires_grad(true);
            let t0 = Instant::now();
            let views = z.f_narrow(0, n, 2 * n)?;
            // SAFETY: nothing writes to the storage of `z` while `host` lives (backward writes only its gradient).
            let host = unsafe { validate::features_on_host(&views, p) }?;
            let labels = validate::labels(&y, n, c)?;
            let (first, second) = host.rows().split_at(n as usize * p);
            let kind = views.kind();
            let statistics = |rows: FeatureRows<'_>| -> proco::Result<BatchStatistics> {
                validate::unit_rows(rows, p, kind)?;
                BatchStatistics::from_rows(rows, &labels, c, p)
            };
            let (first_stats, second_stats) = proco::openmp::join(|| statistics(first), || statistics(second));
            let (first_stats, second_stats) = (first_stats?, second_stats?);
            let t1 = Instant::now();
            let mut grad = HostGradient::for_features(&z)?;
            grad.push_zeros(n as usize * p)?;
            let mut loss = 0.0;
            if with_math {
                estimators.apply(&first_stats)?;
                let after_first = estimators.previous().clone();
                estimators.apply(&second_stats)?;
                let outs = loss_fn.host_losses(
                    HostBatch { features: first, labels: &labels, estimator: &after_first },
                    HostBatch { features: second, labels: &labels, estimator: estimators.previous() },
                    &prior,
                    &mut grad,
                    0.5,
                )?;
                for out in &outs {
                    loss += 0.5 * out.loss;
                }
            } else {
                grad.push(&zeros, 0.5)?;
            }
            let t2 = Instant::now();
            let l = grad.attach(&z, loss)?;
            let t3 = Instant::now();
            l.f_backward()?;
            std::hint::black_box(z.grad().f_sum(z.kind())?.f_double_value(&[])?);
            let t4 = Instant::now();
            if timed {
                let acc = if with_math { &mut full } else { &mut plumbing };
                for (k, (a, b)) in [(t0, t1), (t1, t2), (t2, t3), (t3, t4)].into_iter().enumerate() {
                    acc[k] += (b - a).as_secs_f64();
                }
            }
        }
    }
    let us = |v: f64| v / steps as f64 * 1e6;
    println!("ProCo branch at N = {n}, C = {c}, p = {p}, mean over {steps} steps (microseconds)");
    println!("{:<22} {:>10} {:>16}", "phase", "branch", "plumbing only");
    for (k, name) in names.iter().enumerate() {
        println!("{name:<22} {:>10.1} {:>16.1}", us(full[k]), us(plumbing[k]));
    }
    println!("{:<22} {:>10.1} {:>16.1}", "total", us(full.iter().sum()), us(plumbing.iter().sum()));
    Ok(())
}
