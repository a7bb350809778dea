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
//! Work is split by rows over up to `max_threads` scoped threads; each row's results depend on
//! that row alone and the mean is summed in row order, so the output is bit-identical for any
//! thread count.

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

/// One batch's inputs, shared by every worker.
struct Batch<'a, B> {
    features: &'a [f64],
    labels: &'a [usize],
    p: usize,
    classes: ClassTerms<'a>,
    log_prior: &'a [f64],
    tau: f64,
    /// 1 / (N tau): the gradient's common factor.
    grad_scale: f64,
    bessel: &'a B,
}

/// Output slices of a run of rows.
struct RowsOut<'a> {
    per_sample: &'a mut [f64],
    logits: &'a mut [f64],
    kt: &'a mut [f64],
    ratio: &'a mut [f64],
    grad: &'a mut [f64],
}

fn invalid(reason: String) -> VmfError {
    VmfError::InvalidBatch { reason }
}

/// The ProCo loss of a batch and its gradient; see the module notes for the formulas.
///
/// `features` is N x p row-major (unit rows; not re-checked here), `labels` has N entries in
/// 0..C, `log_prior` has C entries (use zeros for plain cross entropy), `tau` > 0, and
/// `bessel(x)` returns (F(x), A(x)) for x >= 0 (for example
/// [`crate::log_bessel_i_minus_nu_log_x_and_ratio`] at the order nu = p/2 - 1). Fails with
/// [`VmfError::InvalidBatch`] on inconsistent lengths, an empty batch, a label out of range or
/// a non-positive temperature.
#[allow(clippy::too_many_arguments)]
pub fn contrast_loss<B>(
    features: &[f64],
    labels: &[usize],
    p: usize,
    classes: ClassTerms<'_>,
    log_prior: &[f64],
    tau: f64,
    bessel: &B,
    max_threads: usize,
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
    if classes.kappa_mu.len() != c * p || classes.logc.len() != c {
        return Err(invalid(format!(
            "class terms hold {} kappa*mu values and {} logc values for C = {c} classes of dimension p = {p}",
            classes.kappa_mu.len(),
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
    let batch = Batch { features, labels, p, classes, log_prior, tau, grad_scale: 1.0 / (n as f64 * tau), bessel };
    let threads = max_threads.min(n * c / MIN_PAIRS_PER_THREAD).clamp(1, n);
    let rows = n.div_ceil(threads);
    if threads == 1 {
        let all = RowsOut { per_sample: &mut out.per_sample, logits: &mut out.logits, kt: &mut out.kt, ratio: &mut out.ratio, grad: &mut out.grad };
        process_rows(&batch, 0, all);
    } else {
        std::thread::scope(|scope| {
            let parts = out
                .per_sample
                .chunks_mut(rows)
                .zip(out.logits.chunks_mut(rows * c))
                .zip(out.kt.chunks_mut(rows * c))
                .zip(out.ratio.chunks_mut(rows * c))
                .zip(out.grad.chunks_mut(rows * p));
            for (t, ((((per_sample, logits), kt), ratio), grad)) in parts.enumerate() {
                let batch = &batch;
                scope.spawn(move || process_rows(batch, t * rows, RowsOut { per_sample, logits, kt, ratio, grad }));
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

/// y += alpha * x.
#[inline]
fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// Rows `first..first + out.per_sample.len()` of the batch.
fn process_rows<B: Fn(f64) -> (f64, f64)>(batch: &Batch<'_, B>, first: usize, out: RowsOut<'_>) {
    let (p, c) = (batch.p, batch.log_prior.len());
    let count = out.per_sample.len();
    let mut zt = vec![0.0; ROW_BLOCK * p];
    let mut coef = vec![0.0; ROW_BLOCK * c];
    // z / tau as a product: one rounding more than a division (an ulp), at a fraction of its cost.
    let inv_tau = 1.0 / batch.tau;
    for start in (0..count).step_by(ROW_BLOCK) {
        let b = ROW_BLOCK.min(count - start);
        let rows = start..start + b;
        for (r, i) in rows.clone().enumerate() {
            let z = &batch.features[(first + i) * p..(first + i + 1) * p];
            for (dst, &v) in zt[r * p..(r + 1) * p].iter_mut().zip(z) {
                *dst = v * inv_tau;
            }
        }
        // kt for the block, one class vector at a time (it stays in L1 across the rows).
        for (j, km) in batch.classes.kappa_mu.chunks_exact(p).enumerate() {
            for (r, i) in rows.clone().enumerate() {
                out.kt[i * c + j] = norm_of_sum(km, &zt[r * p..(r + 1) * p]);
            }
        }
        for (r, i) in rows.clone().enumerate() {
            let label = batch.labels[first + i];
            let row = i * c..(i + 1) * c;
            let mut max = f64::NEG_INFINITY;
            for j in 0..c {
                let (f, a) = (batch.bessel)(out.kt[i * c + j]);
                let s = f - batch.classes.logc[j];
                out.logits[i * c + j] = s;
                out.ratio[i * c + j] = a;
                max = max.max(s + batch.log_prior[j]);
            }
            // Softmax with one exponential per pair: e_j = exp(v_j - max) is kept in `coef`.
            let weights = &mut coef[r * c..(r + 1) * c];
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
        // grad_i = sum_j c_ij kappa_j mu_j + (sum_j c_ij) z_i / tau.
        for (j, km) in batch.classes.kappa_mu.chunks_exact(p).enumerate() {
            for (r, i) in rows.clone().enumerate() {
                axpy(coef[r * c + j], km, &mut out.grad[i * p..(i + 1) * p]);
            }
        }
        for (r, i) in rows.enumerate() {
            let total: f64 = coef[r * c..(r + 1) * c].iter().sum();
            axpy(total, &zt[r * p..(r + 1) * p], &mut out.grad[i * p..(i + 1) * p]);
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
        Setup { p, features, labels, kappa_mu, logc, prior }
    }

    fn run(s: &Setup, features: &[f64], threads: usize) -> ContrastLoss {
        let nu = s.p as f64 / 2.0 - 1.0;
        let bessel = |x: f64| log_bessel_i_minus_nu_log_x_and_ratio(nu, x);
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, logc: &s.logc };
        contrast_loss(features, &s.labels, s.p, classes, &s.prior, 0.1, &bessel, threads).unwrap()
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
        let s = setup(300, 12, 20, 3);
        let one = run(&s, &s.features, 1);
        for threads in [2, 3, 8] {
            assert_eq!(run(&s, &s.features, threads), one, "{threads} threads");
        }
    }

    #[test]
    fn bad_batches_are_refused() {
        let s = setup(2, 3, 4, 4);
        let bessel = |x: f64| log_bessel_i_minus_nu_log_x_and_ratio(1.0, x);
        let classes = ClassTerms { kappa_mu: &s.kappa_mu, logc: &s.logc };
        assert!(contrast_loss(&s.features[..7], &s.labels, 4, classes, &s.prior, 0.1, &bessel, 1).is_err());
        assert!(contrast_loss(&s.features, &[0, 3], 4, classes, &s.prior, 0.1, &bessel, 1).is_err());
        assert!(contrast_loss(&s.features, &s.labels, 4, classes, &s.prior, 0.0, &bessel, 1).is_err());
        assert!(contrast_loss(&[], &[], 4, classes, &s.prior, 0.1, &bessel, 1).is_err());
    }
}
