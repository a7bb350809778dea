//! The ProCo loss of one batch in a single host pass: contrast logits, logit-adjusted cross
//! entropy and its exact gradient in the features.
//!
//! For unit features z_i (N x p), class terms kappa_j mu_j (C x p) and logc_j, temperature tau:
//!
//! - w_ij = kappa_j mu_j + z_i / tau, kt_ij = |w_ij|, s_ij = F(kt_ij) - logc_j with
//!   F(x) = log I_nu(x) - nu log x and F'(x) = A(x) = I_{nu+1}(x)/I_nu(x);
//! - loss = mean_i [logsumexp_j (s_ij + log_prior_j) - s_{i,y_i} - log_prior_{y_i}];
//! - d loss / d z_i = sum_j c_ij w_ij with c_ij = (softmax_ij - [j = y_i]) A(kt_ij) / (N tau kt_ij).
//!
//! Why one host pass: ProCo's logits need f64 Bessel functions per (sample, class) pair, which
//! no tensor library has; the rest (a dot product per pair, a softmax per row, the gradient's
//! weighted sum of class vectors) is a handful of flops per pair. Doing all of it where the
//! Bessel values are computed costs one transfer of the features in and one of the gradient
//! out, instead of a dozen tensor operations, their temporaries and their synchronisations.
//! kt^2 is formed as |kappa mu|^2 + 2 kappa mu.z/tau + |z/tau|^2 (one fused multiply-add per
//! coordinate, [`crate::kernels`]) except where that form cancels (z pointing away from mu
//! with kappa near |z|/tau, see [`CANCELLATION_GUARD`]): those pairs take the norm of w_ij
//! itself, so the form never magnifies kt's rounding by more than that guard (kt's error is
//! then that of a p-term dot product: a few ulps typically, at worst growing like p/8 ulps,
//! as for the norm of the sum). The gradient can be written
//! straight into caller memory, scaled and in f32 ([`GradientOut`]).
//!
//! The pair function (F, A) is evaluated exactly or, per class, through a Chebyshev
//! interpolant of A certified against the exact values ([`crate::chebyshev`]): the class's N
//! pairs then cost a few fused multiply-adds each. Interpolants live in an
//! [`InterpolantCache`] on a fixed lattice of intervals, so they are built once for many
//! batches and the result never depends on what the cache held before.
//!
//! Work is split by rows over up to `max_threads` jobs, run by the caller's choice of threads
//! ([`crate::parallel`]); the interpolants are built once for the whole batch, each row's
//! results depend on that row alone and the mean is summed in row order, so the output is
//! bit-identical for any thread count.

use std::collections::HashMap;
use std::mem::MaybeUninit;

use crate::chebyshev::{pair_error_scale, PairInterpolant};
use crate::error::VmfError;
use crate::parallel::{run_parts, Parallel};
use crate::rows::FeatureRows;
use crate::kernels::{dot, dots4x2, dots4x4, exp_nonpositive_in_place, norm_of_sum, squared_norms4, weighted_sum, weighted_sums2};

/// Largest N x C x p for which the whole loss is best computed in one host pass
/// ([`contrast_loss`]) rather than by the matrix-product route ([`contrast_logits_from_q`]):
/// CIFAR-100 at batch 256 and p = 128 is 3.3 M. Beyond it (ImageNet-LT: C = 1000, p = 1024)
/// the per-pair norms and the gradient's class sums are matrix products that a BLAS or a GPU
/// does faster, and only the N x C scalars need the host (measured on CPU; on GPUs not yet).
pub const HOST_PASS_MAX_WORK: usize = 1 << 24;

/// Rows processed together, so each class vector is read once per block from cache rather than
/// once per row from memory (C x p reaches 8 MiB at C = 1000, p = 1024).
const ROW_BLOCK: usize = 16;

/// Below this many (sample, class) pairs per thread, another thread costs more than it saves:
/// a pair costs ~0.1 us at p = 128 and starting a thread ~10-20 us, but inside a LibTorch
/// program the other core is often still held by an OpenMP worker spinning after the last
/// tensor operation (~0.1-0.3 ms), so a second thread only pays off for about a millisecond
/// of work.
pub const MIN_PAIRS_PER_THREAD: usize = 8192;

/// The per-class terms of the contrast logits, derived from a vMF estimator.
#[derive(Debug, Clone, Copy)]
pub struct ClassTerms<'a> {
    /// kappa_j mu_j, C x p row-major.
    pub kappa_mu: &'a [f64],
    /// kappa_j, C entries (the anchor of the interpolated logits).
    pub kappa: &'a [f64],
    /// logc_j = F(kappa_j), C entries: subtracted from F(kt) for classes evaluated exactly;
    /// interpolated classes integrate A from kappa_j instead, which gives the same logit to
    /// rounding (both are the same F, see [`crate::FixedOrderBessel`]).
    pub logc: &'a [f64],
    /// log prior_j of the logit adjustment, C entries (zeros for plain cross entropy).
    pub log_prior: &'a [f64],
}

/// Everything the loss of one batch produces.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastLoss {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Loss of each sample (N).
    pub per_sample: Vec<f64>,
    /// Contrast logits s (N x C row-major), without the prior.
    pub logits: Vec<f64>,
    /// kt (N x C row-major).
    pub kt: Vec<f64>,
    /// A(kt) = d s / d kt (N x C row-major).
    pub ratio: Vec<f64>,
    /// d loss / d features (N x p row-major), for the mean loss; empty when the gradient went
    /// to caller memory ([`GradientOut::Into`]).
    pub grad: Vec<f64>,
}

/// A batch for [`contrast_loss`].
#[derive(Debug, Clone, Copy)]
pub struct ContrastBatch<'a> {
    /// N x p row-major unit features (not re-checked here), f32 or f64; f32 rows are
    /// widened a few at a time where they are used.
    pub features: FeatureRows<'a>,
    /// N class indices.
    pub labels: &'a [usize],
    /// Feature dimension p.
    pub p: usize,
}

/// Caller memory for the gradient, N x p row-major, possibly uninitialised.
#[derive(Debug)]
pub enum GradientMemory<'a> {
    /// f32 elements (the gradient rounded once, after scaling).
    F32(&'a mut [MaybeUninit<f32>]),
    /// f64 elements.
    F64(&'a mut [MaybeUninit<f64>]),
}

impl<'a> GradientMemory<'a> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::F32(m) => m.len(),
            Self::F64(m) => m.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `mid` elements and the rest. Panics if `mid` exceeds the length, as slices
    /// do.
    pub fn split_at(self, mid: usize) -> (Self, Self) {
        match self {
            Self::F32(m) => {
                let (a, b) = m.split_at_mut(mid);
                (Self::F32(a), Self::F32(b))
            }
            Self::F64(m) => {
                let (a, b) = m.split_at_mut(mid);
                (Self::F64(a), Self::F64(b))
            }
        }
    }

    /// Writes `scale * v` for each v of `values` from element `at` on, rounded once to the
    /// element type. Panics if that runs past the end, as slice indexing does.
    pub fn write_scaled(&mut self, at: usize, values: &[f64], scale: f64) {
        match self {
            Self::F32(m) => m[at..at + values.len()].iter_mut().zip(values).for_each(|(d, v)| {
                d.write((scale * v) as f32);
            }),
            Self::F64(m) => m[at..at + values.len()].iter_mut().zip(values).for_each(|(d, v)| {
                d.write(scale * v);
            }),
        }
    }

    /// Writes zeros over every element.
    pub fn write_zeros(&mut self) {
        match self {
            Self::F32(m) => m.iter_mut().for_each(|d| {
                d.write(0.0);
            }),
            Self::F64(m) => m.iter_mut().for_each(|d| {
                d.write(0.0);
            }),
        }
    }
}

