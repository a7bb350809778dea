//! Measurements behind `proco bench`: Bessel throughput, ProCo loss step time, data-pipeline
//! throughput, and the training figures (three-view step and inference throughput of
//! ResNet-32, the ProCo branch's share of a step, peak memory, one full CIFAR-10-LT epoch).
//! Timing only; printing is the caller's business.

use std::path::{Path, PathBuf};
use std::time::Instant;

use proco_vmf::{bessel_ratio, compat, log_bessel_i};
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::estimator::{EstimatorPair, TensorUpdate, VmfEstimator};
use crate::loss::{BesselRoute, LogPrior, ProCoLoss};
use crate::model::TwoBranchNet;
use crate::train::recipe::Recipe;
use crate::train::sgd::Sgd;
use crate::train::{train, train_step, EpochRecord, Objective, Progress, RunData, RunOptions, StepPosition};

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
/// consumes), nothing else running; JPEGs decoded at reduced scale where the views allow it
/// when `reduced_decode` is set.
pub fn pipeline_throughput(dataset: std::sync::Arc<dyn crate::data::Dataset>, transform: std::sync::Arc<dyn crate::loader::SampleTransform>, threads: usize, batch_size: usize, epochs: usize, reduced_decode: bool) -> Result<f64> {
    let config = crate::loader::LoaderConfig { batch_size, drop_last: true, shuffle: true, seed: 0, threads, prefetch: 4, reduced_decode, shard: crate::loader::Shard::WHOLE };
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

/// Image decoders compared by [`decode_throughput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageDecoder {
    /// Ours, [`crate::data::decode::decode_bytes`] (zune-jpeg straight to RGB, with PIL's
    /// truncation rule).
    Proco,
    /// The `image` crate's default path: `image::load_from_memory(..).into_rgb8()` (also
    /// zune-jpeg underneath, through a copy of the input and a colour conversion).
    ImageCrate,
    /// libjpeg-turbo's TurboJPEG API (the library PIL bundles), through the `turbojpeg`
    /// crate; only with the `libjpeg-turbo` feature.
    #[cfg(feature = "libjpeg-turbo")]
    LibjpegTurbo,
}

/// Decodes with libjpeg-turbo into RGB.
#[cfg(feature = "libjpeg-turbo")]
fn decode_turbojpeg(bytes: &[u8], path: &Path) -> Result<image::RgbImage> {
    let fail = |e: turbojpeg::Error| ProcoError::Data { path: path.to_path_buf(), reason: e.to_string() };
    let img: turbojpeg::Image<Vec<u8>> = turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB).map_err(fail)?;
    image::RgbImage::from_raw(img.width as u32, img.height as u32, img.pixels).ok_or_else(|| ProcoError::Data { path: path.to_path_buf(), reason: "libjpeg-turbo returned a short buffer".into() })
}

