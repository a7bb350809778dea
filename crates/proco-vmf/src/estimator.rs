//! Online estimation of one vMF distribution per class from first moments, on the host.
//!
//! Each class j keeps a count-weighted running mean m_j of its unit features and a count n_j.
//! From them: R_j = |m_j|, mu_j = m_j / R_j, kappa_j = p R_j / (1 - R_j^2) (ProCo's closed
//! form), clamped as the reference does, and logc_j = log I_nu(kappa_j) - nu log kappa_j.
//!
//! A batch enters only through its per-class feature sums and counts ([`BatchStatistics`]),
//! so several devices combine their batches by summing those (an all-reduce of C x p + C
//! numbers) instead of gathering every feature. The state is f64: C x p numbers, updated once
//! per view, far too small to be worth a device. The tensor front ends (the `proco` crate on
//! LibTorch, the Python package on numpy) sum their batches here or hand their sums in.

use rand::Rng;

use crate::contrast::ClassTerms;
use crate::error::VmfError;
use crate::rows::FeatureRows;
use crate::{bessel_order, log_bessel_i_minus_nu_log_x, random_unit_vector};

/// Upper clamp of the concentration (the reference's value; also used when the formula fails).
pub const KAPPA_MAX: f64 = 1e5;

/// Largest running-mean norm accepted by [`VmfEstimator::from_state`]: a mean of feature rows
/// accepted as unit vectors (within [`crate::rows::NORM_TOLERANCE`], as half-precision rows
/// normalised in half precision are) can reach 1 + that tolerance; 1e-6 more is rounding slack.
/// A mean of norm R >= 1 gives kappa = [`KAPPA_MAX`] (flag `NegativeSetToMax`), as in ProCo.
pub const MAX_MEAN_NORM: f64 = 1.0 + crate::rows::NORM_TOLERANCE + 1e-6;

/// Norm of the initial mean of every class (the reference's 0.9, so kappa starts at p*90/19).
pub const INITIAL_MEAN_NORM: f64 = 0.9;

/// How a class's concentration was obtained, mirroring the reference's clamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KappaFlag {
    /// kappa = p R / (1 - R^2) was finite and at most [`KAPPA_MAX`].
    Ok,
    /// The formula exceeded [`KAPPA_MAX`] and was clamped to it.
    ClampHigh,
    /// R > 1 (possible only through rounding) made the formula negative; set to [`KAPPA_MAX`].
    NegativeSetToMax,
    /// 1 - R^2 was exactly 0; set to [`KAPPA_MAX`].
    InfSetToMax,
}

impl KappaFlag {
    /// The name used in the golden files (`ok`, `clamp_high`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KappaFlag::Ok => "ok",
            KappaFlag::ClampHigh => "clamp_high",
            KappaFlag::NegativeSetToMax => "negative_set_to_max",
            KappaFlag::InfSetToMax => "inf_set_to_max",
        }
    }
}

/// The vMF parameters of one class derived from its running mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassConcentration {
    /// Mean resultant length |m_j|.
    pub r: f64,
    /// Concentration after clamping.
    pub kappa: f64,
    /// How kappa was obtained.
    pub flag: KappaFlag,
    /// log I_nu(kappa) - nu log kappa, the class's log-normaliser term in the ProCo logit.
    pub logc: f64,
}

/// kappa from |m|^2 with the reference's clamps. `r2` is the squared norm (1 - r2 is formed
/// from it directly, which is more accurate than squaring R again).
fn clamped_kappa(p: usize, r2: f64) -> (f64, KappaFlag) {
    let denom = 1.0 - r2;
    if denom == 0.0 {
        return (KAPPA_MAX, KappaFlag::InfSetToMax);
    }
    let kappa = p as f64 * r2.sqrt() / denom;
    if kappa < 0.0 {
        (KAPPA_MAX, KappaFlag::NegativeSetToMax)
    } else if kappa > KAPPA_MAX {
        (KAPPA_MAX, KappaFlag::ClampHigh)
    } else {
        (kappa, KappaFlag::Ok)
    }
}

/// |m|^2 with Neumaier's compensated summation: kappa amplifies the error of |m|^2 by
/// 2 R^2 / (1 - R^2), and a plain sum of p = 1024 squares already loses several ulps.
fn sum_of_squares(m: &[f64]) -> f64 {
    let (mut sum, mut comp) = (0.0_f64, 0.0_f64);
    for v in m {
        let sq = v * v;
        let t = sum + sq;
        comp += if sum.abs() >= sq { (sum - t) + sq } else { (sq - t) + sum };
        sum = t;
    }
    sum + comp
}

/// Per-class feature sums and counts of one batch (or of several, merged): everything an
/// estimator update needs.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatistics {
    num_classes: usize,
    p: usize,
    sums: Vec<f64>,
    counts: Vec<f64>,
}