/// Where [`contrast_loss`] writes d loss / d features.
#[derive(Debug)]
pub enum GradientOut<'a> {
    /// Into [`ContrastLoss::grad`].
    Owned,
    /// Every value times `scale` into `memory` (N x p elements, all written on success), for
    /// example straight into the tensor that carries it back to autograd: no f64 copy is
    /// kept, which spares the pass a buffer as large as the features.
    Into {
        /// N x p elements.
        memory: GradientMemory<'a>,
        /// Factor applied before rounding to the memory's type.
        scale: f64,
    },
}

/// How the pair function x -> (F(x), A(x)) is evaluated.
#[derive(Debug, Clone, Copy)]
pub struct PairEvaluation<'a, B> {
    /// The exact pair function, for example
    /// [`crate::FixedOrderBessel::log_i_minus_nu_log_x_and_ratio`] at nu = p/2 - 1.
    pub exact: &'a B,
    /// The order nu of F (sets the interpolants' error scale, [`pair_error_scale`]).
    pub nu: f64,
    /// Most threads to use (see [`MIN_PAIRS_PER_THREAD`]).
    pub max_threads: usize,
    /// Who runs the jobs when there are several ([`crate::parallel::ScopedThreads`], or the
    /// caller's own pool).
    pub parallel: &'a dyn Parallel,
}

/// Below this batch size building an interpolant (29 exact evaluations) costs more than
/// evaluating the class's pairs exactly, even when it serves a few later batches.
pub const MIN_ROWS_TO_INTERPOLATE: usize = 32;

/// Lattice step of [`InterpolantCache`] in units of 1 / tau: a class's arguments span at most
/// 2 |z| / tau, so columns of features with |z| <= 1.0625 always fit one lattice interval.
pub const LATTICE_STEP_TAU: f64 = 2.125;

/// Entries an [`InterpolantCache`] holds before it starts afresh (about 0.5 KiB each).
const CACHE_CAPACITY: usize = 4096;

/// Certified interpolants of A kept between batches, one per interval of a fixed lattice.
///
/// Why: A depends on kt alone, and a class's arguments move little from one batch to the next
/// (kappa_j follows a running mean), so the 29 exact evaluations behind an interpolant serve
/// many batches instead of one. Interval k is [k h, k h + 2 h] with h = [`LATTICE_STEP_TAU`] /
/// tau; it holds every column whose arguments span at most h and start in [k h, (k + 1) h).
/// The intervals depend on (nu, tau) alone and an interpolant on its interval alone, so the
/// loss of a batch is the same to the last bit whatever the cache held before (a resumed run
/// matches an uninterrupted one). One cache serves one exact pair function: do not share it
/// between functions of different orders or numerics.
#[derive(Debug, Clone, Default)]
pub struct InterpolantCache {
    /// (nu, tau) the entries were built for.
    key: Option<(f64, f64)>,
    /// Lattice index -> the certified interpolant, or `None` where certification failed.
    entries: HashMap<u64, Option<PairInterpolant>>,
}

impl InterpolantCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of lattice intervals tried so far (certified or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing has been built yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts afresh when (nu, tau) changed or the cache is full.
    fn prepare(&mut self, nu: f64, tau: f64) {
        if self.key != Some((nu, tau)) || self.entries.len() >= CACHE_CAPACITY {
            self.entries.clear();
            self.key = Some((nu, tau));
        }
    }

    /// Index of the lattice interval that holds [lo, hi], if the span fits the lattice.
    fn index(tau: f64, lo: f64, hi: f64) -> Option<u64> {
        let step = LATTICE_STEP_TAU / tau;
        let k = (lo / step).floor();
        (hi - lo <= step && (0.0..1e15).contains(&k)).then_some(k as u64)
    }

    /// Builds and certifies the lattice interpolant for [lo, hi] on first use; returns whether
    /// a certified one covers [lo, hi].
    fn ensure<B: Fn(f64) -> (f64, f64)>(&mut self, exact: &B, nu: f64, tau: f64, lo: f64, hi: f64) -> bool {
        let Some(k) = Self::index(tau, lo, hi) else { return false };
        let step = LATTICE_STEP_TAU / tau;
        self.entries
            .entry(k)
            .or_insert_with(|| {
                let (a, b) = (k as f64 * step, (k as f64 + 2.0) * step);
                PairInterpolant::build(exact, a, b, pair_error_scale(nu, b))
            })
            .as_ref()
            .is_some_and(|ip| ip.covers(lo, hi))
    }

    /// The certified lattice interpolant covering [lo, hi], if it has been built.
    fn covering(&self, tau: f64, lo: f64, hi: f64) -> Option<&PairInterpolant> {
        let k = Self::index(tau, lo, hi)?;
        self.entries.get(&k)?.as_ref().filter(|ip| ip.covers(lo, hi))
    }
}

/// One batch's inputs, shared by every worker.
struct Batch<'a, B> {
    features: FeatureRows<'a>,
    labels: &'a [usize],
    p: usize,
    classes: ClassTerms<'a>,
    /// 1 / tau: z / tau is formed as a product (an ulp from the quotient, at a fraction of
    /// the cost).
    inv_tau: f64,
    /// 1 / (N tau): the gradient's common factor.
    grad_scale: f64,
    exact: &'a B,
    /// Only kt, the logits and A ([`contrast_logits`]): no loss, no gradient.
    logits_only: bool,
}

/// Output slices of a run of rows (row-major).
struct RowsOut<'a> {
    per_sample: &'a mut [f64],
    logits: &'a mut [f64],
    kt: &'a mut [f64],
    ratio: &'a mut [f64],
    /// These rows' share of the gradient memory.
    grad: GradientMemory<'a>,
    /// Factor applied to the gradient as it is written.
    grad_out_scale: f64,
}

fn invalid(reason: String) -> VmfError {
    VmfError::InvalidBatch { reason }
}

/// The ProCo loss of a batch and its gradient; see the module notes for the formulas.
///
/// `features` is N x p row-major (unit rows; not re-checked here), `labels` has N entries in
/// 0..C, every per-class slice of `classes` has C entries and `tau` > 0. With
/// `interpolants`, classes are interpolated where a certified interpolant covers their
/// arguments (for N >= [`MIN_ROWS_TO_INTERPOLATE`]): the cache's lattice interpolant, else one
/// built for the batch's range; without, every pair is evaluated exactly. Fails with
/// [`VmfError::InvalidBatch`] on inconsistent lengths, an empty batch, a label out of range
/// or a non-positive temperature.
pub fn contrast_loss<B>(
    input: ContrastBatch<'_>,
    classes: ClassTerms<'_>,
    tau: f64,
    evaluation: &PairEvaluation<'_, B>,
    interpolants: Option<&mut InterpolantCache>,
    gradient: GradientOut<'_>,
) -> Result<ContrastLoss, VmfError>
where
    B: Fn(f64) -> (f64, f64) + Sync,
{
    contrast_pass(input, classes, tau, evaluation, interpolants, Some(gradient))
}

