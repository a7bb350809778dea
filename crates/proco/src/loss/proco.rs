//! The ProCo loss: logit-adjusted cross entropy over closed-form contrast logits.
//!
//! For a feature z_i and class j with vMF(mu_j, kappa_j):
//! kt_ij = |kappa_j mu_j + z_i / tau|, s_ij = F(kt_ij) - F(kappa_j), F(x) = log I_nu(x) - nu log x,
//! nu = p/2 - 1, and d s_ij / d kt_ij = I_{nu+1}(kt_ij) / I_nu(kt_ij).
//!
//! Two routes, the same loss and gradient to rounding:
//! - Host pass ([`ProCoLoss::host_loss`], the default up to N x C x p = [`HOST_PASS_MAX_WORK`],
//!   i.e. CIFAR-10/100): the features come to the host once and `proco_vmf::contrast` computes
//!   kt, the logits (per class through a certified Chebyshev interpolant of A, integrated from
//!   kappa, kept between batches), the logit-adjusted CE and its exact gradient in one pass;
//!   [`HostGradient`] (or [`attach_gradient`]) hands the value back to autograd with that
//!   gradient, written by the pass straight into the tensor. A dozen tensor operations, their
//!   temporaries and synchronisations become one transfer each way. ProCo's two views run
//!   side by side on LibTorch's OpenMP threads ([`ProCoLoss::host_losses`]).
//! - Device route ([`ProCoLoss::contrast_logits`], for larger problems such as ImageNet-LT):
//!   kt^2 = kappa^2 + q with q_ij = (2/tau) z_i . (kappa_j mu_j) + |z_i|^2 / tau^2, one N x C
//!   matrix product on the features' device instead of an N x C x p tensor (1 GiB at N = 256,
//!   C = 1000, p = 1024); q goes to the host in f64, where F and the ratio are evaluated
//!   exactly; the logits are s0 + A (kt - kt.detach()) with s0 and A from the host, whose value
//!   is s0 and whose derivative is A dkt/dz, as ProCo requires.

use std::sync::{Mutex, MutexGuard, PoisonError};

use proco_vmf::contrast::{contrast_logits_from_q, contrast_loss, ContrastBatch, ContrastLoss, GradientMemory, GradientOut, InterpolantCache, PairEvaluation};
use proco_vmf::{bessel_order, compat, FixedOrderBessel};
use tch::{Device, Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::estimator::{OwnedClassTerms, VmfEstimator};
use crate::host_autograd::scalar_with_gradient;
use crate::host_tensor::cpu_slice_mut;
use crate::loss::logit_adjusted::{LogPrior, LogitAdjustedCe};
use crate::validate;
use crate::validate::FeatureRows;

/// Largest N x C x p for which [`ProCoLoss::loss`] runs entirely on the host by default
/// ([`ProCoLoss::host_loss`]); beyond it the device route. The bound applies on every device:
/// below it, one transfer of the features and one of the gradient cost less than the device
/// route's own transfers and small kernels.
pub use proco_vmf::contrast::HOST_PASS_MAX_WORK;

/// Smallest accepted temperature: |z|^2 / tau^2 must stay far from f32 overflow.
pub const MIN_TEMPERATURE: f64 = 1e-6;

/// Floor of kt^2 in the differentiable path (above f32's smallest normal number).
const KT_SQ_FLOOR: f64 = 1e-36;

/// Which Bessel numerics the loss uses (in recipes: `bessel = "exact"` or `"authors"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BesselRoute {
    /// Exact double-precision evaluation (the default).
    #[default]
    Exact,
    #[serde(rename = "authors")]
    /// The authors' Miller recurrence with integer order and a gradient clipped at 1, for
    /// comparing against their runs. Wrong for p < 4 and for kt large against nu^2.
    AuthorsCompat,
}

/// Contrast logits of one batch, with the host-side quantities they were built from.
#[derive(Debug)]
pub struct ContrastLogits {
    /// s (N x C), in the features' dtype and on their device, differentiable in the features.
    pub logits: Tensor,
    /// kt (N x C, row-major), f64.
    pub kt: Vec<f64>,
    /// d s / d kt = I_{nu+1}(kt)/I_nu(kt) (N x C, row-major), f64.
    pub ratio: Vec<f64>,
}

