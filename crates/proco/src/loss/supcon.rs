//! Supervised contrastive loss (Khosla et al., NeurIPS 2020) over the pairs a batch holds,
//! optionally with extra contrast samples (a memory queue, or features drawn from a
//! distribution): the baseline ProCo replaces by its infinite-pair closed form.
//!
//! For anchor i with positives P(i) (same label, i itself excluded) and contrast set A(i)
//! (every sample but i), s_ia = z_i . z_a / tau:
//!
//! - [`Positives::MeanOfLogs`] (Khosla's L_out, the one they recommend and that SupCon and BCL
//!   train with): L_i = -1/|P(i)| sum_{p in P(i)} [s_ip - log sum_{a in A(i)} exp s_ia];
//! - [`Positives::LogOfMean`] (L_in): L_i = -log[1/|P(i)| sum_{p in P(i)} exp s_ip]
//!   + log sum_{a in A(i)} exp s_ia. Against a contrast set with n_j samples of class j in
//!   proportion to the prior, L_in - log |P(i)| tends to the ProCo loss as the samples grow
//!   (`tests/supcon_monte_carlo.rs`).
//!
//! The loss is the mean of L_i over the anchors that have a positive; Khosla's
//! `temperature / base_temperature` factor is 1 here (their default, 0.07 / 0.07).

use tch::{Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::validate;

/// How an anchor's positives enter its loss (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Positives {
    /// Khosla's L_out: the mean over positives of the log-probabilities.
    #[default]
    MeanOfLogs,
    /// Khosla's L_in: the log of the mean positive probability.
    LogOfMean,
}

/// Supervised contrastive loss at temperature tau.
#[derive(Debug, Clone)]
pub struct SupConLoss {
    tau: f64,
    positives: Positives,
}

/// Extra contrast samples beside a batch's own: unit rows that are never anchors and get no
/// gradient (a queue of earlier batches' features, or samples of a distribution).
#[derive(Debug, Clone, Copy)]
pub struct ContrastSet<'a> {
    /// M x p unit features.
    pub features: &'a Tensor,
    /// M int64 class indices.
    pub labels: &'a Tensor,
}

impl SupConLoss {
    /// SupCon at temperature `tau` (finite and positive; SupCon uses 0.07 to 0.1), with
    /// Khosla's recommended [`Positives::MeanOfLogs`].
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for a temperature that is not finite and positive.
    pub fn new(tau: f64) -> Result<Self> {
        if !(tau.is_finite() && tau > 0.0) {
            return Err(ProcoError::InvalidConfig { reason: format!("SupCon temperature {tau} must be finite and > 0") });
        }
        Ok(Self { tau, positives: Positives::MeanOfLogs })
    }

    /// Chooses how positives enter the loss.
    pub fn with_positives(mut self, positives: Positives) -> Self {
        self.positives = positives;
        self
    }

    /// Temperature tau.
    pub fn temperature(&self) -> f64 {
        self.tau
    }