/// The contrast logits of a batch alone: s_ij = F(kt_ij) - logc_j (without the prior), kt_ij
/// and A(kt_ij), N x C row-major each, by the same pass as [`contrast_loss`] (the same values
/// to the last bit) without the loss and its gradient. `features` is N x p row-major (unit
/// rows; not re-checked here); `classes.log_prior` only gives C (its values are not used).
/// Their gradient for any upstream gradient is [`contrast_logits_backward`]. Fails with
/// [`VmfError::InvalidBatch`] on inconsistent lengths, an empty batch or a non-positive
/// temperature.
pub fn contrast_logits<B>(
    features: FeatureRows<'_>,
    p: usize,
    classes: ClassTerms<'_>,
    tau: f64,
    evaluation: &PairEvaluation<'_, B>,
    interpolants: Option<&mut InterpolantCache>,
) -> Result<ContrastLogits, VmfError>
where
    B: Fn(f64) -> (f64, f64) + Sync,
{
    let n = features.len().checked_div(p).unwrap_or(0);
    let labels = vec![0; n];
    let out = contrast_pass(ContrastBatch { features, labels: &labels, p }, classes, tau, evaluation, interpolants, None)?;
    Ok(ContrastLogits { logits: out.logits, kt: out.kt, ratio: out.ratio })
}

/// What [`contrast_logits`] produces, N x C row-major each.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastLogits {
    /// s = F(kt) - logc, without the prior.
    pub logits: Vec<f64>,
    /// kt = |kappa_j mu_j + z_i / tau|.
    pub kt: Vec<f64>,
    /// A(kt) = d s / d kt.
    pub ratio: Vec<f64>,
}

/// d L / d z_i = sum_j g_ij A_ij / (tau kt_ij) (kappa_j mu_j + z_i / tau) for the upstream
/// gradient g = d L / d s (N x C row-major) of the logits [`contrast_logits`] returned with
/// `kt` and `ratio` for these `features` (N x p) and class vectors `kappa_mu` (C x p); the
/// class terms are constants (the estimator is not differentiated, as in ProCo). A pair with
/// kt = 0 contributes nothing (A(0) = 0). Rows are split over up to `max_threads` jobs run by
/// `parallel`; each row's result depends on that row alone. Fails with
/// [`VmfError::InvalidBatch`] on inconsistent lengths or a non-positive temperature.
#[allow(clippy::too_many_arguments)]
pub fn contrast_logits_backward(
    features: FeatureRows<'_>,
    p: usize,
    kappa_mu: &[f64],
    tau: f64,
    kt: &[f64],
    ratio: &[f64],
    grad_logits: &[f64],
    max_threads: usize,
    parallel: &dyn Parallel,
) -> Result<Vec<f64>, VmfError> {
    if p == 0 || !features.len().is_multiple_of(p) || !kappa_mu.len().is_multiple_of(p) {
        return Err(invalid(format!("{} feature values and {} class values are not whole rows of p = {p}", features.len(), kappa_mu.len())));
    }
    let (n, c) = (features.len() / p, kappa_mu.len() / p);
    if n == 0 || c == 0 {
        return Err(invalid(format!("the batch needs at least one sample and class (N = {n}, C = {c})")));
    }
    if kt.len() != n * c || ratio.len() != n * c || grad_logits.len() != n * c {
        return Err(invalid(format!("kt, A and the upstream gradient hold {}, {} and {} values for N x C = {n} x {c}", kt.len(), ratio.len(), grad_logits.len())));
    }
    if !(tau.is_finite() && tau > 0.0) {
        return Err(invalid(format!("temperature tau = {tau} must be finite and > 0")));
    }
    let inv_tau = 1.0 / tau;
    let mut grad = vec![0.0; n * p];
    let threads = max_threads.min(n * c / MIN_PAIRS_PER_THREAD).clamp(1, n);
    let rows = n.div_ceil(threads);
    let parts: Vec<_> = grad.chunks_mut(rows * p).enumerate().map(|(k, g)| (k * rows, g)).collect();
    // c_ij = g_ij A_ij / (tau kt_ij) of row i into `coef`; returns sum_j c_ij / tau, the
    // weight of z_i.
    let coefficients = |i: usize, coef: &mut [f64]| {
        let at = i * c..(i + 1) * c;
        let mut z_weight = 0.0;
        for (((w, &g), &a), &x) in coef.iter_mut().zip(&grad_logits[at.clone()]).zip(&ratio[at.clone()]).zip(&kt[at]) {
            *w = if x > 0.0 { g * a / x * inv_tau } else { 0.0 };
            z_weight += *w;
        }
        z_weight * inv_tau
    };
    run_parts(parallel, parts, |(first, g)| {
        // Two rows per pass over the class vectors, as the loss pass's gradient.
        let (mut coef, mut rows_f64) = (vec![0.0; 2 * c], Vec::with_capacity(2 * p));
        let count = g.len() / p;
        let pairs = count / 2 * 2;
        for r in (0..pairs).step_by(2) {
            let i = first + r;
            let (c0, c1) = coef.split_at_mut(c);
            let w = [coefficients(i, c0), coefficients(i + 1, c1)];
            let z = features.f64_range(i * p..(i + 2) * p, &mut rows_f64);
            weighted_sums2(z, kappa_mu, &coef, w, &mut g[r * p..(r + 2) * p]);
        }
        if pairs < count {
            let i = first + pairs;
            let w = coefficients(i, &mut coef[..c]);
            let z = features.f64_range(i * p..(i + 1) * p, &mut rows_f64);
            weighted_sum(z, kappa_mu, &coef[..c], w, &mut g[pairs * p..]);
        }
    })?;
    Ok(grad)
}