impl BatchStatistics {
    /// Statistics from per-class sums (C x p row-major) and counts (C) made elsewhere: on a
    /// device, or reduced over several. Fails with [`VmfError::InvalidEstimator`] on lengths
    /// that do not match, non-finite sums, or counts that are negative or not whole.
    pub fn from_sums(num_classes: usize, p: usize, sums: Vec<f64>, counts: Vec<f64>) -> Result<Self, VmfError> {
        if sums.len() != num_classes * p || counts.len() != num_classes {
            return Err(VmfError::InvalidEstimator { reason: format!("batch statistics of {} sums and {} counts for {num_classes} classes x {p} dims", sums.len(), counts.len()) });
        }
        if sums.iter().any(|v| !v.is_finite()) || counts.iter().any(|c| !(c.is_finite() && *c >= 0.0 && c.fract() == 0.0)) {
            return Err(VmfError::InvalidEstimator { reason: "batch statistics hold non-finite sums or counts that are not whole numbers >= 0".into() });
        }
        Ok(Self { num_classes, p, sums, counts })
    }

    /// The same statistics from features already on the host: `features` N x p row-major
    /// (unit rows, not re-checked here), `labels` N indices.
    /// Sums in row order (as the device path does on a CPU).
    pub fn from_host(features: &[f64], labels: &[usize], num_classes: usize, p: usize) -> Result<Self, VmfError> {
        Self::from_rows(FeatureRows::F64(features), labels, num_classes, p)
    }

    /// [`Self::from_host`] for f32 or f64 rows (f32 ones give the statistics of their exact
    /// f64 widening, without making it).
    pub fn from_rows(features: FeatureRows<'_>, labels: &[usize], num_classes: usize, p: usize) -> Result<Self, VmfError> {
        match features {
            FeatureRows::F32(v) => Self::sum_rows(v, labels, num_classes, p),
            FeatureRows::F64(v) => Self::sum_rows(v, labels, num_classes, p),
        }
    }

    fn sum_rows<T: Copy + Into<f64>>(features: &[T], labels: &[usize], num_classes: usize, p: usize) -> Result<Self, VmfError> {
        if p == 0 || features.len() != labels.len() * p {
            return Err(VmfError::InvalidFeatures { reason: format!("{} values for {} samples of dimension {p}", features.len(), labels.len()) });
        }
        let mut sums = vec![0.0; num_classes * p];
        let mut counts = vec![0.0; num_classes];
        for (row, &l) in features.chunks_exact(p).zip(labels) {
            if l >= num_classes {
                return Err(VmfError::InvalidLabels { reason: format!("label {l} is outside 0..{num_classes}") });
            }
            sums[l * p..(l + 1) * p].iter_mut().zip(row).for_each(|(s, &v)| *s += v.into());
            counts[l] += 1.0;
        }
        Ok(Self { num_classes, p, sums, counts })
    }

    /// Adds another device's statistics for the same step (the all-reduce of data parallelism).
    pub fn merge(&mut self, other: &BatchStatistics) -> Result<(), VmfError> {
        if (self.num_classes, self.p) != (other.num_classes, other.p) {
            return Err(VmfError::InvalidEstimator {
                reason: format!(
                    "cannot merge statistics of {} classes x {} dims with {} x {}",
                    self.num_classes, self.p, other.num_classes, other.p
                ),
            });
        }
        self.sums.iter_mut().zip(&other.sums).for_each(|(a, b)| *a += b);
        self.counts.iter_mut().zip(&other.counts).for_each(|(a, b)| *a += b);
        Ok(())
    }

    /// Replaces the sums (C x p) and counts (C) with reduced ones of the same sizes, e.g. the
    /// all-reduce over the ranks of data-parallel training.
    pub fn set(&mut self, sums: &[f64], counts: &[f64]) -> Result<(), VmfError> {
        if sums.len() != self.sums.len() || counts.len() != self.counts.len() {
            return Err(VmfError::InvalidEstimator { reason: format!("reduced statistics of {} sums and {} counts for {} classes x {} dims", sums.len(), counts.len(), self.num_classes, self.p) });
        }
        self.sums.copy_from_slice(sums);
        self.counts.copy_from_slice(counts);
        Ok(())
    }

    /// Number of samples of each class in the batch.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// Per-class feature sums, C x p row-major.
    pub fn sums(&self) -> &[f64] {
        &self.sums
    }
}

/// Running vMF estimates for every class (see the module notes).
#[derive(Debug, Clone, PartialEq)]
pub struct VmfEstimator {
    num_classes: usize,
    p: usize,
    means: Vec<f64>,
    counts: Vec<f64>,
}

