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
//! no tensor library has; the rest (a norm per pair, a softmax per row, the gradient's
//! weighted sum of class vectors) is a handful of flops per pair. Doing all of it where the
//! Bessel values are computed costs one transfer of the features in and one of the gradient
//! out, instead of a dozen tensor operations, their temporaries and their synchronisations.
//! kt is formed as the norm of w_ij itself (never as kappa^2 + 2 kappa mu.z/tau + |z|^2/tau^2,
//! which cancels when z points away from mu), so it is accurate to a few ulps for any inputs.
//!
//! The pair function (F, A) is evaluated exactly or, per class, through a Chebyshev
//! interpolant over the batch's range of kt that has been certified against the exact values
//! ([`crate::chebyshev`]): the class's N pairs then cost a few fused multiply-adds each.
//!
//! Work is split by rows over up to `max_threads` scoped threads; the interpolants are built
//! once for the whole batch, each row's results depend on that row alone and the mean is
//! summed in row order, so the output is bit-identical for any thread count.

use crate::chebyshev::{pair_error_scale, PairInterpolant};
use crate::error::VmfError;

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
    /// logc_j = F(kappa_j), C entries.
    pub logc: &'a [f64],
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
    /// d loss / d features (N x p row-major), for the mean loss.
    pub grad: Vec<f64>,
}

/// How the pair function x -> (F(x), A(x)) is evaluated.
#[derive(Debug, Clone, Copy)]
pub struct PairEvaluation<'a, B> {
    /// The exact pair function, for example
    /// [`crate::FixedOrderBessel::log_i_minus_nu_log_x_and_ratio`] at nu = p/2 - 1.
    pub exact: &'a B,
    /// The order nu of F (sets the interpolants' error scale, [`pair_error_scale`]).
    pub nu: f64,
    /// Interpolate per class where an interpolant is certified ([`PairInterpolant`]) instead
    /// of evaluating every pair exactly; classes with fewer than [`MIN_ROWS_TO_INTERPOLATE`]
    /// samples' worth of pairs, or whose interpolant fails its check, are evaluated exactly.
    pub interpolate: bool,
    /// Most threads to use (see [`MIN_PAIRS_PER_THREAD`]).
    pub max_threads: usize,
}

/// Below this batch size building an interpolant (29 exact evaluations) costs more than
/// evaluating the class's pairs exactly.
pub const MIN_ROWS_TO_INTERPOLATE: usize = 32;

/// One batch's inputs, shared by every worker.
struct Batch<'a, B> {
    features: &'a [f64],
    labels: &'a [usize],
    p: usize,
    classes: ClassTerms<'a>,
    log_prior: &'a [f64],
    /// 1 / tau: z / tau is formed as a product (an ulp from the quotient, at a fraction of
    /// the cost).
    inv_tau: f64,
    /// 1 / (N tau): the gradient's common factor.
    grad_scale: f64,
    exact: &'a B,
}

/// Output slices of a run of rows (kt is already filled in).
struct RowsOut<'a> {
    per_sample: &'a mut [f64],
    logits: &'a mut [f64],
    kt: &'a [f64],
    ratio: &'a mut [f64],
    grad: &'a mut [f64],
}

fn invalid(reason: String) -> VmfError {
    VmfError::InvalidBatch { reason }
}