/// The contrast logits from q_ij = kt_ij^2 - kappa_j^2 = (2 / tau) z_i . (kappa_j mu_j) +
/// |z_i|^2 / tau^2 (N x C row-major, formed by a matrix product elsewhere, e.g. on a GPU):
/// kt = sqrt(max(kappa^2 + q, 0)), s = F(kt) - logc_j and A(kt), evaluated exactly pair by
/// pair with `evaluation.exact`, split over up to `evaluation.max_threads` jobs. This is the
/// only per-pair scalar work of the matrix-product route, for problems (ImageNet-LT: C =
/// 1000, p = 1024) where the dot products belong to a BLAS or a device. Fails with
/// [`VmfError::InvalidBatch`] when `q` is not a whole number of rows of C = `kappa.len()`
/// values or `logc` is not C long.
pub fn contrast_logits_from_q<B>(q: &[f64], kappa: &[f64], logc: &[f64], evaluation: &PairEvaluation<'_, B>) -> Result<ContrastLogits, VmfError>
where
    B: Fn(f64) -> (f64, f64) + Sync,
{
    let c = kappa.len();
    if c == 0 || logc.len() != c || !q.len().is_multiple_of(c) {
        return Err(invalid(format!("{} values of q for {c} classes ({} logc values)", q.len(), logc.len())));
    }
    let kappa_sq: Vec<f64> = kappa.iter().map(|k| k * k).collect();
    let (mut kt, mut logits, mut ratio) = (vec![0.0; q.len()], vec![0.0; q.len()], vec![0.0; q.len()]);
    let threads = evaluation.max_threads.min(q.len() / MIN_PAIRS_PER_THREAD).max(1);
    let chunk = q.len().div_ceil(threads).max(1);
    let parts: Vec<_> = q.chunks(chunk).zip(kt.chunks_mut(chunk)).zip(logits.chunks_mut(chunk)).zip(ratio.chunks_mut(chunk)).enumerate().collect();
    run_parts(evaluation.parallel, parts, |(part, (((q, kt), s), ratio))| {
        for (k, &qij) in q.iter().enumerate() {
            let j = (part * chunk + k) % c;
            let x = (kappa_sq[j] + qij).max(0.0).sqrt();
            let (f, a) = (evaluation.exact)(x);
            (kt[k], s[k], ratio[k]) = (x, f - logc[j], a);
        }
    })?;
    Ok(ContrastLogits { logits, kt, ratio })
}

/// The one pass behind [`contrast_loss`] and (`gradient` = `None`) [`contrast_logits`].
fn contrast_pass<B>(
    input: ContrastBatch<'_>,
    classes: ClassTerms<'_>,
    tau: f64,
    evaluation: &PairEvaluation<'_, B>,
    interpolants: Option<&mut InterpolantCache>,
    gradient: Option<GradientOut<'_>>,
) -> Result<ContrastLoss, VmfError>
where
    B: Fn(f64) -> (f64, f64) + Sync,
{
    let logits_only = gradient.is_none();
    let ContrastBatch { features, labels, p } = input;
    let (n, c) = (labels.len(), classes.log_prior.len());
    if n == 0 || c == 0 || p == 0 {
        return Err(invalid(format!("the batch needs at least one sample, class and dimension (N = {n}, C = {c}, p = {p})")));
    }
    if features.len() != n * p {
        return Err(invalid(format!("{} feature values for N = {n} samples of dimension p = {p}", features.len())));
    }
    if classes.kappa_mu.len() != c * p || classes.logc.len() != c || classes.kappa.len() != c {
        return Err(invalid(format!(
            "class terms hold {} kappa*mu values, {} kappa values and {} logc values for C = {c} classes (the prior's length) of dimension p = {p}",
            classes.kappa_mu.len(),
            classes.kappa.len(),
            classes.logc.len()
        )));
    }
    if let Some(&l) = labels.iter().find(|&&l| l >= c) {
        return Err(invalid(format!("label {l} is outside 0..{c}")));
    }
    if !(tau.is_finite() && tau > 0.0) {
        return Err(invalid(format!("temperature tau = {tau} must be finite and > 0")));
    }
    if let Some(GradientOut::Into { memory, .. }) = &gradient {
        let len = memory.len();
        if len != n * p {
            return Err(invalid(format!("gradient memory of {len} elements for N = {n} samples of dimension p = {p}")));
        }
    }

    let mut out = ContrastLoss {
        loss: 0.0,
        per_sample: vec![0.0; n],
        logits: vec![0.0; n * c],
        kt: vec![0.0; n * c],
        ratio: vec![0.0; n * c],
        grad: Vec::new(),
    };
    let owned = matches!(gradient, Some(GradientOut::Owned));
    if owned {
        out.grad.reserve_exact(n * p);
    }
    let (grad_memory, grad_out_scale) = match gradient {
        Some(GradientOut::Owned) => (GradientMemory::F64(&mut out.grad.spare_capacity_mut()[..n * p]), 1.0),
        Some(GradientOut::Into { memory, scale }) => (memory, scale),
        None => (GradientMemory::F64(&mut []), 1.0),
    };
    let batch = Batch {
        features,
        labels,
        p,
        classes,
        inv_tau: 1.0 / tau,
        grad_scale: 1.0 / (n as f64 * tau),
        exact: evaluation.exact,
        logits_only,
    };
    let threads = evaluation.max_threads.min(n * c / MIN_PAIRS_PER_THREAD).clamp(1, n);
    let rows = n.div_ceil(threads);

    // Each thread's rows keep their per-pair values class-major (column j of a chunk of
    // `count` rows is `count` consecutive values), so that the per-class steps run over
    // contiguous memory; the row-major outputs are written once at the end.
    let chunks: Vec<(usize, usize)> = (0..n).step_by(rows).map(|first| (first, rows.min(n - first))).collect();
    let mut columns = vec![0.0; n * c];

    // 1. kt for every pair.
    let parts: Vec<_> = chunks.iter().zip(columns.chunks_mut(rows * c)).map(|(&(first, _), kt)| (first, kt)).collect();
    run_parts(evaluation.parallel, parts, |(first, kt)| fill_kt(&batch, first, kt))?;

    // 2. Per class, a certified interpolant covering its arguments (and kappa, its anchor)
    //    where one exists: from the cache's lattice, else built for this batch's range.
    let mut ranges: Vec<(f64, f64)> = classes.kappa.iter().map(|&k| (k, k)).collect();
    for (&(_, count), chunk) in chunks.iter().zip(columns.chunks(rows * c)) {
        for ((lo, hi), column) in ranges.iter_mut().zip(chunk.chunks_exact(count)) {
            let (l, h) = column.iter().fold((*lo, *hi), |(l, h), &x| (l.min(x), h.max(x)));
            (*lo, *hi) = (l, h);
        }
    }
    let mut local: Vec<Option<PairInterpolant>> = vec![None; c];
    let cache = match interpolants {
        Some(cache) if n >= MIN_ROWS_TO_INTERPOLATE => {
            cache.prepare(evaluation.nu, tau);
            for (j, &(lo, hi)) in ranges.iter().enumerate() {
                if !cache.ensure(evaluation.exact, evaluation.nu, tau, lo, hi) {
                    local[j] = PairInterpolant::build(evaluation.exact, lo, hi, pair_error_scale(evaluation.nu, hi));
                }
            }
            Some(&*cache)
        }
        _ => None,
    };
    let interpolants: Vec<Option<(&PairInterpolant, f64)>> = ranges
        .iter()
        .zip(&local)
        .zip(classes.kappa)
        .map(|((&(lo, hi), own), &kappa)| {
            let lattice = cache.and_then(|cache| cache.covering(tau, lo, hi));
            lattice.or(own.as_ref()).map(|ip| (ip, ip.primitive_at(kappa)))
        })
        .collect();
    // 3. Logits, ratios, per-sample losses and the gradient, row by row.
    let mut grad_rest = grad_memory;
    let mut parts = Vec::with_capacity(chunks.len());
    let outputs = out.per_sample.chunks_mut(rows).zip(out.logits.chunks_mut(rows * c)).zip(out.kt.chunks_mut(rows * c)).zip(out.ratio.chunks_mut(rows * c));
    for ((((per_sample, logits), kt), ratio), (&(first, _), kt_columns)) in outputs.zip(chunks.iter().zip(columns.chunks(rows * c))) {
        let (grad, rest) = grad_rest.split_at(if logits_only { 0 } else { per_sample.len() * p });
        grad_rest = rest;
        parts.push((first, kt_columns, RowsOut { per_sample, logits, kt, ratio, grad, grad_out_scale }));
    }
    run_parts(evaluation.parallel, parts, |(first, kt_columns, rows_out)| finish_rows(&batch, &interpolants, first, kt_columns, rows_out))?;
    if owned {
        // SAFETY: the capacity was reserved above and `finish_rows` wrote every one of the
        // N x p gradient values through the spare capacity (each row is written whole).
        unsafe { out.grad.set_len(n * p) };
    }
    out.loss = out.per_sample.iter().sum::<f64>() / n as f64;
    Ok(out)
}

/// The largest factor by which the dot-product form of kt^2 may magnify its rounding: kt^2 =
/// |kappa_j mu_j|^2 + 2 kappa_j mu_j . z_i/tau + |z_i/tau|^2 costs one fused
/// multiply-add per coordinate (the norm of the sum costs two operations), but cancels where
/// z_i points away from mu_j: its rounding, relative to (|kappa_j mu_j| + |z_i/tau|)^2, grows
/// by that over kt^2. Where the factor exceeds this guard, the pair is recomputed as the norm
/// of the sum, so kt keeps a relative error of a few ulps for every pair.
pub const CANCELLATION_GUARD: f64 = 4.0;

/// kt for the rows starting at `first` (as many as `kt` holds, C per row), written class by
/// class (`kt[j * count + r]` for row `first + r`), computed in blocks of rows so that each
/// class vector is read from cache once per block, by dot products of four rows with four
/// class vectors at a time, then two (see [`CANCELLATION_GUARD`]).
fn fill_kt<B>(batch: &Batch<'_, B>, first: usize, kt: &mut [f64]) {
    let (p, c) = (batch.p, batch.classes.log_prior.len());
    let count = kt.len() / c;
    let inv_tau = batch.inv_tau;
    let km = batch.classes.kappa_mu;
    let class = |j: usize| &km[j * p..(j + 1) * p];
    let km_sq: Vec<f64> = (0..c).map(|j| dot(class(j), class(j))).collect();
    let km_norm: Vec<f64> = km_sq.iter().map(|v| v.sqrt()).collect();
    let mut zt_sq = vec![0.0; count];
    let mut buffer = Vec::with_capacity(ROW_BLOCK * p);

    // Per block of rows (in f64): |z_i|^2, and q_ij = kappa_j mu_j . z_i with four rows and
    // four classes at a time, then two.
    let quads_of_classes = c / 4 * 4;
    for start in (0..count).step_by(ROW_BLOCK) {
        let end = start + ROW_BLOCK.min(count - start);
        let block = batch.features.f64_range((first + start) * p..(first + end) * p, &mut buffer);
        let row = |r: usize| &block[(r - start) * p..(r - start + 1) * p];
        let mut r = start;
        while r + 4 <= end {
            let rows = [row(r), row(r + 1), row(r + 2), row(r + 3)];
            zt_sq[r..r + 4].copy_from_slice(&squared_norms4(rows));
            for j in (0..quads_of_classes).step_by(4) {
                let q = dots4x4(rows, [class(j), class(j + 1), class(j + 2), class(j + 3)]);
                for (dj, column) in kt[j * count..(j + 4) * count].chunks_exact_mut(count).enumerate() {
                    for dr in 0..4 {
                        column[r + dr] = q[dr][dj];
                    }
                }
            }
            for j in (quads_of_classes..c).step_by(2) {
                let j2 = (j + 1).min(c - 1);
                for (dr, qr) in dots4x2(rows, [class(j), class(j2)]).iter().enumerate() {
                    kt[j * count + r + dr] = qr[0];
                    kt[j2 * count + r + dr] = qr[1];
                }
            }
            r += 4;
        }
        for r in r..end {
            zt_sq[r] = dot(row(r), row(r));
            for j in 0..c {
                kt[j * count + r] = dot(row(r), class(j));
            }
        }
    }
    // |z_i / tau| and |z_i / tau|^2 per row.
    let zt_norm: Vec<f64> = zt_sq.iter().map(|v| v.sqrt() * inv_tau).collect();
    zt_sq.iter_mut().for_each(|v| *v *= inv_tau * inv_tau);
    let two_inv_tau = 2.0 * inv_tau;

    // kt from q, class by class (a vectorisable pass); a NaN marks a pair whose dot-product
    // form cancels (finite inputs never give one otherwise).
    let mut cancelled = false;
    for ((column, &sq_j), &norm_j) in kt.chunks_exact_mut(count).zip(&km_sq).zip(&km_norm) {
        for ((x, &zsq), &znorm) in column.iter_mut().zip(&zt_sq).zip(&zt_norm) {
            let sq = sq_j + two_inv_tau.mul_add(*x, zsq);
            let bound = norm_j + znorm;
            let ok = sq * CANCELLATION_GUARD >= bound * bound;
            cancelled |= !ok;
            *x = if ok { sq.sqrt() } else { f64::NAN };
        }
    }
    if cancelled {
        let mut zt = vec![0.0; p];
        for (j, column) in kt.chunks_exact_mut(count).enumerate() {
            for (r, x) in column.iter_mut().enumerate() {
                if x.is_nan() {
                    let row = batch.features.f64_range((first + r) * p..(first + r + 1) * p, &mut buffer);
                    zt.iter_mut().zip(row).for_each(|(t, v)| *t = v * inv_tau);
                    *x = norm_of_sum(class(j), &zt);
                }
            }
        }
    }
}

/// Everything after kt for the rows `first..first + out.per_sample.len()`, from their kt
/// class by class (`kt_columns`, as [`fill_kt`] writes it).
fn finish_rows<B: Fn(f64) -> (f64, f64)>(batch: &Batch<'_, B>, interpolants: &[Option<(&PairInterpolant, f64)>], first: usize, kt_columns: &[f64], out: RowsOut<'_>) {
    let c = batch.classes.log_prior.len();
    let count = out.per_sample.len();
    let column = |j: usize| j * count..(j + 1) * count;

    // s and A class by class: a column of kt shares its interpolant.
    let (mut s, mut a) = (vec![0.0; count * c], vec![0.0; count * c]);
    let mut scratch = Vec::new();
    for (j, interpolant) in interpolants.iter().enumerate() {
        let (xs, s_j, a_j) = (&kt_columns[column(j)], &mut s[column(j)], &mut a[column(j)]);
        match interpolant {
            Some((ip, anchor)) => {
                ip.eval_into(xs, *anchor, s_j, a_j, &mut scratch);
                // The exact ratio is below 1 and non-negative; keep the interpolated one so.
                a_j.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0 - f64::EPSILON / 2.0));
            }
            None => {
                for ((x, si), ai) in xs.iter().zip(s_j.iter_mut()).zip(a_j.iter_mut()) {
                    let (f, r) = (batch.exact)(*x);
                    (*si, *ai) = (f - batch.classes.logc[j], r);
                }
            }
        }
    }

    if !batch.logits_only {
        loss_and_gradient(batch, first, kt_columns, &s, &a, out.per_sample, out.grad, out.grad_out_scale);
    }

    // The row-major outputs.
    for (i, ((kt_row, s_row), a_row)) in out.kt.chunks_exact_mut(c).zip(out.logits.chunks_exact_mut(c)).zip(out.ratio.chunks_exact_mut(c)).enumerate() {
        for j in 0..c {
            let at = j * count + i;
            (kt_row[j], s_row[j], a_row[j]) = (kt_columns[at], s[at], a[at]);
        }
    }
}