/// One batch for [`ProCoLoss::host_losses`]: N x p unit features on the host (checked, see
/// [`validate::unit_features_on_host`]), N class indices, and the estimator it is scored
/// against.
#[derive(Debug, Clone, Copy)]
pub struct HostBatch<'a> {
    /// N x p row-major unit features; f32 ones are widened a few rows at a time where the
    /// pass uses them.
    pub features: FeatureRows<'a>,
    /// N class indices.
    pub labels: &'a [usize],
    /// The estimator state the batch's logits use.
    pub estimator: &'a VmfEstimator,
}

/// The ProCo loss for features of dimension p at temperature tau.
#[derive(Debug, Clone)]
pub struct ProCoLoss {
    p: usize,
    nu: f64,
    bessel: FixedOrderBessel,
    tau: f64,
    route: BesselRoute,
    host_pass_max_work: usize,
    /// Cores available for the per-pair work (read once: on Linux it reads cgroup files).
    threads: usize,
    /// Certified interpolants of the pair function, kept between batches (never changes a
    /// result, only how often the exact function is evaluated).
    interpolants: SharedInterpolants,
}

/// [`InterpolantCache`]s behind locks, so that [`ProCoLoss::host_loss`] can take `&self`, one
/// per concurrent caller ([`ProCoLoss::host_losses`] runs two); a clone starts empty (a cache
/// holds no state a result depends on, so which one a call gets does not matter either).
#[derive(Debug, Default)]
struct SharedInterpolants([Mutex<InterpolantCache>; 2]);