/// The ProCo loss of a batch and its gradient; see the module notes for the formulas.
///
/// `features` is N x p row-major (unit rows; not re-checked here), `labels` has N entries in
/// 0..C, `log_prior` has C entries (use zeros for plain cross entropy) and `tau` > 0. Fails
/// with [`VmfError::InvalidBatch`] on inconsistent lengths, an empty batch, a label out of
/// range or a non-positive temperature.
pub fn contrast_loss<B>(
    features: &[f64],
    labels: &[usize],
    p: usize,
    classes: ClassTerms<'_>,
    log_prior: &[f64],
    tau: f64,
    evaluation: &PairEvaluation<'_, B>,
) -> Result<ContrastLoss, VmfError>
where
    B: Fn(f64) -> (f64, f64) + Sync,
{
    let (n, c) = (labels.len(), log_prior.len());
    if n == 0 || c == 0 || p == 0 {
        return Err(invalid(format!("the batch needs at least one sample, class and dimension (N = {n}, C = {c}, p = {p})")));
    }
    if features.len() != n * p {
        return Err(invalid(format!("{} feature values for N = {n} samples of dimension p = {p}", features.len())));
    }
    if classes.kappa_mu.len() != c * p || classes.logc.len() != c || classes.kappa.len() != c {
        return Err(invalid(format!(
            "class terms hold {} kappa*mu values, {} kappa values and {} logc values for C = {c} classes of dimension p = {p}",
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

    let mut out = ContrastLoss {
        loss: 0.0,
        per_sample: vec![0.0; n],
        logits: vec![0.0; n * c],
        kt: vec![0.0; n * c],
        ratio: vec![0.0; n * c],
        grad: vec![0.0; n * p],
    };
    let batch = Batch {
        features,
        labels,
        p,
        classes,
        log_prior,
        inv_tau: 1.0 / tau,
        grad_scale: 1.0 / (n as f64 * tau),
        exact: evaluation.exact,
    };
    let threads = evaluation.max_threads.min(n * c / MIN_PAIRS_PER_THREAD).clamp(1, n);
    let rows = n.div_ceil(threads);

    // 1. kt for every pair.
    if threads == 1 {
        fill_kt(&batch, 0, &mut out.kt);
    } else {
        std::thread::scope(|scope| {
            for (t, kt) in out.kt.chunks_mut(rows * c).enumerate() {
                let batch = &batch;
                scope.spawn(move || fill_kt(batch, t * rows, kt));
            }
        });
    }

    // 2. One interpolant per class over the batch's range of kt (and kappa, its anchor),
    //    where it pays and passes its check.
    let interpolants: Vec<Option<PairInterpolant>> = (0..c)
        .map(|j| {
            if !evaluation.interpolate || n < MIN_ROWS_TO_INTERPOLATE {
                return None;
            }
            let kappa = classes.kappa[j];
            let (lo, hi) = out.kt.iter().skip(j).step_by(c).fold((kappa, kappa), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            PairInterpolant::build(evaluation.exact, lo, hi, kappa, classes.logc[j], pair_error_scale(evaluation.nu, hi))
        })
        .collect();

    // 3. Logits, ratios, per-sample losses and the gradient, row by row.
    if threads == 1 {
        let all = RowsOut { per_sample: &mut out.per_sample, logits: &mut out.logits, kt: &out.kt, ratio: &mut out.ratio, grad: &mut out.grad };
        finish_rows(&batch, &interpolants, 0, all);
    } else {
        std::thread::scope(|scope| {
            let parts = out
                .per_sample
                .chunks_mut(rows)
                .zip(out.logits.chunks_mut(rows * c))
                .zip(out.kt.chunks(rows * c))
                .zip(out.ratio.chunks_mut(rows * c))
                .zip(out.grad.chunks_mut(rows * p));
            for (t, ((((per_sample, logits), kt), ratio), grad)) in parts.enumerate() {
                let (batch, interpolants) = (&batch, &interpolants);
                scope.spawn(move || finish_rows(batch, interpolants, t * rows, RowsOut { per_sample, logits, kt, ratio, grad }));
            }
        });
    }
    out.loss = out.per_sample.iter().sum::<f64>() / n as f64;
    Ok(out)
}

/// |a + b| with eight independent partial sums, so the loop vectorises (f64 addition is not
/// reassociated by the compiler) and rounding grows with p/8 terms instead of p.
#[inline]
fn norm_of_sum(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0_f64; 8];
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (ca, cb) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for k in 0..8 {
            let d = ca[k] + cb[k];
            acc[k] += d * d;
        }
    }
    let mut tail = 0.0;
    for (x, y) in a_rest.iter().zip(b_rest) {
        let d = x + y;
        tail += d * d;
    }
    (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail).sqrt()
}

/// z_i / tau for the rows `first..first + count` into `zt` (count x p).
fn scaled_rows<B>(batch: &Batch<'_, B>, first: usize, count: usize, zt: &mut [f64]) {
    let p = batch.p;
    let z = &batch.features[first * p..(first + count) * p];
    for (dst, &v) in zt[..count * p].iter_mut().zip(z) {
        *dst = v * batch.inv_tau;
    }
}

/// kt for the rows starting at `first` (as many as `kt` holds, C per row), in blocks of rows
/// so that each class vector is read from cache once per block.
fn fill_kt<B>(batch: &Batch<'_, B>, first: usize, kt: &mut [f64]) {
    let (p, c) = (batch.p, batch.log_prior.len());
    let count = kt.len() / c;
    let mut zt = vec![0.0; ROW_BLOCK * p];
    for start in (0..count).step_by(ROW_BLOCK) {
        let b = ROW_BLOCK.min(count - start);
        scaled_rows(batch, first + start, b, &mut zt);
        for (j, km) in batch.classes.kappa_mu.chunks_exact(p).enumerate() {
            for r in 0..b {
                kt[(start + r) * c + j] = norm_of_sum(km, &zt[r * p..(r + 1) * p]);
            }
        }
    }
}

/// Everything after kt for the rows `first..first + out.per_sample.len()`.
fn finish_rows<B: Fn(f64) -> (f64, f64)>(batch: &Batch<'_, B>, interpolants: &[Option<PairInterpolant>], first: usize, out: RowsOut<'_>) {
    let (p, c) = (batch.p, batch.log_prior.len());
    let count = out.per_sample.len();

    // s and A class by class: a column of kt shares its interpolant.
    let (mut column, mut s, mut a) = (vec![0.0; count], vec![0.0; count], vec![0.0; count]);
    for (j, interpolant) in interpolants.iter().enumerate() {
        for (x, i) in column.iter_mut().zip(0..count) {
            *x = out.kt[i * c + j];
        }
        match interpolant {
            Some(ip) => {
                ip.eval_into(&column, &mut s, &mut a);
                // The exact ratio is below 1 and non-negative; keep the interpolated one so.
                a.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0 - f64::EPSILON / 2.0));
            }
            None => {
                for ((x, si), ai) in column.iter().zip(s.iter_mut()).zip(a.iter_mut()) {
                    let (f, r) = (batch.exact)(*x);
                    (*si, *ai) = (f - batch.classes.logc[j], r);
                }
            }
        }
        for i in 0..count {
            out.logits[i * c + j] = s[i];
            out.ratio[i * c + j] = a[i];
        }
    }

    // Softmax with one exponential per pair, the per-sample loss, and the gradient
    // coefficients c_ij = (softmax_ij - [j = y_i]) A_ij / (N tau kt_ij).
    let mut coef = vec![0.0; count * c];
    for i in 0..count {
        let label = batch.labels[first + i];
        let row = i * c..(i + 1) * c;
        let max = out.logits[row.clone()].iter().zip(batch.log_prior).fold(f64::NEG_INFINITY, |m, (s, lp)| m.max(s + lp));
        let weights = &mut coef[row.clone()];
        let mut sum_exp = 0.0;
        for ((w, s), lp) in weights.iter_mut().zip(&out.logits[row.clone()]).zip(batch.log_prior) {
            *w = (s + lp - max).exp();
            sum_exp += *w;
        }
        let lse = max + sum_exp.ln();
        out.per_sample[i] = lse - out.logits[i * c + label] - batch.log_prior[label];
        let inv_sum = 1.0 / sum_exp;
        for (j, w) in weights.iter_mut().enumerate() {
            let k = i * c + j;
            let g = *w * inv_sum - if j == label { 1.0 } else { 0.0 };
            // A(0) = 0: a pair with kt = 0 (z = -kappa mu tau exactly) contributes nothing.
            *w = if out.kt[k] > 0.0 { g * out.ratio[k] / out.kt[k] * batch.grad_scale } else { 0.0 };
        }
    }

    // grad_i = sum_j c_ij kappa_j mu_j + (sum_j c_ij) z_i / tau, accumulated in registers one
    // stretch of LANES coordinates at a time (the class vectors stay in L1).
    const LANES: usize = 16;
    for i in 0..count {
        let coefs = &coef[i * c..(i + 1) * c];
        let z_weight: f64 = coefs.iter().sum::<f64>() * batch.inv_tau;
        let z = &batch.features[(first + i) * p..(first + i + 1) * p];
        let grad = &mut out.grad[i * p..(i + 1) * p];
        let whole = p / LANES * LANES;
        for k0 in (0..whole).step_by(LANES) {
            let mut acc = [0.0; LANES];
            for (l, v) in acc.iter_mut().enumerate() {
                *v = z_weight * z[k0 + l];
            }
            for (j, &cij) in coefs.iter().enumerate() {
                let km = &batch.classes.kappa_mu[j * p + k0..j * p + k0 + LANES];
                for l in 0..LANES {
                    acc[l] = cij.mul_add(km[l], acc[l]);
                }
            }
            grad[k0..k0 + LANES].copy_from_slice(&acc);
        }
        for k in whole..p {
            grad[k] = coefs.iter().enumerate().fold(z_weight * z[k], |g, (j, &cij)| cij.mul_add(batch.classes.kappa_mu[j * p + k], g));
        }
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
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, kappa: &s.kappa, logc: &s.logc };
        let evaluation = PairEvaluation { exact: &bessel, nu, interpolate, max_threads: threads };
        contrast_loss(features, &s.labels, s.p, classes, &s.prior, 0.1, &evaluation).unwrap()
    }

    fn run(s: &Setup, features: &[f64], threads: usize) -> ContrastLoss {
        run_with(s, features, threads, false)
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
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, kappa: &s.kappa, logc: &s.logc };
        let e = PairEvaluation { exact: &bessel, nu: 1.0, interpolate: true, max_threads: 1 };
        assert!(contrast_loss(&s.features[..7], &s.labels, 4, classes, &s.prior, 0.1, &e).is_err());
        assert!(contrast_loss(&s.features, &[0, 3], 4, classes, &s.prior, 0.1, &e).is_err());
        assert!(contrast_loss(&s.features, &s.labels, 4, classes, &s.prior, 0.0, &e).is_err());
        assert!(contrast_loss(&[], &[], 4, classes, &s.prior, 0.1, &e).is_err());
    }
}