/// The per-sample losses and the gradient of the rows `first..first + per_sample.len()` from
/// their kt, s and A class by class.
#[allow(clippy::too_many_arguments)]
fn loss_and_gradient<B>(batch: &Batch<'_, B>, first: usize, kt_columns: &[f64], s: &[f64], a: &[f64], per_sample: &mut [f64], grad: GradientMemory<'_>, grad_out_scale: f64) {
    let (p, c) = (batch.p, batch.classes.log_prior.len());
    let count = per_sample.len();
    let log_prior = batch.classes.log_prior;
    let labels = &batch.labels[first..first + count];
    let column = |j: usize| j * count..(j + 1) * count;

    // Softmax with one exponential per pair, the per-sample loss, and the gradient
    // coefficients c_ij = (softmax_ij - [j = y_i]) A_ij / (N tau kt_ij), each step over all
    // rows of one class at a time (plain loops over contiguous values, which vectorise).
    let mut max = vec![f64::NEG_INFINITY; count];
    for (j, &lp) in log_prior.iter().enumerate() {
        for (m, &sj) in max.iter_mut().zip(&s[column(j)]) {
            // A NaN logit is not skipped: it reaches the loss, which the caller checks.
            let v = sj + lp;
            *m = if v > *m || v.is_nan() { v } else { *m };
        }
    }
    let mut coef = vec![0.0; count * c];
    for (j, &lp) in log_prior.iter().enumerate() {
        for ((w, &sj), &m) in coef[column(j)].iter_mut().zip(&s[column(j)]).zip(&max) {
            *w = sj + lp - m;
        }
    }
    exp_nonpositive_in_place(&mut coef);
    let mut sum_exp = vec![0.0; count];
    for e_j in coef.chunks_exact(count) {
        sum_exp.iter_mut().zip(e_j).for_each(|(t, e)| *t += e);
    }
    for (i, &label) in labels.iter().enumerate() {
        let lse = max[i] + sum_exp[i].ln();
        per_sample[i] = lse - s[label * count + i] - log_prior[label];
    }
    let inv_sum: Vec<f64> = sum_exp.iter().map(|t| 1.0 / t).collect();
    for w_j in coef.chunks_exact_mut(count) {
        w_j.iter_mut().zip(&inv_sum).for_each(|(w, q)| *w *= q);
    }
    for (i, &label) in labels.iter().enumerate() {
        coef[label * count + i] -= 1.0;
    }
    for ((w, &kt), &a) in coef.iter_mut().zip(kt_columns).zip(a) {
        // A(0) = 0: a pair with kt = 0 (z = -kappa mu tau exactly) contributes nothing.
        *w = if kt > 0.0 { *w * a / kt * batch.grad_scale } else { 0.0 };
    }
    let mut z_weight = vec![0.0; count];
    for w_j in coef.chunks_exact(count) {
        z_weight.iter_mut().zip(w_j).for_each(|(t, w)| *t += w);
    }
    z_weight.iter_mut().for_each(|t| *t *= batch.inv_tau);

    // grad_i = (sum_j c_ij) z_i / tau + sum_j c_ij kappa_j mu_j, two rows per pass over the
    // class vectors, into a buffer that stays in L1, then to the gradient memory.
    let km = batch.classes.kappa_mu;
    let mut grad = grad;
    let mut rows_f64 = Vec::with_capacity(2 * p);
    let mut two_rows = vec![0.0; 2 * p];
    let mut row_coef = vec![0.0; 2 * c];
    let pairs = count / 2 * 2;
    for i in (0..pairs).step_by(2) {
        for (j, w_j) in coef.chunks_exact(count).enumerate() {
            (row_coef[j], row_coef[c + j]) = (w_j[i], w_j[i + 1]);
        }
        let z = batch.features.f64_range((first + i) * p..(first + i + 2) * p, &mut rows_f64);
        weighted_sums2(z, km, &row_coef, [z_weight[i], z_weight[i + 1]], &mut two_rows);
        grad.write_scaled(i * p, &two_rows, grad_out_scale);
    }
    if pairs < count {
        let i = pairs;
        for (j, w_j) in coef.chunks_exact(count).enumerate() {
            row_coef[j] = w_j[i];
        }
        let z = batch.features.f64_range((first + i) * p..(first + i + 1) * p, &mut rows_f64);
        weighted_sum(z, km, &row_coef[..c], z_weight[i], &mut two_rows[..p]);
        grad.write_scaled(i * p, &two_rows[..p], grad_out_scale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_bessel_i_minus_nu_log_x_and_ratio;
    use crate::random_unit_vector;
    use rand::SeedableRng;

    struct Setup {
        p: usize,
        features: Vec<f64>,
        labels: Vec<usize>,
        kappa_mu: Vec<f64>,
        kappa: Vec<f64>,
        logc: Vec<f64>,
        prior: Vec<f64>,
    }

    fn setup(n: usize, c: usize, p: usize, seed: u64) -> Setup {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let nu = p as f64 / 2.0 - 1.0;
        let features = (0..n).flat_map(|_| random_unit_vector(p, &mut rng)).collect();
        let labels = (0..n).map(|i| (i * 7 + 3) % c).collect();
        let kappas: Vec<f64> = (0..c).map(|j| 5.0 + 300.0 * j as f64 / c as f64).collect();
        let kappa_mu = kappas.iter().flat_map(|&k| random_unit_vector(p, &mut rng).into_iter().map(move |v| v * k)).collect();
        let logc = kappas.iter().map(|&k| log_bessel_i_minus_nu_log_x_and_ratio(nu, k).0).collect();
        let prior = (0..c).map(|j| -(1.0 + j as f64).ln()).collect();
        Setup { p, features, labels, kappa_mu, kappa: kappas, logc, prior }
    }

    fn run_with(s: &Setup, features: &[f64], threads: usize, interpolate: bool) -> ContrastLoss {
        let nu = s.p as f64 / 2.0 - 1.0;
        let bessel = |x: f64| log_bessel_i_minus_nu_log_x_and_ratio(nu, x);
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, kappa: &s.kappa, logc: &s.logc, log_prior: &s.prior };
        let evaluation = PairEvaluation { exact: &bessel, nu, max_threads: threads, parallel: &crate::parallel::ScopedThreads };
        let mut cache = InterpolantCache::new();
        let input = ContrastBatch { features: FeatureRows::F64(features), labels: &s.labels, p: s.p };
        contrast_loss(input, classes, 0.1, &evaluation, interpolate.then_some(&mut cache), GradientOut::Owned).unwrap()
    }

    fn run(s: &Setup, features: &[f64], threads: usize) -> ContrastLoss {
        run_with(s, features, threads, false)
    }

    #[test]
    fn logits_alone_match_the_loss_pass_and_their_backward_its_gradient() {
        let su = setup(70, 9, 16, 11);
        let nu = su.p as f64 / 2.0 - 1.0;
        let bessel = |x: f64| log_bessel_i_minus_nu_log_x_and_ratio(nu, x);
        let classes = ClassTerms { kappa_mu: &su.kappa_mu, kappa: &su.kappa, logc: &su.logc, log_prior: &su.prior };
        let (n, c) = (su.labels.len(), su.prior.len());
        for (threads, interpolate) in [(1, false), (3, false), (1, true), (3, true)] {
            let full = run_with(&su, &su.features, threads, interpolate);
            let evaluation = PairEvaluation { exact: &bessel, nu, max_threads: threads, parallel: &crate::parallel::ScopedThreads };
            let mut cache = InterpolantCache::new();
            let only = contrast_logits(FeatureRows::F64(&su.features), su.p, classes, 0.1, &evaluation, interpolate.then_some(&mut cache)).unwrap();
            assert_eq!((&only.logits, &only.kt, &only.ratio), (&full.logits, &full.kt, &full.ratio), "threads {threads}, interpolated {interpolate}");
            // The loss's upstream gradient: (softmax(s + log prior) - onehot) / N.
            let mut g = vec![0.0; n * c];
            for i in 0..n {
                let row: Vec<f64> = (0..c).map(|j| only.logits[i * c + j] + su.prior[j]).collect();
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = row.iter().map(|v| (v - m).exp()).sum();
                for j in 0..c {
                    g[i * c + j] = ((row[j] - m).exp() / z - f64::from(u8::from(j == su.labels[i]))) / n as f64;
                }
            }
            let grad = contrast_logits_backward(FeatureRows::F64(&su.features), su.p, &su.kappa_mu, 0.1, &only.kt, &only.ratio, &g, threads, &crate::parallel::ScopedThreads).unwrap();
            let scale = full.grad.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
            let worst = grad.iter().zip(&full.grad).fold(0.0_f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(worst <= 1e-13 * scale, "threads {threads}: backward differs from the loss gradient by {worst:e} (scale {scale:e})");
        }
        let bad = contrast_logits_backward(FeatureRows::F64(&su.features), su.p, &su.kappa_mu, 0.1, &[0.0; 3], &[0.0; 3], &[0.0; 3], 1, &crate::parallel::ScopedThreads);
        assert!(matches!(bad, Err(VmfError::InvalidBatch { .. })));
    }

    #[test]
    fn gradient_matches_central_differences() {
        let s = setup(5, 4, 16, 1);
        let out = run(&s, &s.features, 1);
        let h = 1e-6;
        for k in [0, 3, 17, 40, 79] {
            let mut plus = s.features.clone();
            plus[k] += h;
            let mut minus = s.features.clone();
            minus[k] -= h;
            let fd = (run(&s, &plus, 1).loss - run(&s, &minus, 1).loss) / (2.0 * h);
            assert!((fd - out.grad[k]).abs() <= 1e-6 * fd.abs().max(1e-3), "d loss / d z[{k}]: {} vs finite difference {fd}", out.grad[k]);
        }
    }

    #[test]
    fn logits_and_loss_follow_the_definitions() {
        let s = setup(3, 5, 8, 2);
        let out = run(&s, &s.features, 1);
        let nu = 3.0;
        for i in 0..3 {
            for j in 0..5 {
                let w: Vec<f64> = (0..8).map(|k| s.kappa_mu[j * 8 + k] + s.features[i * 8 + k] / 0.1).collect();
                let kt = w.iter().map(|v| v * v).sum::<f64>().sqrt();
                assert!((out.kt[i * 5 + j] - kt).abs() <= 1e-14 * kt);
                let want = log_bessel_i_minus_nu_log_x_and_ratio(nu, kt).0 - s.logc[j];
                assert!((out.logits[i * 5 + j] - want).abs() <= 1e-12 * want.abs().max(1.0));
            }
            let v: Vec<f64> = (0..5).map(|j| out.logits[i * 5 + j] + s.prior[j]).collect();
            let lse = v.iter().map(|x| x.exp()).sum::<f64>().ln();
            assert!((out.per_sample[i] - (lse - v[s.labels[i]])).abs() <= 1e-12);
        }
        assert!((out.loss - out.per_sample.iter().sum::<f64>() / 3.0).abs() <= 1e-15);
    }

    #[test]
    fn kt_stays_accurate_where_the_dot_product_form_cancels() {
        // kappa = 1/tau and z close to -mu: kt^2 = kappa^2 + 2 kappa mu.z/tau + 1/tau^2 is a
        // difference of ~400 that leaves ~1e-4; the guard must recompute these pairs.
        let (n, c, p) = (64, 4, 128);
        let mut s = setup(n, c, p, 9);
        s.kappa = vec![10.0; c];
        let mut rng = rand::rngs::StdRng::seed_from_u64(10);
        let mu: Vec<Vec<f64>> = (0..c).map(|_| random_unit_vector(p, &mut rng)).collect();
        s.kappa_mu = mu.iter().flat_map(|m| m.iter().map(|v| 10.0 * v)).collect();
        s.logc = vec![log_bessel_i_minus_nu_log_x_and_ratio(63.0, 10.0).0; c];
        for i in 0..n {
            let noise = random_unit_vector(p, &mut rng);
            let eps = 1e-3 * (i % 8) as f64;
            let row: Vec<f64> = (0..p).map(|k| -mu[i % c][k] + eps * noise[k]).collect();
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            s.features[i * p..(i + 1) * p].iter_mut().zip(&row).for_each(|(f, v)| *f = v / norm);
        }
        let out = run(&s, &s.features, 1);
        for i in 0..n {
            for j in 0..c {
                let w: Vec<f64> = (0..p).map(|k| s.kappa_mu[j * p + k] + s.features[i * p + k] * 10.0).collect();
                let want = w.iter().map(|v| v * v).sum::<f64>().sqrt();
                assert!((out.kt[i * c + j] - want).abs() <= 1e-14 * want + 1e-300, "kt[{i},{j}] {} vs {want}", out.kt[i * c + j]);
            }
        }
    }

    #[test]
    fn gradient_into_caller_memory_is_the_scaled_owned_one() {
        let s = setup(300, 6, 20, 11);
        let nu = 9.0;
        let bessel = |x: f64| log_bessel_i_minus_nu_log_x_and_ratio(nu, x);
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, kappa: &s.kappa, logc: &s.logc, log_prior: &s.prior };
        for threads in [1, 2] {
            let evaluation = PairEvaluation { exact: &bessel, nu, max_threads: threads, parallel: &crate::parallel::ScopedThreads };
            let input = ContrastBatch { features: FeatureRows::F64(&s.features), labels: &s.labels, p: s.p };
            let owned = contrast_loss(input, classes, 0.1, &evaluation, None, GradientOut::Owned).unwrap();
            let mut wide = vec![MaybeUninit::<f64>::uninit(); owned.grad.len()];
            let mut narrow = vec![MaybeUninit::<f32>::uninit(); owned.grad.len()];
            let into_wide = contrast_loss(input, classes, 0.1, &evaluation, None, GradientOut::Into { memory: GradientMemory::F64(&mut wide), scale: 0.5 }).unwrap();
            let into_narrow = contrast_loss(input, classes, 0.1, &evaluation, None, GradientOut::Into { memory: GradientMemory::F32(&mut narrow), scale: 0.5 }).unwrap();
            assert!(into_wide.grad.is_empty() && into_narrow.grad.is_empty());
            assert_eq!((into_wide.loss, &into_wide.logits), (owned.loss, &owned.logits));
            for (k, g) in owned.grad.iter().enumerate() {
                // SAFETY: a successful pass writes every element.
                let (w, n) = unsafe { (wide[k].assume_init(), narrow[k].assume_init()) };
                assert_eq!(w, 0.5 * g, "threads={threads} k={k}");
                assert_eq!(n, (0.5 * g) as f32, "threads={threads} k={k}");
            }
        }
    }

    /// Runs the jobs in reverse order, each twice.
    #[derive(Debug)]
    struct ReversedTwice;
    impl Parallel for ReversedTwice {
        fn run(&self, tasks: usize, job: &(dyn Fn(usize) + Sync)) {
            for t in (0..tasks).rev() {
                job(t);
                job(t);
            }
        }
    }

    /// Forgets the last job.
    #[derive(Debug)]
    struct SkipsOne;
    impl Parallel for SkipsOne {
        fn run(&self, tasks: usize, job: &(dyn Fn(usize) + Sync)) {
            (0..tasks.saturating_sub(1)).for_each(job);
        }
    }

    #[test]
    fn any_runner_that_completes_every_job_gives_the_same_result_and_others_fail() {
        let s = setup(3001, 7, 20, 14);
        let nu = 9.0;
        let bessel = |x: f64| log_bessel_i_minus_nu_log_x_and_ratio(nu, x);
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, kappa: &s.kappa, logc: &s.logc, log_prior: &s.prior };
        let input = ContrastBatch { features: FeatureRows::F64(&s.features), labels: &s.labels, p: s.p };
        let run = |parallel: &dyn Parallel| {
            let evaluation = PairEvaluation { exact: &bessel, nu, max_threads: 3, parallel };
            contrast_loss(input, classes, 0.1, &evaluation, None, GradientOut::Owned)
        };
        let reference = run(&crate::parallel::Sequential).unwrap();
        assert_eq!(run(&ReversedTwice).unwrap(), reference);
        assert_eq!(run(&crate::parallel::ScopedThreads).unwrap(), reference);
        assert!(matches!(run(&SkipsOne), Err(VmfError::IncompleteJobs { completed, jobs }) if completed + 1 == jobs && jobs > 1));
    }

    #[test]
    fn uneven_chunks_and_odd_class_counts_agree_across_thread_counts() {
        for (n, c) in [(3001, 7), (3001, 13), (2999, 3)] {
            let s = setup(n, c, 20, 13);
            for interpolate in [false, true] {
                let one = run_with(&s, &s.features, 1, interpolate);
                for threads in [2, 3, 8] {
                    assert_eq!(run_with(&s, &s.features, threads, interpolate), one, "N={n} C={c} {threads} threads");
                }
            }
        }
    }

    #[test]
    fn f32_rows_give_the_results_of_their_widened_copy() {
        let mut s = setup(2503, 10, 128, 12);
        let narrow: Vec<f32> = s.features.iter().map(|&v| v as f32).collect();
        s.features = narrow.iter().map(|&v| f64::from(v)).collect();
        let nu = 63.0;
        let bessel = |x: f64| log_bessel_i_minus_nu_log_x_and_ratio(nu, x);
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, kappa: &s.kappa, logc: &s.logc, log_prior: &s.prior };
        // 2503 x 10 pairs: one job, or three of uneven size.
        for threads in [1, 3] {
            let evaluation = PairEvaluation { exact: &bessel, nu, max_threads: threads, parallel: &crate::parallel::ScopedThreads };
            let run = |features| {
                let input = ContrastBatch { features, labels: &s.labels, p: s.p };
                contrast_loss(input, classes, 0.1, &evaluation, Some(&mut InterpolantCache::new()), GradientOut::Owned).unwrap()
            };
            assert_eq!(run(FeatureRows::F32(&narrow)), run(FeatureRows::F64(&s.features)), "{threads} threads");
        }
    }

    #[test]
    fn result_is_identical_for_any_thread_count() {
        let s = setup(3000, 12, 20, 3);
        for interpolate in [false, true] {
            let one = run_with(&s, &s.features, 1, interpolate);
            for threads in [2, 3, 8] {
                assert_eq!(run_with(&s, &s.features, threads, interpolate), one, "{threads} threads");
            }
        }
    }

    #[test]
    fn interpolated_pairs_agree_with_exact_ones() {
        for (p, seed) in [(128, 5), (1024, 6), (16, 7), (3, 8)] {
            let s = setup(200, 7, p, seed);
            let exact = run_with(&s, &s.features, 1, false);
            let fast = run_with(&s, &s.features, 1, true);
            let nu = p as f64 / 2.0 - 1.0;
            for k in 0..exact.logits.len() {
                let scale = crate::chebyshev::pair_error_scale(nu, exact.kt[k]);
                assert!((fast.logits[k] - exact.logits[k]).abs() <= 64.0 * f64::EPSILON * scale, "p={p} s[{k}] {} vs {}", fast.logits[k], exact.logits[k]);
                assert!((fast.ratio[k] - exact.ratio[k]).abs() <= 64.0 * f64::EPSILON, "p={p} A[{k}] {} vs {}", fast.ratio[k], exact.ratio[k]);
            }
            assert!((fast.loss - exact.loss).abs() <= 1e-12 * exact.loss.abs(), "p={p} loss {} vs {}", fast.loss, exact.loss);
            let gmax = exact.grad.iter().fold(0.0_f64, |m, g| m.max(g.abs()));
            for (a, b) in fast.grad.iter().zip(&exact.grad) {
                // s differs by ulps of |F| (~3e3 at p = 1024), which moves the softmax by as much.
                assert!((a - b).abs() <= 1e-11 * gmax, "p={p} grad {a} vs {b}");
            }
        }
    }

    #[test]
    fn bad_batches_are_refused() {
        let s = setup(2, 3, 4, 4);
        let bessel = |x: f64| log_bessel_i_minus_nu_log_x_and_ratio(1.0, x);
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, kappa: &s.kappa, logc: &s.logc, log_prior: &s.prior };
        let e = PairEvaluation { exact: &bessel, nu: 1.0, max_threads: 1, parallel: &crate::parallel::Sequential };
        let mut cache = InterpolantCache::new();
        let batch = |features, labels| ContrastBatch { features: FeatureRows::F64(features), labels, p: 4 };
        let owned = || GradientOut::Owned;
        assert!(contrast_loss(batch(&s.features[..7], &s.labels), classes, 0.1, &e, Some(&mut cache), owned()).is_err());
        assert!(contrast_loss(batch(&s.features, &[0, 3]), classes, 0.1, &e, Some(&mut cache), owned()).is_err());
        assert!(contrast_loss(batch(&s.features, &s.labels), classes, 0.0, &e, Some(&mut cache), owned()).is_err());
        assert!(contrast_loss(batch(&[], &[]), classes, 0.1, &e, None, owned()).is_err());
        let mut short = vec![MaybeUninit::<f32>::uninit(); 7];
        let into = GradientOut::Into { memory: GradientMemory::F32(&mut short), scale: 1.0 };
        assert!(contrast_loss(batch(&s.features, &s.labels), classes, 0.1, &e, None, into).is_err(), "gradient memory of the wrong size");
    }
}