impl VmfEstimator {
    /// The reference's initial state: every mean is 0.9 times a random unit vector, every count 0.
    pub fn new<R: Rng + ?Sized>(num_classes: usize, p: usize, rng: &mut R) -> Result<Self, VmfError> {
        bessel_order(p)?;
        if num_classes == 0 {
            return Err(VmfError::InvalidEstimator { reason: "the number of classes must be at least 1".into() });
        }
        let means = (0..num_classes).flat_map(|_| random_unit_vector(p, rng)).map(|v| INITIAL_MEAN_NORM * v).collect();
        Ok(Self { num_classes, p, means, counts: vec![0.0; num_classes] })
    }

    /// An estimator with the given state: `means` is C x p row-major, `counts` has C entries.
    pub fn from_state(num_classes: usize, p: usize, means: Vec<f64>, counts: Vec<f64>) -> Result<Self, VmfError> {
        bessel_order(p)?;
        let bad = |reason: String| Err(VmfError::InvalidEstimator { reason });
        if means.len() != num_classes * p || counts.len() != num_classes {
            return bad(format!(
                "estimator state has {} mean entries and {} counts; expected {} x {} and {}",
                means.len(),
                counts.len(),
                num_classes,
                p,
                num_classes
            ));
        }
        if means.iter().any(|m| !m.is_finite()) || counts.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
            return bad("estimator state holds non-finite means or negative counts".into());
        }
        // Means of (nearly) unit vectors have norm <= MAX_MEAN_NORM; anything larger is corrupt.
        if let Some(j) = means.chunks_exact(p).position(|m| sum_of_squares(m) > MAX_MEAN_NORM * MAX_MEAN_NORM) {
            return bad(format!("class {j} has a running mean of norm > {MAX_MEAN_NORM}; a mean of unit feature rows cannot exceed 1 + their norm tolerance"));
        }
        Ok(Self { num_classes, p, means, counts })
    }

    /// Number of classes C.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Feature dimension p.
    pub fn dim(&self) -> usize {
        self.p
    }

    /// Running means, C x p row-major.
    pub fn means(&self) -> &[f64] {
        &self.means
    }

    /// Number of features seen per class.
    pub fn counts(&self) -> &[f64] {
        &self.counts
    }

    /// The weight each class's batch mean gets: n_batch / (n_batch + n), 0 for absent classes.
    pub fn update_weights(&self, stats: &BatchStatistics) -> Vec<f64> {
        stats
            .counts
            .iter()
            .zip(&self.counts)
            .map(|(&nb, &n)| if nb > 0.0 { nb / (nb + n) } else { 0.0 })
            .collect()
    }

    /// Folds a batch's statistics in: m_j <- m_j (1 - w_j) + mean_j w_j, n_j <- n_j + n_batch_j.
    pub fn apply(&mut self, stats: &BatchStatistics) -> Result<(), VmfError> {
        if (stats.num_classes, stats.p) != (self.num_classes, self.p) {
            return Err(VmfError::InvalidEstimator {
                reason: format!(
                    "batch statistics are {} classes x {} dims but the estimator is {} x {}",
                    stats.num_classes, stats.p, self.num_classes, self.p
                ),
            });
        }
        let weights = self.update_weights(stats);
        for (j, &w) in weights.iter().enumerate() {
            if w == 0.0 {
                continue;
            }
            let nb = stats.counts[j];
            let row = j * self.p..(j + 1) * self.p;
            for (m, s) in self.means[row.clone()].iter_mut().zip(&stats.sums[row]) {
                *m = *m * (1.0 - w) + (s / nb) * w;
            }
            self.counts[j] += nb;
        }
        Ok(())
    }

    /// R, kappa, flag and logc of every class, computed from the current means.
    pub fn concentrations(&self) -> Vec<ClassConcentration> {
        let nu = self.p as f64 / 2.0 - 1.0;
        self.means
            .chunks_exact(self.p)
            .map(|m| {
                let r2 = sum_of_squares(m);
                let (kappa, flag) = clamped_kappa(self.p, r2);
                ClassConcentration { r: r2.sqrt(), kappa, flag, logc: log_bessel_i_minus_nu_log_x(nu, kappa) }
            })
            .collect()
    }

    /// The class terms of the contrast logits: kappa_j mu_j (C x p row-major; kappa_j m_j / R_j,
    /// zero for a class whose mean is zero), kappa_j and logc_j, exact.
    pub fn class_terms(&self) -> OwnedClassTerms {
        let conc = self.concentrations();
        let mut kappa_mu = Vec::with_capacity(conc.len() * self.p);
        for (m, cj) in self.means.chunks_exact(self.p).zip(&conc) {
            let scale = if cj.r > 0.0 { cj.kappa / cj.r } else { 0.0 };
            kappa_mu.extend(m.iter().map(|v| v * scale));
        }
        OwnedClassTerms { kappa_mu, kappa: conc.iter().map(|cj| cj.kappa).collect(), logc: conc.iter().map(|cj| cj.logc).collect() }
    }
}