    /// The per-anchor losses L_i (K) of `features` (K x p unit rows, every row an anchor and a
    /// contrast sample of the others) with `labels` (K int64 below `num_classes`), against
    /// the batch and `extra`; anchors without a positive get NaN. Differentiable in
    /// `features`.
    ///
    /// # Errors
    /// [`ProcoError::InvalidFeatures`] / [`ProcoError::InvalidLabels`] for non-unit or
    /// non-finite rows, a dimension mismatch, and bad labels.
    pub fn per_anchor(&self, features: &Tensor, labels: &Tensor, num_classes: usize, extra: Option<ContrastSet<'_>>) -> Result<Tensor> {
        let size = features.size();
        let p = match size.as_slice() {
            [_, p] => *p as usize,
            _ => return Err(ProcoError::InvalidFeatures { reason: format!("expected K x p features, got shape {size:?}") }),
        };
        let k = validate::unit_features(features, p)?;
        validate::labels(labels, k, num_classes)?;
        let (all, all_labels) = match extra {
            Some(set) => {
                let m = validate::unit_features(set.features, p)?;
                validate::labels(set.labels, m, num_classes)?;
                let extra = set.features.f_detach()?.f_to_kind(features.kind())?.f_to_device(features.device())?;
                (Tensor::f_cat(&[features, &extra], 0)?, Tensor::f_cat(&[labels, &set.labels.f_to_device(labels.device())?], 0)?)
            }
            None => (features.shallow_clone(), labels.shallow_clone()),
        };
        let total = all.size()[0];
        let opts = (features.kind(), features.device());
        // Every column but the anchor's own.
        let not_self = Tensor::f_ones([k, total], opts)?.f_scatter_value(1, &Tensor::f_arange(k, (Kind::Int64, features.device()))?.f_unsqueeze(1)?, 0.0)?;
        let positive = labels.f_unsqueeze(1)?.f_eq_tensor(&all_labels.f_unsqueeze(0)?)?.f_to_kind(features.kind())?.f_mul(&not_self)?;
        let logits = features.f_matmul(&all.f_tr()?)?.f_div_scalar(self.tau)?;
        // Shifted by the row maximum for stability (a constant: the loss does not change).
        let (row_max, _) = logits.f_max_dim(1, true)?;
        let logits = logits.f_sub(&row_max.f_detach()?)?;
        let exp = logits.f_exp()?.f_mul(&not_self)?;
        let log_denominator = exp.f_sum_dim_intlist(1, false, None::<Kind>)?.f_log()?;
        let n_pos = positive.f_sum_dim_intlist(1, false, None::<Kind>)?;
        // An anchor without a positive is masked below; dividing it by 1 instead of 0 keeps
        // NaN out of the gradient that flows through the mask.
        let divisor = n_pos.f_clamp_min(1.0)?;
        let per_anchor = match self.positives {
            Positives::MeanOfLogs => positive.f_mul(&logits)?.f_sum_dim_intlist(1, false, None::<Kind>)?.f_div(&divisor)?.f_sub(&log_denominator)?.f_neg()?,
            Positives::LogOfMean => {
                let mean_positive = exp.f_mul(&positive)?.f_sum_dim_intlist(1, false, None::<Kind>)?.f_div(&divisor)?;
                // log(0) for the masked anchors only.
                mean_positive.f_where_scalarother(&n_pos.f_gt(0.0)?, 1.0)?.f_log()?.f_sub(&log_denominator)?.f_neg()?
            }
        };
        // No positive: 0/0 above; NaN marks the anchor as one the mean leaves out.
        Ok(per_anchor.f_where_self(&n_pos.f_gt(0.0)?, &Tensor::f_full([k], f64::NAN, opts)?)?)
    }

    /// The mean of [`Self::per_anchor`] over the anchors that have a positive (0 if none has).
    ///
    /// # Errors
    /// As [`Self::per_anchor`], and [`ProcoError::NonFiniteLoss`] for a non-finite mean.
    pub fn loss(&self, features: &Tensor, labels: &Tensor, num_classes: usize, extra: Option<ContrastSet<'_>>) -> Result<Tensor> {
        let per_anchor = self.per_anchor(features, labels, num_classes, extra)?;
        mean_over_defined(&per_anchor)
    }
}