/// Decoding throughput of `decoder` over the files `paths` (read into memory first, so the
/// figure is the decoder's, not the disk's) on `threads` threads, for `epochs` passes:
/// (images per second, megapixels per second). Fails on the first file that does not decode.
pub fn decode_throughput(paths: &[PathBuf], decoder: ImageDecoder, threads: usize, epochs: usize) -> Result<(f64, f64)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let files = paths.iter().map(|p| std::fs::read(p).map_err(ProcoError::io_at(p))).collect::<Result<Vec<_>>>()?;
    let pixels = AtomicUsize::new(0);
    let failure = std::sync::Mutex::new(None::<ProcoError>);
    let total = files.len() * epochs;
    let start = Instant::now();
    crate::parallel::for_each_chunk(total, 1, threads, &|range| {
        for k in range {
            let (bytes, path) = (&files[k % files.len()], &paths[k % files.len()]);
            let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<image::RgbImage> {
                Ok(match decoder {
                    ImageDecoder::Proco => crate::data::decode::decode_bytes(bytes).map_err(|problem| ProcoError::Image { path: path.clone(), listed_at: None, problem })?,
                    ImageDecoder::ImageCrate => image::load_from_memory(bytes).map_err(|e| ProcoError::Data { path: path.clone(), reason: e.to_string() })?.into_rgb8(),
                    #[cfg(feature = "libjpeg-turbo")]
                    ImageDecoder::LibjpegTurbo => decode_turbojpeg(bytes, path)?,
                })
            }))
            .unwrap_or_else(|_| Err(ProcoError::Data { path: path.clone(), reason: "the decoder panicked on this file".into() }));
            match decoded {
                Ok(img) => {
                    pixels.fetch_add(img.width() as usize * img.height() as usize, Ordering::Relaxed);
                }
                Err(e) => {
                    failure.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((total as f64 / secs, pixels.load(Ordering::Relaxed) as f64 / secs / 1e6))
}

/// How long a training-figure measurement runs: `warmup` untimed repetitions, then timed ones
/// until both `min_steps` repetitions and `min_secs` seconds are reached.
#[derive(Debug, Clone, Copy)]
pub struct TimingBudget {
    /// Untimed repetitions first (allocator, kernel selection, caches).
    pub warmup: usize,
    /// Fewest timed repetitions.
    pub min_steps: usize,
    /// Fewest timed seconds.
    pub min_secs: f64,
}

/// The preset whose recipe the training figures use (ResNet-32, p = 128, tau = 0.1, SGD
/// momentum 0.9, weight decay 2e-4, lr 0.3).
pub const TRAIN_BENCH_PRESET: &str = "cifar10-lt-if100";

/// Training images per class of CIFAR-10-LT at imbalance 100 (5000 * 0.01^(j/9), floored):
/// the prior of the logit-adjusted losses in the synthetic measurements.
fn cifar10_lt_counts() -> Vec<usize> {
    (0..10).map(|j| (5000.0 * 0.01f64.powf(j as f64 / 9.0)).floor() as usize).collect()
}

/// The benchmark recipe at `batch_size`.
fn bench_recipe(batch_size: usize) -> Result<Recipe> {
    let recipe = Recipe { batch_size, ..Recipe::preset(TRAIN_BENCH_PRESET)? };
    recipe.validate()?;
    Ok(recipe)
}

/// Waits for the work queued on `device` (a no-op on the CPU, where operations are synchronous).
fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `f` under `budget` and returns (timed repetitions, their wall time in seconds),
/// waiting for the device before reading the clock.
fn timed(budget: TimingBudget, device: Device, mut f: impl FnMut() -> Result<()>) -> Result<(usize, f64)> {
    for _ in 0..budget.warmup {
        f()?;
    }
    synchronize(device);
    let start = Instant::now();
    let mut reps = 0usize;
    while reps < budget.min_steps.max(1) || start.elapsed().as_secs_f64() < budget.min_secs {
        f()?;
        reps += 1;
    }
    synchronize(device);
    Ok((reps, start.elapsed().as_secs_f64()))
}

/// `n` random unit rows of dimension `p` on `device` (f32).
fn unit_rows(n: i64, p: i64, device: Device) -> Result<Tensor> {
    let raw = Tensor::f_randn([n, p], (Kind::Float, device))?;
    Ok(raw.f_div(&raw.f_norm_scalaropt_dim(2, [1i64].as_slice(), true)?)?)
}

/// Training images per second of ResNet-32 + ProCo at `batch_size`: each step is
/// [`train_step`] on a fixed synthetic batch of three 32x32 views per image (forward of the
/// 3N stacked views, CE on view 1 + ProCo on views 2 and 3 with the estimator updates,
/// backward, SGD step at the first epoch's learning rate) over CIFAR-10's 10 classes. Counts
/// N images per step, not 3N views.
pub fn train_step_throughput(batch_size: usize, device: Device, budget: TimingBudget) -> Result<f64> {
    train_step_throughput_of(&bench_recipe(batch_size)?, &cifar10_lt_counts(), device, budget)
}

/// The ImageNet-LT recipe's step (`imagenet-lt-r50`: ResNet-50, cosine classifier, head 2048 ->
/// 2048 -> 1024, tau 0.07) at `batch_size` and `image_size` pixels over 1000 classes whose
/// prior is ImageNet-LT's profile (1280 down to 5 images per class), in `precision`: training
/// images per second as [`train_step_throughput`] counts them.
pub fn imagenet_train_step_throughput(batch_size: usize, image_size: u32, precision: crate::model::Precision, device: Device, budget: TimingBudget) -> Result<f64> {
    let recipe = Recipe { batch_size, image_size, precision, ..Recipe::preset("imagenet-lt-r50")? };
    recipe.validate()?;
    let counts: Vec<usize> = (0..1000).map(|j| (1280.0 * (5.0f64 / 1280.0).powf(j as f64 / 999.0)).round() as usize).collect();
    train_step_throughput_of(&recipe, &counts, device, budget)
}

/// [`train_step_throughput`] for any recipe and prior.
fn train_step_throughput_of(recipe: &Recipe, counts: &[usize], device: Device, budget: TimingBudget) -> Result<f64> {
    let (recipe, batch_size, size) = (recipe.clone(), recipe.batch_size, i64::from(recipe.image_size));
    let net = TwoBranchNet::new(&recipe.model(), counts.len(), device)?;
    let mut sgd = Sgd::new(recipe.momentum, recipe.weight_decay);
    let mut loss = crate::train::LossState::new(&recipe, counts.len(), device)?;
    let objective = Objective::new(&recipe, counts)?;
    let n = batch_size as i64;
    let x = Tensor::f_randn([3 * n, 3, size, size], (Kind::Float, device))?;
    let y = Tensor::f_randint(counts.len() as i64, [n], (Kind::Int64, device))?;
    let mut step = 0;
    let (reps, secs) = timed(budget, device, || {
        train_step(&net, &mut sgd, &mut loss, &objective, &x, &y, StepPosition { epoch: 0, step, lr: recipe.lr_at(0) })?;
        step += 1;
        Ok(())
    })?;
    Ok((reps * batch_size) as f64 / secs)
}

/// Inference images per second of the ResNet-32 classifier at `batch_size` (eval mode, no
/// gradient, classifier logits only) on a fixed synthetic batch.
pub fn inference_throughput(batch_size: usize, device: Device, budget: TimingBudget) -> Result<f64> {
    let recipe = bench_recipe(batch_size)?;
    let net = TwoBranchNet::new(&recipe.model(), cifar10_lt_counts().len(), device)?;
    let x = Tensor::f_randn([batch_size as i64, 3, 32, 32], (Kind::Float, device))?;
    let _guard = tch::no_grad_guard();
    let (reps, secs) = timed(budget, device, || {
        let _ = std::hint::black_box(net.logits(&x)?);
        Ok(())
    })?;
    Ok((reps * batch_size) as f64 / secs)
}

/// Mean seconds per training step spent in the ProCo branch alone at `batch_size`: for views
/// 2 and 3, the estimator updates, contrast logits and their CE ([`crate::loss::ProCoBranch::forward`]),
/// then the backward pass to the features. Synthetic unit features (p = 128) and labels over
/// CIFAR-10's classes; the backbone is not involved.
pub fn proco_step_time(batch_size: usize, device: Device, budget: TimingBudget) -> Result<f64> {
    let recipe = bench_recipe(batch_size)?;
    let counts = cifar10_lt_counts();
    let objective = Objective::new(&recipe, &counts)?;
    let branch = objective.branch().ok_or_else(|| ProcoError::InvalidConfig { reason: "the bench recipe's contrastive loss must be ProCo".into() })?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(recipe.seed);
    let mut estimators = EstimatorPair::new(counts.len(), recipe.feature_dim, &mut rng)?;
    let n = batch_size as i64;
    let base = unit_rows(3 * n, recipe.feature_dim as i64, device)?;
    let y = Tensor::f_randint(counts.len() as i64, [n], (Kind::Int64, device))?;
    let (reps, secs) = timed(budget, device, || {
        let z = base.detach().set_requires_grad(true);
        let out = branch.forward(&z, &y, &mut estimators)?;
        out.loss.f_backward()?;
        std::hint::black_box(z.grad().f_sum(z.kind())?.f_double_value(&[])?);
        Ok(())
    })?;
    Ok(secs / reps as f64)
}

/// Peak resident set size of this process so far, in bytes (`VmHWM` of /proc/self/status;
/// Linux only, an error elsewhere).
pub fn peak_rss_bytes() -> Result<u64> {
    let path = PathBuf::from("/proc/self/status");
    let text = std::fs::read_to_string(&path).map_err(|source| ProcoError::Io { path: path.clone(), source })?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| ProcoError::Data { path, reason: "no `VmHWM: <n> kB` line".into() })?;
    Ok(kib * 1024)
}

/// The result of [`full_epoch`].
#[derive(Debug, Clone)]
pub struct FullEpoch {
    /// The epoch's record; its `seconds` cover the data pipeline, the training steps and the
    /// evaluation on the test set.
    pub record: EpochRecord,
    /// Wall time of the whole [`train`] call: the epoch plus building the network, writing the
    /// recipe, checkpoint, metrics and plots.
    pub total_seconds: f64,
}

/// Runs the first epoch of `recipe` on `data` with [`train`] (`stop_after = 1`) into
/// `run_dir`, which must not hold a run, and times it.
pub fn full_epoch(recipe: &Recipe, data: &RunData, device: Device, run_dir: &Path) -> Result<FullEpoch> {
    let options = RunOptions { stop_after: Some(1), ..RunOptions::new(run_dir, device) };
    let start = Instant::now();
    let summary = train(recipe, data, &options, &mut |_: Progress| {})?;
    let total_seconds = start.elapsed().as_secs_f64();
    let record = summary.epochs.into_iter().next().ok_or_else(|| ProcoError::InvalidConfig { reason: "the recipe ran no epoch".into() })?;
    Ok(FullEpoch { record, total_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_prior_is_cifar10_lt_if100() {
        let counts = cifar10_lt_counts();
        assert_eq!(counts.first(), Some(&5000));
        assert_eq!(counts.last(), Some(&50));
        assert_eq!(counts.iter().sum::<usize>(), 12406);
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let bytes = peak_rss_bytes().unwrap();
            assert!(bytes > 1 << 20, "{bytes}");
        }
    }
}