/// The per-class terms of the contrast logits derived from an estimator
/// ([`VmfEstimator::class_terms`]), owned; [`OwnedClassTerms::with_prior`] lends them to
/// [`crate::contrast`].
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedClassTerms {
    /// kappa_j mu_j, C x p row-major.
    pub kappa_mu: Vec<f64>,
    /// kappa_j, C entries.
    pub kappa: Vec<f64>,
    /// logc_j = log I_nu(kappa_j) - nu log kappa_j, C entries.
    pub logc: Vec<f64>,
}

impl OwnedClassTerms {
    /// The terms with the log prior of the logit adjustment (C entries; zeros for plain
    /// cross entropy).
    pub fn with_prior<'a>(&'a self, log_prior: &'a [f64]) -> ClassTerms<'a> {
        ClassTerms { kappa_mu: &self.kappa_mu, kappa: &self.kappa, logc: &self.logc, log_prior }
    }
}

/// The two estimators ProCo keeps: `previous` (last epoch's statistics plus the current
/// epoch's, used for the loss) and `current` (this epoch only, swapped in at the next epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatorPair {
    previous: VmfEstimator,
    current: VmfEstimator,
}

impl EstimatorPair {
    /// Both estimators in the initial state (independent random directions).
    pub fn new<R: Rng + ?Sized>(num_classes: usize, p: usize, rng: &mut R) -> Result<Self, VmfError> {
        Ok(Self { previous: VmfEstimator::new(num_classes, p, rng)?, current: VmfEstimator::new(num_classes, p, rng)? })
    }

    /// Rebuilds a pair from saved estimators (for resuming a run).
    pub fn from_parts(previous: VmfEstimator, current: VmfEstimator) -> Self {
        Self { previous, current }
    }

    /// Updates both estimators with already-reduced statistics (data-parallel training).
    pub fn apply(&mut self, stats: &BatchStatistics) -> Result<(), VmfError> {
        self.current.apply(stats)?;
        self.previous.apply(stats)
    }

    /// Start of an epoch: the finished epoch's estimator becomes `previous`, and a fresh one
    /// starts accumulating.
    pub fn start_epoch<R: Rng + ?Sized>(&mut self, rng: &mut R) -> Result<(), VmfError> {
        let fresh = VmfEstimator::new(self.current.num_classes, self.current.p, rng)?;
        self.previous = std::mem::replace(&mut self.current, fresh);
        Ok(())
    }

    /// The estimator the loss uses.
    pub fn previous(&self) -> &VmfEstimator {
        &self.previous
    }

    /// The estimator accumulating the current epoch.
    pub fn current(&self) -> &VmfEstimator {
        &self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_rows_give_the_statistics_of_their_widening() {
        let rows: Vec<f32> = (0..24).map(|k| ((k as f32) * 0.37).sin()).collect();
        let wide: Vec<f64> = rows.iter().map(|&v| f64::from(v)).collect();
        let labels = [0, 2, 2, 1, 0, 2];
        let narrow = BatchStatistics::from_rows(FeatureRows::F32(&rows), &labels, 3, 4).unwrap();
        assert_eq!(narrow, BatchStatistics::from_host(&wide, &labels, 3, 4).unwrap());
        assert!(BatchStatistics::from_rows(FeatureRows::F32(&rows[..20]), &labels, 3, 4).is_err());
        assert!(BatchStatistics::from_rows(FeatureRows::F32(&rows), &[0, 2, 2, 1, 0, 3], 3, 4).is_err());
    }

    /// A class seen once holds that row as its mean: a half-precision row within the norm
    /// tolerance (here 1 + 5e-4) must survive a save and reload (kappa clamped to its maximum),
    /// while a mean past 1 + the tolerance is corrupt state.
    #[test]
    fn a_mean_of_rows_within_the_norm_tolerance_reloads() {
        let p = 4;
        let row = [0.0, 0.0, 0.0, 1.0 + 5e-4];
        let mut est = VmfEstimator::from_state(2, p, vec![0.0; 2 * p], vec![0.0; 2]).unwrap();
        est.apply(&BatchStatistics::from_host(&row, &[1], 2, p).unwrap()).unwrap();
        let (means, counts) = (est.means().to_vec(), est.counts().to_vec());
        let reloaded = VmfEstimator::from_state(2, p, means, counts).unwrap();
        let c = &reloaded.concentrations()[1];
        assert_eq!((c.kappa, c.flag), (KAPPA_MAX, KappaFlag::NegativeSetToMax));
        let too_long = vec![0.0, 0.0, 0.0, 1.0 + 2e-3, 0.0, 0.0, 0.0, 1.0];
        assert!(VmfEstimator::from_state(2, p, too_long, vec![1.0; 2]).is_err());
    }
}
