//! Logit-adjusted cross entropy (Menon et al. 2021): CE(logits + scale * log pi, y), where pi
//! is the training class prior. With scale 0 it is plain cross entropy.

use tch::{Kind, Tensor};

use crate::error::{ProcoError, Result};
use crate::validate;

/// log pi_j = log(n_j / sum n), the log training prior from per-class image counts.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPrior(Vec<f64>);

impl LogPrior {
    /// From per-class training counts. Every class needs at least one image (a class with none
    /// would get log 0 = -inf and could never be predicted).
    pub fn from_counts(counts: &[f64]) -> Result<Self> {
        if counts.is_empty() {
            return Err(ProcoError::InvalidConfig { reason: "no class counts given".into() });
        }
        if let Some((j, c)) = counts.iter().enumerate().find(|(_, c)| !(c.is_finite() && **c > 0.0)) {
            return Err(ProcoError::InvalidConfig {
                reason: format!("class {j} has count {c}; logit adjustment needs at least one training image per class"),
            });
        }
        let total: f64 = counts.iter().sum();
        Ok(Self(counts.iter().map(|c| (c / total).ln()).collect()))
    }

    /// The uniform prior (logit adjustment becomes a constant shift, i.e. plain CE).
    pub fn uniform(num_classes: usize) -> Result<Self> {
        Self::from_counts(&vec![1.0; num_classes])
    }

    /// log pi_j per class.
    pub fn values(&self) -> &[f64] {
        &self.0
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.0.len()
    }

    /// The prior as a 1 x C tensor of the given dtype and device, to add to N x C logits.
    pub fn to_tensor(&self, kind: Kind, device: tch::Device) -> Result<Tensor> {
        Ok(Tensor::f_from_slice(&self.0)?.f_to_device(device)?.f_to_kind(kind)?.f_unsqueeze(0)?)
    }
}

/// Cross entropy over logits shifted by `scale * log pi`.
#[derive(Debug, Clone)]
pub struct LogitAdjustedCe {
    log_prior: LogPrior,
    scale: f64,
}

impl LogitAdjustedCe {
    /// Logit adjustment with the usual scale 1 (what ProCo uses for both branches).
    pub fn new(log_prior: LogPrior) -> Self {
        Self { log_prior, scale: 1.0 }
    }

    /// Balanced Softmax (Ren et al. 2020): CE(logits + log n_j) for training counts n_j. It
    /// is logit adjustment with scale 1 (log n_j - log pi_j = log sum n is one constant
    /// across classes, which the softmax cancels), and is built as such.
    ///
    /// # Errors
    /// As [`LogPrior::from_counts`].
    pub fn balanced_softmax(counts: &[f64]) -> Result<Self> {
        Ok(Self::new(LogPrior::from_counts(counts)?))
    }

    /// Plain cross entropy over `num_classes` classes.
    pub fn plain(num_classes: usize) -> Result<Self> {
        Ok(Self { log_prior: LogPrior::uniform(num_classes)?, scale: 0.0 })
    }

    /// Sets the adjustment strength (tau in Menon et al.); must be finite.
    pub fn with_scale(mut self, scale: f64) -> Result<Self> {
        if !scale.is_finite() {
            return Err(ProcoError::InvalidConfig { reason: format!("logit-adjustment scale {scale} must be finite") });
        }
        self.scale = scale;
        Ok(self)
    }

    /// The prior in use.
    pub fn log_prior(&self) -> &LogPrior {
        &self.log_prior
    }

    /// Per-sample losses -log softmax(logits + scale log pi)[y] (N), in the logits' dtype.
    pub fn per_sample(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let size = logits.size();
        let c = self.log_prior.num_classes();
        if size.len() != 2 || size[1] != c as i64 {
            return Err(ProcoError::InvalidConfig { reason: format!("logits have shape {size:?}; expected [N, {c}]") });
        }
        validate::labels(labels, size[0], c)?;
        let shift = self.log_prior.to_tensor(logits.kind(), logits.device())?.f_mul_scalar(self.scale)?;
        let log_p = logits.f_add(&shift)?.f_log_softmax(-1, None::<Kind>)?;
        Ok(log_p.f_gather(1, &labels.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?.f_neg()?)
    }

    /// Mean loss over the batch (a scalar tensor that autograd can differentiate).
    pub fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        Ok(self.per_sample(logits, labels)?.f_mean(None::<Kind>)?)
    }
}
