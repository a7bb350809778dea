//! The vMF estimators of ProCo, on LibTorch tensors.
//!
//! The estimators themselves live on the host in `proco-vmf` ([`proco_vmf::estimator`]: the
//! running means, kappa with the reference's clamps, the epoch swap); this module sums a
//! batch of feature tensors into their statistics on the features' device
//! ([`batch_statistics`]), feeds a batch straight into an estimator ([`TensorUpdate`]), and
//! summarises the concentrations for the metrics ([`KappaDistribution`]).

use tch::{Device, Kind, Tensor};

pub use proco_vmf::estimator::{BatchStatistics, ClassConcentration, EstimatorPair, KappaFlag, OwnedClassTerms, VmfEstimator, INITIAL_MEAN_NORM, KAPPA_MAX, MAX_MEAN_NORM};

use crate::error::Result;
use crate::validate;

/// Sums the features of each class on the features' device (in f64) and brings the C x p
/// sums and C counts to the host. Validates shapes, finiteness, unit norms and labels.
pub fn batch_statistics(features: &Tensor, labels: &Tensor, num_classes: usize, p: usize) -> Result<BatchStatistics> {
    let n = validate::unit_features(features, p)?;
    validate::labels(labels, n, num_classes)?;
    let device = features.device();
    let feats = features.detach().f_to_kind(Kind::Double)?;
    let sums = Tensor::f_zeros([num_classes as i64, p as i64], (Kind::Double, device))?.f_index_add(0, labels, &feats)?;
    let ones = Tensor::f_ones([n], (Kind::Double, device))?;
    let counts = Tensor::f_zeros([num_classes as i64], (Kind::Double, device))?.f_index_add(0, labels, &ones)?;
    let sums = Vec::<f64>::try_from(&sums.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
    let counts = Vec::<f64>::try_from(&counts.f_to_device(Device::Cpu)?)?;
    Ok(BatchStatistics::from_sums(num_classes, p, sums, counts)?)
}

/// Folding a batch of feature tensors into an estimator.
pub trait TensorUpdate {
    /// Computes the batch's statistics ([`batch_statistics`]) and folds them in; returns them
    /// for reuse (for example to update a second estimator with the same batch).
    fn update(&mut self, features: &Tensor, labels: &Tensor) -> Result<BatchStatistics>;
}

impl TensorUpdate for VmfEstimator {
    fn update(&mut self, features: &Tensor, labels: &Tensor) -> Result<BatchStatistics> {
        let stats = batch_statistics(features, labels, self.num_classes(), self.dim())?;
        self.apply(&stats)?;
        Ok(stats)
    }
}

impl TensorUpdate for EstimatorPair {
    /// Updates both estimators with one batch (statistics computed once).
    fn update(&mut self, features: &Tensor, labels: &Tensor) -> Result<BatchStatistics> {
        let stats = batch_statistics(features, labels, self.current().num_classes(), self.current().dim())?;
        self.apply(&stats)?;
        Ok(stats)
    }
}

/// The spread of the classes' concentrations in one estimator, as the metrics record it per
/// epoch: quantiles of kappa over classes (nearest rank) and how many classes lie past
/// nu^2 / 8 (nu = p/2 - 1), where the authors' Bessel recurrence starts to drift.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KappaDistribution {
    /// Smallest kappa.
    pub min: f64,
    /// 10th percentile.
    pub p10: f64,
    /// Median.
    pub median: f64,
    /// 90th percentile.
    pub p90: f64,
    /// Largest kappa.
    pub max: f64,
    /// Mean resultant length R of the median-kappa class (kappa = p R / (1 - R^2)).
    pub median_r: f64,
    /// nu^2 / 8 for this p.
    pub authors_drift_from: f64,
    /// Classes whose kappa exceeds `authors_drift_from`.
    pub classes_past_drift: usize,
}

impl KappaDistribution {
    /// The distribution over `estimator`'s classes (it always holds at least one class).
    pub fn of(estimator: &VmfEstimator) -> Self {
        let mut conc = estimator.concentrations();
        conc.sort_by(|a, b| a.kappa.total_cmp(&b.kappa));
        let at = |q: f64| conc[((q * (conc.len() - 1) as f64).round() as usize).min(conc.len() - 1)];
        let nu = estimator.dim() as f64 / 2.0 - 1.0;
        let drift = nu * nu / 8.0;
        Self {
            min: at(0.0).kappa,
            p10: at(0.1).kappa,
            median: at(0.5).kappa,
            p90: at(0.9).kappa,
            max: at(1.0).kappa,
            median_r: at(0.5).r,
            authors_drift_from: drift,
            classes_past_drift: conc.iter().filter(|c| c.kappa > drift).count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kappa_distribution_takes_nearest_rank_quantiles_over_classes() {
        // p = 8 (nu = 3, nu^2/8 = 1.125); class j has R so that kappa_j = j + 1, in shuffled order.
        let (p, kappas) = (8usize, [5.0, 1.0, 11.0, 3.0, 2.0, 9.0, 4.0, 7.0, 6.0, 10.0, 8.0]);
        let means: Vec<f64> = kappas
            .iter()
            .flat_map(|&k: &f64| {
                let r = 2.0 * k / (p as f64 + ((p * p) as f64 + 4.0 * k * k).sqrt());
                (0..p).map(move |i| if i == 0 { r } else { 0.0 })
            })
            .collect();
        let est = VmfEstimator::from_state(kappas.len(), p, means, vec![1.0; kappas.len()]).unwrap();
        let d = KappaDistribution::of(&est);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b;
        assert!(close(d.min, 1.0) && close(d.p10, 2.0) && close(d.median, 6.0) && close(d.p90, 10.0) && close(d.max, 11.0), "{d:?}");
        assert!(close(d.authors_drift_from, 1.125));
        assert_eq!(d.classes_past_drift, 10);
        assert!(close(p as f64 * d.median_r / (1.0 - d.median_r * d.median_r), 6.0));
    }
}
