//! Balanced contrastive learning (Zhu et al., CVPR 2022): SupCon over the batch's two
//! contrastive views plus one prototype per class (class-complement: every class is in every
//! batch), with each contrast sample's exp-similarity divided by the number of samples of its
//! class in the batch (class-averaging), so that head classes do not dominate the denominator.
//!
//! Anchors are the 2N view features; the contrast set is the 2N features and the C
//! prototypes (the classifier's class weights through their own projection head, see
//! [`crate::model::TwoBranchNet::prototypes`]). With b_c the count of class c
//! among those 2N + C samples and P(i) the anchor's positives (same class, i excluded),
//!
//! L_i = -1/|P(i)| sum_{p in P(i)} [s_ip - log sum_{a != i} exp(s_ia) / (b_{y_a} - [y_a = y_i])]
//!
//! with s_ia = z_i . z_a / tau, and the loss is the mean over the 2N anchors (every anchor has
//! its class's prototype as a positive).

use tch::{Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::validate;

/// The BCL loss at temperature tau.
#[derive(Debug, Clone)]
pub struct BclLoss {
    tau: f64,
}

impl BclLoss {
    /// BCL at temperature `tau` (finite and positive; BCL uses 0.07 to 0.1).
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for a temperature that is not finite and positive.
    pub fn new(tau: f64) -> Result<Self> {
        if !(tau.is_finite() && tau > 0.0) {
            return Err(ProcoError::InvalidConfig { reason: format!("BCL temperature {tau} must be finite and > 0") });
        }
        Ok(Self { tau })
    }

    /// Temperature tau.
    pub fn temperature(&self) -> f64 {
        self.tau
    }

    /// The mean loss of `views` (2N x p unit rows, view-major: the N samples of one view,
    /// then of the other) with `labels` (N int64) against `prototypes` (C x p unit rows, one
    /// per class in class order). Differentiable in the views and the prototypes.
    ///
    /// # Errors
    /// [`ProcoError::InvalidFeatures`] / [`ProcoError::InvalidLabels`] for non-unit or
    /// non-finite rows, mismatched shapes, an odd number of view rows, and bad labels;
    /// [`ProcoError::NonFiniteLoss`] for a non-finite result.
    pub fn loss(&self, views: &Tensor, labels: &Tensor, prototypes: &Tensor) -> Result<Tensor> {
        let bad = |reason: String| Err(ProcoError::InvalidFeatures { reason });
        let (vs, ps) = (views.size(), prototypes.size());
        if vs.len() != 2 || ps.len() != 2 || vs[1] != ps[1] {
            return bad(format!("BCL takes 2N x p view features and C x p prototypes, got {vs:?} and {ps:?}"));
        }
        let (p, c) = (vs[1] as usize, ps[0]);
        let k = validate::unit_features(views, p)?;
        validate::unit_features(prototypes, p)?;
        if k % 2 != 0 {
            return bad(format!("BCL takes two views of each sample: {k} rows is odd"));
        }
        let n = k / 2;
        validate::labels(labels, n, c as usize)?;
        let (kind, device) = (views.kind(), views.device());
        let targets = Tensor::f_cat(&[labels, labels, &Tensor::f_arange(c, (Kind::Int64, device))?], 0)?;
        // b_c: class counts among the 2N views and the C prototypes.
        let class_count = targets.f_bincount(None::<Tensor>, c)?.f_to_kind(kind)?;
        let not_self = Tensor::f_ones([k, k + c], (kind, device))?.f_scatter_value(1, &Tensor::f_arange(k, (Kind::Int64, device))?.f_unsqueeze(1)?, 0.0)?;
        let anchor_targets = targets.f_narrow(0, 0, k)?;
        let positive = anchor_targets.f_unsqueeze(1)?.f_eq_tensor(&targets.f_unsqueeze(0)?)?.f_to_kind(kind)?.f_mul(&not_self)?;
        let all = Tensor::f_cat(&[views, &prototypes.f_to_kind(kind)?], 0)?;
        let logits = views.f_matmul(&all.f_tr()?)?.f_div_scalar(self.tau)?;
        let (row_max, _) = logits.f_max_dim(1, true)?;
        let logits = logits.f_sub(&row_max.f_detach()?)?;
        let exp = logits.f_exp()?.f_mul(&not_self)?;
        // Class-averaging: each column's weight is its class's count, less the anchor itself
        // for the anchor's own class.
        let weight = class_count.f_index_select(0, &targets)?.f_unsqueeze(0)?.f_sub(&positive)?;
        let log_denominator = exp.f_div(&weight)?.f_sum_dim_intlist(1, true, None::<Kind>)?.f_log()?;
        let log_prob = logits.f_sub(&log_denominator)?;
        let per_anchor = positive.f_mul(&log_prob)?.f_sum_dim_intlist(1, false, None::<Kind>)?.f_div(&positive.f_sum_dim_intlist(1, false, None::<Kind>)?)?;
        let loss = per_anchor.f_mean(None::<Kind>)?.f_neg()?;
        let value = loss.f_double_value(&[])?;
        if !value.is_finite() {
            return Err(ProcoError::NonFiniteLoss { value });
        }
        Ok(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn unit(v: &[f64], rows: i64) -> Tensor {
        let t = Tensor::from_slice(v).view([rows, -1]);
        &t / t.norm_scalaropt_dim(2, [1i64].as_slice(), true)
    }

    #[test]
    fn two_samples_by_hand() {
        // N = 1: views a, b of a class-0 sample; prototypes of classes 0 and 1 in the plane.
        let views = unit(&[1.0, 0.0, 0.8, 0.6], 2);
        let protos = unit(&[0.0, 1.0, -1.0, 0.0], 2);
        let tau = 0.5;
        let got = BclLoss::new(tau).unwrap().loss(&views, &Tensor::from_slice(&[0i64]), &protos).unwrap().double_value(&[]);
        // Class counts among [a, b, proto0, proto1]: class 0 three, class 1 one. For anchor a
        // the class-0 columns (b, proto0) are weighted 1/(3 - 1), proto1 1/1.
        let dot = |x: [f64; 2], y: [f64; 2]| (x[0] * y[0] + x[1] * y[1]) / tau;
        let (a, b, p0, p1) = ([1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]);
        let anchor = |z: [f64; 2], other: [f64; 2]| {
            let den = (dot(z, other).exp() + dot(z, p0).exp()) / 2.0 + dot(z, p1).exp();
            -0.5 * ((dot(z, other) - den.ln()) + (dot(z, p0) - den.ln()))
        };
        let want = 0.5 * (anchor(a, b) + anchor(b, a));
        assert!((got - want).abs() < 1e-14, "{got} vs {want}");
    }

    #[test]
    fn bad_shapes_are_errors() {
        let loss = BclLoss::new(0.1).unwrap();
        let protos = unit(&[1.0, 0.0, 0.0, 1.0], 2);
        let y = Tensor::from_slice(&[0i64]);
        assert!(loss.loss(&unit(&[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3), &y, &protos).is_err(), "odd rows");
        assert!(loss.loss(&unit(&[1.0, 0.0, 0.0, 1.0], 2), &Tensor::from_slice(&[2i64]), &protos).is_err(), "label");
        assert!(loss.loss(&unit(&[1.0, 0.0, 0.0, 1.0], 2), &y, &Tensor::ones([2, 3], (Kind::Double, Device::Cpu))).is_err(), "dims");
        assert!(BclLoss::new(-1.0).is_err());
    }
}