/// The mean of the non-NaN entries of `v` (0 when there are none), differentiable.
pub(crate) fn mean_over_defined(v: &Tensor) -> Result<Tensor> {
    let defined = v.f_isnan()?.f_logical_not()?;
    let count = defined.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    let total = v.f_where_scalarother(&defined, 0.0)?.f_sum(None::<Kind>)?;
    let mean = total.f_div_scalar(count.max(1) as f64)?;
    let value = mean.f_double_value(&[])?;
    if !value.is_finite() {
        return Err(ProcoError::NonFiniteLoss { value });
    }
    Ok(mean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn unit_rows(k: i64, p: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let z = Tensor::randn([k, p], (Kind::Double, Device::Cpu));
        &z / z.norm_scalaropt_dim(2, [1i64].as_slice(), true)
    }

    #[test]
    fn one_anchor_by_hand() {
        // Three samples in the plane: anchor 0 (class 0), a positive (class 0), a negative.
        let z = Tensor::from_slice(&[1.0, 0.0, 0.6, 0.8, 0.0, -1.0]).view([3, 2]);
        let y = Tensor::from_slice(&[0i64, 0, 1]);
        let l = SupConLoss::new(0.5).unwrap().per_anchor(&z, &y, 2, None).unwrap();
        let got = Vec::<f64>::try_from(&l).unwrap();
        let (s_pos, s_neg) = (0.6 / 0.5, 0.0 / 0.5);
        let want = -(s_pos - (f64::exp(s_pos) + f64::exp(s_neg)).ln());
        assert!((got[0] - want).abs() < 1e-14, "{} vs {want}", got[0]);
        // The class-1 sample has no positive.
        assert!(got[2].is_nan());
        // With one positive per anchor both variants agree.
        let l_in = SupConLoss::new(0.5).unwrap().with_positives(Positives::LogOfMean).per_anchor(&z, &y, 2, None).unwrap();
        assert!((Vec::<f64>::try_from(&l_in).unwrap()[0] - want).abs() < 1e-14);
    }

    #[test]
    fn an_anchor_without_a_positive_leaves_the_gradient_finite() {
        // Class 2 has one sample: its anchor is left out, and its row must not put NaN into
        // the gradient through the mask.
        for positives in [Positives::MeanOfLogs, Positives::LogOfMean] {
            let z = unit_rows(5, 3, 4).set_requires_grad(true);
            let y = Tensor::from_slice(&[0i64, 1, 0, 1, 2]);
            let loss = SupConLoss::new(0.2).unwrap().with_positives(positives).loss(&z, &y, 3, None).unwrap();
            loss.backward();
            let g = Vec::<f64>::try_from(&z.grad().flatten(0, -1)).unwrap();
            assert!(g.iter().all(|v| v.is_finite()), "{positives:?}: {g:?}");
            assert!(g.iter().any(|v| *v != 0.0));
        }
    }

    #[test]
    fn extra_samples_join_the_contrast_set_without_gradient() {
        let z = unit_rows(6, 4, 1).set_requires_grad(true);
        let y = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2]);
        let q = unit_rows(5, 4, 2).set_requires_grad(true);
        let qy = Tensor::from_slice(&[0i64, 0, 1, 2, 2]);
        let loss = SupConLoss::new(0.1).unwrap();
        let with = loss.loss(&z, &y, 3, Some(ContrastSet { features: &q, labels: &qy })).unwrap();
        let without = loss.loss(&z, &y, 3, None).unwrap();
        assert!((with.double_value(&[]) - without.double_value(&[])).abs() > 1e-6);
        with.backward();
        assert!(z.grad().abs().sum(Kind::Double).double_value(&[]) > 0.0);
        assert!(!q.grad().defined() || q.grad().abs().sum(Kind::Double).double_value(&[]) == 0.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        let loss = SupConLoss::new(0.1).unwrap();
        let z = unit_rows(4, 3, 3);
        assert!(loss.loss(&z, &Tensor::from_slice(&[0i64, 1, 2, 3]), 3, None).is_err(), "label out of range");
        assert!(loss.loss(&(&z * 2.0), &Tensor::from_slice(&[0i64, 1, 2, 0]), 3, None).is_err(), "not unit");
        assert!(loss.loss(&z, &Tensor::from_slice(&[0i64, 1]), 3, None).is_err(), "label count");
        assert!(SupConLoss::new(0.0).is_err() && SupConLoss::new(f64::NAN).is_err());
        // No anchor with a positive: 0, not NaN.
        let v = loss.loss(&z.narrow(0, 0, 3), &Tensor::from_slice(&[0i64, 1, 2]), 3, None).unwrap();
        assert_eq!(v.double_value(&[]), 0.0);
    }
}