impl SharedInterpolants {
    /// A free cache if there is one, else the first once it is free. A poisoned cache is still
    /// consistent: entries are inserted whole, after certification.
    fn lock(&self) -> MutexGuard<'_, InterpolantCache> {
        self.0.iter().find_map(|m| m.try_lock().ok()).unwrap_or_else(|| self.0[0].lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Clone for SharedInterpolants {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl ProCoLoss {
    /// A loss for p-dimensional features (p >= 2) at temperature tau (finite, >= [`MIN_TEMPERATURE`]).
    pub fn new(p: usize, tau: f64) -> Result<Self> {
        let nu = bessel_order(p)?;
        if !(tau.is_finite() && tau >= MIN_TEMPERATURE) {
            return Err(ProcoError::InvalidConfig {
                reason: format!("temperature tau = {tau} must be finite and >= {MIN_TEMPERATURE:e} (ProCo uses 0.1)"),
            });
        }
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        Ok(Self {
            p,
            nu,
            bessel: FixedOrderBessel::new(nu),
            tau,
            route: BesselRoute::Exact,
            host_pass_max_work: HOST_PASS_MAX_WORK,
            threads,
            interpolants: SharedInterpolants::default(),
        })
    }

    /// Selects the Bessel numerics (exact by default).
    pub fn with_route(mut self, route: BesselRoute) -> Self {
        self.route = route;
        self
    }

    /// Sets the largest N x C x p computed entirely on the host (default
    /// [`HOST_PASS_MAX_WORK`]); 0 always takes the device route. Both routes give the same
    /// loss and gradient to rounding.
    pub fn with_host_pass_max_work(mut self, work: usize) -> Self {
        self.host_pass_max_work = work;
        self
    }

    /// Whether a batch of `n` samples against `c` classes runs entirely on the host.
    pub fn uses_host_pass(&self, n: usize, c: usize) -> bool {
        n.saturating_mul(c).saturating_mul(self.p) <= self.host_pass_max_work
    }

    /// Feature dimension p.
    pub fn dim(&self) -> usize {
        self.p
    }

    /// Temperature tau.
    pub fn temperature(&self) -> f64 {
        self.tau
    }

    #[inline]
    fn f_and_ratio(&self, x: f64) -> (f64, f64) {
        match self.route {
            BesselRoute::Exact => self.bessel.log_i_minus_nu_log_x_and_ratio(x),
            BesselRoute::AuthorsCompat => {
                (compat::log_bessel_i_minus_nu_log_x(self.nu, x), compat::bessel_ratio_clipped(self.nu, x))
            }
        }
    }

    /// kappa_j mu_j, kappa_j and logc_j of every class of `estimator`, with logc from this
    /// loss's Bessel route.
    fn class_terms(&self, estimator: &VmfEstimator) -> OwnedClassTerms {
        let mut terms = estimator.class_terms();
        if self.route == BesselRoute::AuthorsCompat {
            terms.logc.iter_mut().zip(&terms.kappa).for_each(|(l, &k)| *l = compat::log_bessel_i_minus_nu_log_x(self.nu, k));
        }
        terms
    }

    /// The loss of a batch already on the host, with its gradient: `features` is N x p
    /// row-major f64 (unit rows, as [`validate::unit_features_to_host`] returns them),
    /// `labels` N class indices below the estimator's class count. One pass over the N x C
    /// pairs ([`proco_vmf::contrast::contrast_loss`]), split over LibTorch's OpenMP workers
    /// ([`crate::openmp::OpenMpWorkers`]).
    pub fn host_loss(&self, features: &[f64], labels: &[usize], estimator: &VmfEstimator, log_prior: &LogPrior) -> Result<ContrastLoss> {
        let batch = HostBatch { features: FeatureRows::F64(features), labels, estimator };
        self.host_loss_with(batch, log_prior, self.threads, GradientOut::Owned)
    }

    /// [`Self::host_loss`] of two batches (ProCo's two views, each with the estimator state it
    /// is scored against), side by side on LibTorch's OpenMP threads ([`crate::openmp::join`]),
    /// each single-threaded (without an OpenMP pool, one after the other). Their gradients,
    /// times `scale`, go straight into the next elements of `grad` (first batch, then
    /// second), so the returned losses have an empty `grad`; otherwise the results are those
    /// of two [`Self::host_loss`] calls. On error those elements stay unwritten, and
    /// [`HostGradient::attach`] refuses `grad`.
    pub fn host_losses(&self, first: HostBatch<'_>, second: HostBatch<'_>, log_prior: &LogPrior, grad: &mut HostGradient, scale: f64) -> Result<[ContrastLoss; 2]> {
        let counts = [first.features.len(), second.features.len()];
        let [mem_a, mem_b] = grad.next_two(counts)?;
        let (a, b) = if crate::openmp::available() {
            let run = |b: HostBatch<'_>, memory| self.host_loss_with(b, log_prior, 1, GradientOut::Into { memory, scale });
            crate::openmp::join(|| run(first, mem_a), || run(second, mem_b))
        } else {
            // No OpenMP pool to borrow (or a single thread): one view after the other, each
            // split as `host_loss` splits it.
            let run = |b: HostBatch<'_>, memory| self.host_loss_with(b, log_prior, self.threads, GradientOut::Into { memory, scale });
            (run(first, mem_a), run(second, mem_b))
        };
        let (a, b) = (a?, b?);
        // Both passes succeeded, so every element of both parts has been written.
        grad.mark_written(counts[0] + counts[1])?;
        Ok([a, b])
    }

    fn host_loss_with(&self, batch: HostBatch<'_>, log_prior: &LogPrior, max_threads: usize, gradient: GradientOut<'_>) -> Result<ContrastLoss> {
        let HostBatch { features, labels, estimator } = batch;
        self.check_estimator(estimator, log_prior)?;
        let terms = self.class_terms(estimator);
        let classes = terms.with_prior(log_prior.values());
        let exact = |x: f64| self.f_and_ratio(x);
        let evaluation = PairEvaluation { exact: &exact, nu: self.nu, max_threads, parallel: &crate::openmp::OpenMpWorkers };
        // The authors' numerics are reproduced pair by pair, not smoothed.
        let mut cache = self.interpolants.lock();
        let interpolants = (self.route == BesselRoute::Exact).then_some(&mut *cache);
        let input = ContrastBatch { features, labels, p: self.p };
        let out = contrast_loss(input, classes, self.tau, &evaluation, interpolants, gradient)?;
        if !out.loss.is_finite() {
            return Err(ProcoError::NonFiniteLoss { value: out.loss });
        }
        Ok(out)
    }

    fn check_estimator(&self, estimator: &VmfEstimator, log_prior: &LogPrior) -> Result<()> {
        if estimator.dim() != self.p {
            return Err(ProcoError::InvalidConfig {
                reason: format!("the estimator holds {}-dimensional means but the loss expects p = {}", estimator.dim(), self.p),
            });
        }
        if log_prior.num_classes() != estimator.num_classes() {
            return Err(ProcoError::InvalidConfig {
                reason: format!("the prior has {} classes but the estimator {}", log_prior.num_classes(), estimator.num_classes()),
            });
        }
        Ok(())
    }

    /// The contrast logits s (N x C) of unit features against the estimator's classes.
    pub fn contrast_logits(&self, features: &Tensor, estimator: &VmfEstimator) -> Result<ContrastLogits> {
        if estimator.dim() != self.p {
            return Err(ProcoError::InvalidConfig {
                reason: format!("the estimator holds {}-dimensional means but the loss expects p = {}", estimator.dim(), self.p),
            });
        }
        let n = validate::unit_features(features, self.p)? as usize;
        let c = estimator.num_classes();
        // kappa^2 reaches 1e10: half-precision features are computed in f32 (a differentiable
        // cast) and the logits are cast back, so f16's 65504 ceiling never turns kt into inf.
        let out_kind = features.kind();
        let (kind, device) = match out_kind {
            Kind::Half | Kind::BFloat16 => (Kind::Float, features.device()),
            k => (k, features.device()),
        };
        let features = &features.f_to_kind(kind)?;

        let terms = self.class_terms(estimator);
        let (km, logc) = (&terms.kappa_mu, &terms.logc);
        let kappa_sq: Vec<f64> = terms.kappa.iter().map(|k| k * k).collect();

        let km_t = Tensor::f_from_slice(km)?.f_view([c as i64, self.p as i64])?.f_to_kind(kind)?.f_to_device(device)?;
        let z_sq = features.f_square()?.f_sum_dim_intlist(1, true, None::<Kind>)?;
        let q = features
            .f_matmul(&km_t.f_tr()?)?
            .f_mul_scalar(2.0 / self.tau)?
            .f_add(&z_sq.f_mul_scalar(1.0 / (self.tau * self.tau))?)?;
        let kappa_sq_t = Tensor::f_from_slice(&kappa_sq)?.f_to_kind(kind)?.f_to_device(device)?.f_unsqueeze(0)?;
        // kt = 0 needs kappa = 1/tau and z = -mu exactly; the floor keeps sqrt's derivative
        // finite there (A(0) = 0, so the pair then contributes no gradient, as it should).
        let kt_t = q.f_add(&kappa_sq_t)?.f_clamp_min(KT_SQ_FLOOR)?.f_sqrt()?;

        let q_host = Vec::<f64>::try_from(&q.detach().f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
        // The per-pair scalar work, on LibTorch's OpenMP workers.
        let exact = |x: f64| self.f_and_ratio(x);
        let evaluation = PairEvaluation { exact: &exact, nu: self.nu, max_threads: self.threads, parallel: &crate::openmp::OpenMpWorkers };
        let proco_vmf::contrast::ContrastLogits { logits: s0, kt, ratio } = contrast_logits_from_q(&q_host, &terms.kappa, &logc, &evaluation)?;
        let to_dev = |v: &[f64]| -> Result<Tensor> {
            Ok(Tensor::f_from_slice(v)?.f_view([n as i64, c as i64])?.f_to_kind(kind)?.f_to_device(device)?)
        };
        let s0_t = to_dev(&s0)?;
        let a_t = to_dev(&ratio)?;
        let logits = s0_t.f_add(&a_t.f_mul(&kt_t.f_sub(&kt_t.detach())?)?)?.f_to_kind(out_kind)?;
        Ok(ContrastLogits { logits, kt, ratio })
    }

    /// Mean ProCo loss: logit-adjusted cross entropy over the contrast logits, with the
    /// training prior `log_prior`, differentiable in `features` (N x p unit rows; `labels`
    /// int64 of length N). Up to [`Self::uses_host_pass`] it is computed on the host in f64 in
    /// one pass ([`Self::host_loss`]) and handed back with its exact gradient attached
    /// ([`attach_gradient`]); larger batches go through [`Self::contrast_logits`]. Fails with
    /// [`ProcoError::NonFiniteLoss`] rather than returning NaN.
    pub fn loss(&self, features: &Tensor, labels: &Tensor, estimator: &VmfEstimator, log_prior: &LogPrior) -> Result<Tensor> {
        self.check_estimator(estimator, log_prior)?;
        let n = features.size().first().copied().unwrap_or(0).max(0) as usize;
        if !self.uses_host_pass(n, estimator.num_classes()) {
            let s = self.contrast_logits(features, estimator)?;
            let loss = LogitAdjustedCe::new(log_prior.clone()).loss(&s.logits, labels)?;
            let value = loss.f_double_value(&[])?;
            if !value.is_finite() {
                return Err(ProcoError::NonFiniteLoss { value });
            }
            return Ok(loss);
        }
        let host = validate::unit_features_to_host(features, self.p)?;
        let labels = validate::labels(labels, n as i64, estimator.num_classes())?;
        let out = self.host_loss(&host, &labels, estimator, log_prior)?;
        attach_gradient(features, &out.grad, out.loss)
    }
}

/// A scalar tensor whose value is `value` and whose gradient in `features` is `grad` (same
/// number of elements, row-major f64); see [`HostGradient`], which this wraps for a gradient
/// that is already one slice.
pub fn attach_gradient(features: &Tensor, grad: &[f64], value: f64) -> Result<Tensor> {
    let mut g = HostGradient::for_features(features)?;
    g.push(grad, 1.0)?;
    g.attach(features, value)
}

/// The gradient of a loss computed on the host, written piece by piece straight into the
/// tensor that carries it back into autograd.
///
/// [`Self::attach`] returns a scalar whose backward hands G itself to autograd (see
/// [`crate::host_autograd`]): on the CPU, G becomes the gradient of contiguous f32 / f64 leaf
/// features without a copy. G is f64 for f64 features and f32 otherwise (f16's range is too
/// small for it); it is built on the host and moved to the features' device in one transfer.
#[derive(Debug)]
pub struct HostGradient {
    values: Tensor,
    filled: usize,
}

impl HostGradient {
    /// An empty gradient for `features` (as many elements, filled by [`Self::push`] and
    /// [`Self::push_zeros`] in row-major order).
    pub fn for_features(features: &Tensor) -> Result<Self> {
        let kind = if features.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let values = Tensor::f_empty(features.size(), (kind, Device::Cpu))?;
        Ok(Self { values, filled: 0 })
    }

    fn numel(&self) -> usize {
        self.values.numel()
    }

    /// The memory of the elements in `range`.
    fn memory(&mut self, range: std::ops::Range<usize>) -> Result<GradientMemory<'_>> {
        let kind = self.values.kind();
        // SAFETY: `values` was created by `for_features` as a fresh contiguous CPU tensor,
        // is private to this struct and never shared (no view or shallow clone of it exists
        // before `attach` consumes it), so the `&mut self` borrow is the only access.
        let memory = unsafe {
            if kind == Kind::Double {
                cpu_slice_mut::<f64>(&mut self.values, kind).map(|m| GradientMemory::F64(&mut m[range]))
            } else {
                cpu_slice_mut::<f32>(&mut self.values, kind).map(|m| GradientMemory::F32(&mut m[range]))
            }
        };
        memory.ok_or_else(not_in_place)
    }

    fn reserve(&self, count: usize) -> Result<std::ops::Range<usize>> {
        let end = self.filled.checked_add(count).filter(|&e| e <= self.numel());
        end.map(|end| self.filled..end).ok_or_else(|| ProcoError::InvalidFeatures {
            reason: format!("{} gradient values after {} of {} already written overflow the features", count, self.filled, self.numel()),
        })
    }

    /// Appends `scale * grad`.
    pub fn push(&mut self, grad: &[f64], scale: f64) -> Result<()> {
        let range = self.reserve(grad.len())?;
        if grad.is_empty() {
            return Ok(());
        }
        self.memory(range)?.write_scaled(0, grad, scale);
        self.filled += grad.len();
        Ok(())
    }

    /// The memory of the next `counts[0]` and then `counts[1]` elements, for two jobs to fill
    /// side by side. They do not count as written until [`Self::mark_written`].
    fn next_two(&mut self, counts: [usize; 2]) -> Result<[GradientMemory<'_>; 2]> {
        let range = self.reserve(counts[0].saturating_add(counts[1]))?;
        let (a, b) = self.memory(range)?.split_at(counts[0]);
        Ok([a, b])
    }

    /// Counts the next `count` elements as written (after jobs handed them by
    /// [`Self::next_two`] have all succeeded).
    fn mark_written(&mut self, count: usize) -> Result<()> {
        self.filled = self.reserve(count)?.end;
        Ok(())
    }

    /// Appends `count` zeros (rows the loss does not depend on).
    pub fn push_zeros(&mut self, count: usize) -> Result<()> {
        let range = self.reserve(count)?;
        if count == 0 {
            return Ok(());
        }
        self.memory(range)?.write_zeros();
        self.filled += count;
        Ok(())
    }

    /// The scalar loss `value` with this gradient in `features` (the tensor it was made for);
    /// fails unless every element has been written. The result's backward may run once
    /// (more often only with `retain_graph`).
    pub fn attach(self, features: &Tensor, value: f64) -> Result<Tensor> {
        if self.filled != self.numel() || features.size() != self.values.size() {
            return Err(ProcoError::InvalidFeatures {
                reason: format!("{} of {} gradient values written for features of shape {:?}", self.filled, self.numel(), features.size()),
            });
        }
        let values = if features.device() == Device::Cpu { self.values } else { self.values.f_to_device(features.device())? };
        scalar_with_gradient(features, values, value)
    }
}

fn not_in_place() -> ProcoError {
    ProcoError::InvalidFeatures { reason: "the gradient buffer is not a contiguous CPU tensor (an internal error; please report it)".into() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn host_gradient_carries_exactly_what_was_written() {
        let z = Tensor::from_slice(&[0.6f32, 0.8, 1.0, 0.0, 0.0, 1.0]).view([3, 2]).set_requires_grad(true);
        let mut g = HostGradient::for_features(&z).unwrap();
        g.push_zeros(2).unwrap();
        g.push(&[1.0, -2.0, 0.25, 3.0], 0.5).unwrap();
        assert!(g.push(&[1.0], 1.0).is_err(), "more values than the features hold");
        let loss = g.attach(&z, 1.25).unwrap();
        assert_eq!(loss.double_value(&[]), 1.25);
        loss.backward();
        assert_eq!(Vec::<f32>::try_from(&z.grad().flatten(0, -1)).unwrap(), vec![0.0, 0.0, 0.5, -1.0, 0.125, 1.5]);

        // Backward hands the written memory itself to z.grad (no copy), once.
        let z = z.detach().set_requires_grad(true);
        let mut g = HostGradient::for_features(&z).unwrap();
        g.push(&[1.0; 6], 2.0).unwrap();
        let memory = g.values.data_ptr();
        let loss = g.attach(&z, 0.0).unwrap();
        loss.f_backward().unwrap();
        assert_eq!(z.grad().data_ptr(), memory);
        assert_eq!(Vec::<f32>::try_from(&z.grad().flatten(0, -1)).unwrap(), vec![2.0; 6]);
        let again = loss.f_backward().unwrap_err().to_string();
        assert!(again.contains("retain_graph"), "{again}");

        // An upstream factor scales it; a kept graph can be differentiated again.
        let z = z.detach().set_requires_grad(true);
        let mut g = HostGradient::for_features(&z).unwrap();
        g.push(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1.0).unwrap();
        let loss = g.attach(&z, 0.0).unwrap().f_mul_scalar(3.0).unwrap();
        // A kept graph hands out copies: changing what one pass returned never alters what the
        // next pass gets (here with an upstream factor of 1 and features that view a leaf).
        let leaf = Tensor::from_slice(&[0.6f32, 0.8, 1.0, 0.0, 0.0, 1.0]).set_requires_grad(true);
        let view = leaf.view([3, 2]);
        let mut g = HostGradient::for_features(&view).unwrap();
        g.push(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1.0).unwrap();
        let kept = g.attach(&view, 0.0).unwrap();
        for _ in 0..2 {
            let mut grads = Tensor::f_run_backward(&[&kept], &[&view], true, false).unwrap();
            assert_eq!(Vec::<f32>::try_from(&grads[0].flatten(0, -1)).unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
            let _ = grads[0].f_mul_scalar_(10.0).unwrap();
        }
        // create_graph: the gradient stays differentiable in the upstream factor.
        let weight = Tensor::from_slice(&[2.0f32]).set_requires_grad(true);
        let z2 = z.detach().set_requires_grad(true);
        let mut g = HostGradient::for_features(&z2).unwrap();
        g.push(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 1.0).unwrap();
        let weighted = g.attach(&z2, 0.0).unwrap().f_mul(&weight.f_squeeze().unwrap()).unwrap();
        let dz = Tensor::f_run_backward(&[&weighted], &[&z2], true, true).unwrap().remove(0);
        assert_eq!(Vec::<f32>::try_from(&dz.flatten(0, -1)).unwrap(), vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        dz.sum(Kind::Float).backward();
        assert_eq!(Vec::<f32>::try_from(&weight.grad()).unwrap(), vec![21.0]);

        for keep_graph in [true, true, false] {
            let grads = Tensor::f_run_backward(&[&loss], &[&z], keep_graph, false).unwrap();
            assert_eq!(Vec::<f32>::try_from(&grads[0].flatten(0, -1)).unwrap(), vec![3.0, 6.0, 9.0, 12.0, 15.0, 18.0]);
        }
        assert!(Tensor::f_run_backward(&[&loss], &[&z], false, false).is_err());
        // Features that do not require grad, or no grad mode: a plain constant.
        let constant = z.detach();
        let mut g = HostGradient::for_features(&constant).unwrap();
        g.push(&[1.0; 6], 1.0).unwrap();
        let loss = g.attach(&constant, 0.5).unwrap();
        assert!(!loss.requires_grad());
        assert_eq!(loss.double_value(&[]), 0.5);
        let mut g = HostGradient::for_features(&z).unwrap();
        g.push(&[1.0; 6], 1.0).unwrap();
        let loss = tch::no_grad(|| g.attach(&z, 0.5)).unwrap();
        assert!(!loss.requires_grad());

        let mut partial = HostGradient::for_features(&z).unwrap();
        partial.push(&[1.0; 4], 1.0).unwrap();
        assert!(partial.attach(&z, 0.0).is_err(), "an unwritten gradient is refused");
    }

    #[test]
    fn two_views_side_by_side_equal_two_single_calls() {
        let (n, c, p) = (40, 5, 16);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let estimator = VmfEstimator::new(c, p, &mut rng).unwrap();
        let features: Vec<f64> = (0..2 * n).flat_map(|_| proco_vmf::random_unit_vector(p, &mut rng)).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % c).collect();
        let prior = LogPrior::from_counts(&[50.0, 20.0, 10.0, 5.0, 2.0]).unwrap();
        let loss = ProCoLoss::new(p, 0.1).unwrap();
        let (first, second) = features.split_at(n * p);
        let singles = [first, second].map(|v| loss.host_loss(v, &labels, &estimator, &prior).unwrap());

        let z = Tensor::from_slice(&features).view([2 * n as i64, p as i64]).to_kind(Kind::Float).set_requires_grad(true);
        let mut grad = HostGradient::for_features(&z).unwrap();
        let pair = loss
            .host_losses(
                HostBatch { features: FeatureRows::F64(first), labels: &labels, estimator: &estimator },
                HostBatch { features: FeatureRows::F64(second), labels: &labels, estimator: &estimator },
                &prior,
                &mut grad,
                0.5,
            )
            .unwrap();
        for (one, single) in pair.iter().zip(&singles) {
            assert_eq!((one.loss, &one.logits, &one.per_sample), (single.loss, &single.logits, &single.per_sample));
            assert!(one.grad.is_empty());
        }
        grad.attach(&z, 0.0).unwrap().backward();
        let got = Vec::<f32>::try_from(&z.grad().flatten(0, -1)).unwrap();
        let want: Vec<f32> = singles.iter().flat_map(|s| s.grad.iter().map(|g| (0.5 * g) as f32)).collect();
        assert_eq!(got, want);

        // A failing view leaves the gradient unwritten, and attaching it is refused.
        let bad_labels: Vec<usize> = (0..n).map(|i| if i == 3 { c } else { i % c }).collect();
        let mut grad = HostGradient::for_features(&z).unwrap();
        let failed = loss.host_losses(
            HostBatch { features: FeatureRows::F64(first), labels: &labels, estimator: &estimator },
            HostBatch { features: FeatureRows::F64(second), labels: &bad_labels, estimator: &estimator },
            &prior,
            &mut grad,
            0.5,
        );
        assert!(failed.is_err());
        assert!(grad.attach(&z, 0.0).is_err());
    }
}
