//! Measurements behind `proco bench`: Bessel throughput and ProCo loss step time.
//! Timing only; printing is the caller's business.

use std::time::Instant;

use proco_vmf::{bessel_ratio, compat, log_bessel_i};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::estimator::VmfEstimator;
use crate::loss::{BesselRoute, LogPrior, ProCoLoss};

/// `count` arguments spread log-uniformly over [lo, hi], the range ProCo's kt covers.
pub fn log_spaced(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    (0..count).map(|i| lo * (hi / lo).powf(i as f64 / (count.max(2) - 1) as f64)).collect()
}

/// Which function a throughput measurement evaluates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BesselKernel {
    /// [`proco_vmf::log_bessel_i`].
    LogI,
    /// [`proco_vmf::bessel_ratio`].
    Ratio,
    /// The authors' recurrence (both values at once), for comparison.
    AuthorsRecurrence,
}

/// Evaluations per second of `kernel` at order nu over `xs`, repeated for at least `min_secs`.
pub fn bessel_throughput(kernel: BesselKernel, nu: f64, xs: &[f64], min_secs: f64) -> f64 {
    let start = Instant::now();
    let mut evals = 0usize;
    let mut sink = 0.0;
    while start.elapsed().as_secs_f64() < min_secs {
        for &x in xs {
            sink += match kernel {
                BesselKernel::LogI => log_bessel_i(nu, x),
                BesselKernel::Ratio => bessel_ratio(nu, x),
                BesselKernel::AuthorsRecurrence => compat::log_bessel_ive_pair(nu, x).0,
            };
        }
        evals += xs.len();
    }
    std::hint::black_box(sink);
    evals as f64 / start.elapsed().as_secs_f64()
}

/// Mean wall time per ProCo loss step, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct LossTiming {
    /// Estimator update with the batch (statistics, host update).
    pub estimator: f64,
    /// Forward: contrast logits (including the host Bessel pass) and the cross entropy.
    pub forward: f64,
    /// Backward through the logits to the features.
    pub backward: f64,
}

/// Times estimator update + loss forward + backward for N unit features of dimension p
/// against C classes, averaged over `steps` after one warm-up step.
pub fn loss_step_time(n: usize, c: usize, p: usize, kind: Kind, device: Device, route: BesselRoute, steps: usize) -> Result<LossTiming> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut estimator = VmfEstimator::new(c, p, &mut rng)?;
    let counts: Vec<f64> = (0..c).map(|j| (500.0 * 0.01f64.powf(j as f64 / (c.max(2) - 1) as f64)).floor().max(1.0)).collect();
    let prior = LogPrior::from_counts(&counts)?;
    let loss_fn = ProCoLoss::new(p, 0.1)?.with_route(route);
    tch::manual_seed(0);
    let raw = Tensor::f_randn([n as i64, p as i64], (kind, device))?;
    let base = raw.f_div(&raw.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?)?;
    let labels = Tensor::f_randint(c as i64, [n as i64], (Kind::Int64, device))?;
    let mut total = LossTiming { estimator: 0.0, forward: 0.0, backward: 0.0 };
    for step in 0..=steps {
        let z = base.detach().set_requires_grad(true);
        let t0 = Instant::now();
        estimator.update(&z, &labels)?;
        let t1 = Instant::now();
        let loss = loss_fn.loss(&z, &labels, &estimator, &prior)?;
        let t2 = Instant::now();
        loss.f_backward()?;
        let _ = z.grad().f_sum(Kind::Double)?.f_double_value(&[])?;
        let t3 = Instant::now();
        if step > 0 {
            total.estimator += (t1 - t0).as_secs_f64();
            total.forward += (t2 - t1).as_secs_f64();
            total.backward += (t3 - t2).as_secs_f64();
        }
    }
    let k = steps.max(1) as f64;
    Ok(LossTiming { estimator: total.estimator / k, forward: total.forward / k, backward: total.backward / k })
}

/// Images per second of a loader pass: `epochs` full epochs of `dataset` through `transform`
/// on `threads` loader threads, batches of `batch_size` materialised as tensors (what training
/// consumes), nothing else running.
pub fn pipeline_throughput<D, T>(dataset: std::sync::Arc<D>, transform: std::sync::Arc<T>, threads: usize, batch_size: usize, epochs: usize) -> Result<f64>
where
    D: crate::data::Dataset + 'static,
    T: crate::loader::SampleTransform + 'static,
{
    let config = crate::loader::LoaderConfig { batch_size, drop_last: true, shuffle: true, seed: 0, threads, prefetch: 4 };
    let loader = crate::loader::Loader::new(dataset, transform, config)?;
    let start = Instant::now();
    let mut images = 0usize;
    for epoch in 0..epochs {
        for batch in loader.epoch(epoch as u64) {
            images += batch?.indices.len();
        }
    }
    Ok(images as f64 / start.elapsed().as_secs_f64())
}
