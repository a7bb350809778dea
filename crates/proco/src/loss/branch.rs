//! The ProCo branch of a training step as one type: the feature and label checks, the
//! estimator updates with both contrastive views, the contrast logits and their
//! logit-adjusted CE, and the exact gradient. The trainer, `proco bench` and the examples all
//! run this one piece of code.

use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::estimator::{BatchStatistics, EstimatorPair};
use crate::loss::{BesselRoute, HostBatch, HostGradient, LogPrior, LogitAdjustedCe, ProCoLoss};
use crate::validate::{self, FeatureRows};

/// The result of [`ProCoBranch::forward`].
pub struct BranchOutput {
    /// Mean ProCo loss of the two contrastive views, a scalar differentiable in the features.
    pub loss: Tensor,
    /// The mean of the two views' contrast logits, N x C row-major, on the host (for the
    /// training accuracy).
    pub mean_logits: Vec<f64>,
}

/// Wall time of the phases of one host-pass [`ProCoBranch::forward`] (for profiling; the
/// device route leaves it untouched).
#[derive(Debug, Clone, Copy, Default)]
pub struct BranchPhases {
    /// Features to the host, checks, per-class sums of both views.
    pub statistics: Duration,
    /// Estimator updates, the two views' host pass (logits, loss, gradient).
    pub host_pass: Duration,
    /// Handing the gradient to autograd.
    pub attach: Duration,
}

/// Combines the estimator statistics of a step across processes before they are applied:
/// data-parallel training sums every rank's (see
/// [`crate::distributed::Distributed::all_reduce_statistics`]); a single process leaves them.
/// Called once per step with the statistics of views 2 and 3.
pub type StatisticsReducer<'a> = dyn FnMut(&mut [&mut BatchStatistics]) -> Result<()> + 'a;

/// ProCo's contrastive branch: the ProCo loss (p, tau) scored by logit-adjusted CE under the
/// training prior.
#[derive(Debug, Clone)]
pub struct ProCoBranch {
    loss: ProCoLoss,
    ce: LogitAdjustedCe,
}

impl ProCoBranch {
    /// The branch for features of dimension `p`, temperature `tau`, and the training prior.
    ///
    /// # Errors
    /// As [`ProCoLoss::new`] for p < 2 or a temperature that is not finite and positive.
    pub fn new(p: usize, tau: f64, prior: LogPrior) -> Result<Self> {
        Ok(Self { loss: ProCoLoss::new(p, tau)?, ce: LogitAdjustedCe::new(prior) })
    }

    /// The branch with the Bessel numerics `route` (exact by default).
    pub fn with_route(mut self, route: BesselRoute) -> Self {
        self.loss = self.loss.with_route(route);
        self
    }

    /// The ProCo loss.
    pub fn proco_loss(&self) -> &ProCoLoss {
        &self.loss
    }

    /// The branch of a step. `z` holds the unit features of the three views stacked
    /// view-major (3N x p, f32 or f64, any device), `y` the N labels. For view 2, then view
    /// 3: both estimators are updated with the view's features, then its contrast logits are
    /// taken against the previous-epoch estimator and scored by logit-adjusted CE. View 1 is
    /// the classifier's and gets a zero gradient.
    ///
    /// Up to [`ProCoLoss::uses_host_pass`], views 2 and 3 travel to the host once, where the
    /// estimator updates, logits, losses and the exact gradient are computed (the two views
    /// side by side on LibTorch's OpenMP threads); the gradient re-enters autograd as one
    /// tensor for all of `z`. Larger problems run on the device through autograd.
    ///
    /// # Errors
    /// [`crate::ProcoError::InvalidFeatures`] / [`crate::ProcoError::InvalidLabels`] for
    /// non-unit or non-finite features and bad labels, before any estimator changes.
    pub fn forward(&self, z: &Tensor, y: &Tensor, estimators: &mut EstimatorPair) -> Result<BranchOutput> {
        self.forward_with_phases(z, y, estimators, &mut BranchPhases::default())
    }

    /// [`Self::forward`], adding the time of its phases to `phases`.
    pub fn forward_with_phases(&self, z: &Tensor, y: &Tensor, estimators: &mut EstimatorPair, phases: &mut BranchPhases) -> Result<BranchOutput> {
        self.forward_reduced(z, y, estimators, phases, &mut |_| Ok(()))
    }

    /// [`Self::forward_with_phases`] with the statistics of views 2 and 3 passed through
    /// `reduce` before the estimators take them (data-parallel training: the union batch's
    /// statistics on every rank).
    pub fn forward_reduced(&self, z: &Tensor, y: &Tensor, estimators: &mut EstimatorPair, phases: &mut BranchPhases, reduce: &mut StatisticsReducer<'_>) -> Result<BranchOutput> {
        let n = y.size().first().copied().unwrap_or(0);
        let p = self.loss.dim();
        let num_classes = estimators.previous().num_classes();
        if !self.loss.uses_host_pass(n.max(0) as usize, num_classes) {
            return self.forward_on_device(z, y, estimators, reduce);
        }
        let t0 = Instant::now();
        let views = z.f_narrow(0, n, 2 * n)?;
        // SAFETY: `host` lives only inside this call, which writes no tensor but the gradient
        // (a tensor of its own) and runs no caller code while the view is alive.
        let host = unsafe { validate::features_on_host(&views, p) }?;
        let labels = validate::labels(y, n, num_classes)?;
        // Each view is checked and summed by class side by side; each view's loss uses the
        // estimator as updated with that view; the two losses then run side by side.
        let (first, second) = host.rows().split_at(n as usize * p);
        let kind = views.kind();
        let statistics = |rows: FeatureRows<'_>| -> Result<BatchStatistics> {
            validate::unit_rows(rows, p, kind)?;
            Ok(BatchStatistics::from_rows(rows, &labels, num_classes, p)?)
        };
        let (first_stats, second_stats) = crate::openmp::join(|| statistics(first), || statistics(second));
        let (mut first_stats, mut second_stats) = (first_stats?, second_stats?);
        reduce(&mut [&mut first_stats, &mut second_stats])?;
        let t1 = Instant::now();
        let mut grad = HostGradient::for_features(z)?;
        grad.push_zeros(n as usize * p)?;
        estimators.apply(&first_stats)?;
        let after_first = estimators.previous().clone();
        estimators.apply(&second_stats)?;
        let outs = self.loss.host_losses(
            HostBatch { features: first, labels: &labels, estimator: &after_first },
            HostBatch { features: second, labels: &labels, estimator: estimators.previous() },
            self.ce.log_prior(),
            &mut grad,
            0.5,
        )?;
        let mut loss = 0.0;
        let mut mean_logits = vec![0.0; n as usize * num_classes];
        for out in &outs {
            loss += 0.5 * out.loss;
            mean_logits.iter_mut().zip(&out.logits).for_each(|(m, s)| *m += 0.5 * s);
        }
        let t2 = Instant::now();
        let loss = grad.attach(z, loss)?;
        let t3 = Instant::now();
        phases.statistics += t1 - t0;
        phases.host_pass += t2 - t1;
        phases.attach += t3 - t2;
        Ok(BranchOutput { loss, mean_logits })
    }

    /// [`Self::forward`] for batches too large for the host pass: per view, the estimator
    /// statistics on the device, the contrast logits through [`ProCoLoss::contrast_logits`]
    /// and autograd.
    fn forward_on_device(&self, z: &Tensor, y: &Tensor, estimators: &mut EstimatorPair, reduce: &mut StatisticsReducer<'_>) -> Result<BranchOutput> {
        let n = y.size().first().copied().unwrap_or(0);
        let (p, num_classes) = (self.loss.dim(), estimators.previous().num_classes());
        let stats = |v: i64| crate::estimator::batch_statistics(&z.f_narrow(0, v * n, n)?.detach(), y, num_classes, p);
        let (mut second, mut third) = (stats(1)?, stats(2)?);
        reduce(&mut [&mut second, &mut third])?;
        let mut view = |v: i64, stats: &BatchStatistics| -> Result<(Tensor, Tensor)> {
            let zv = z.f_narrow(0, v * n, n)?;
            estimators.apply(stats)?;
            let s = self.loss.contrast_logits(&zv, estimators.previous())?;
            Ok((self.ce.loss(&s.logits, y)?, s.logits.detach()))
        };
        let (loss2, logits2) = view(1, &second)?;
        let (loss3, logits3) = view(2, &third)?;
        let mean = ((logits2 + logits3) / 2.0).f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?;
        Ok(BranchOutput { loss: (loss2 + loss3) / 2.0, mean_logits: Vec::<f64>::try_from(&mean)? })
    }
}
