//! The ProCo training loop: two branches on one backbone, loss = CE + alpha * ProCo, with
//! evaluation every epoch, metrics (JSON lines, TensorBoard), atomic checkpoints and resume.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

use crate::data::Dataset;
use crate::distributed::{Backend, Distributed, ReduceOp, WorldSpec};
use crate::error::{ProcoError, Result};
use crate::estimator::EstimatorPair;
use crate::train::loss_state::LossState;
use crate::loader::{Loader, LoaderConfig, SampleTransform, Shard};
use crate::loss::{BclLoss, ClassifierLoss, ContrastiveLoss, FeatureQueue, LogPrior, LogitAdjustedCe, ProCoBranch, SupConLoss};
use crate::model::TwoBranchNet;
use crate::train::accuracy::{shot_accuracy, ShotAccuracy};
use crate::calibration::{Calibration, ConfusionMatrix};
use crate::train::checkpoint::{self, BestEpoch, TrainState};
use crate::train::events::{JsonlLog, TensorBoardWriter};
use crate::train::recipe::{Recipe, Stage, Stages};
use crate::train::run_data::RunData;
use crate::train::sgd::Sgd;
use crate::validate;

/// Where and how a run executes (not part of the recipe: it does not change the result).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run directory (recipe, metrics, checkpoints, plots).
    pub run_dir: PathBuf,
    /// Compute device.
    pub device: Device,
    /// Run only the epochs before this one (the schedule stays the full recipe's).
    pub stop_after: Option<usize>,
    /// Continue the run in `run_dir` from its latest checkpoint.
    pub resume: bool,
    /// Batch size of evaluation.
    pub eval_batch_size: usize,
    /// Data-parallel training: this process's place in the job (see [`WorldSpec::from_env`]);
    /// `None` trains in this process alone.
    pub world: Option<WorldSpec>,
    /// How long a collective of data-parallel training waits for the other ranks before the
    /// run fails naming the rank at fault (also the rendezvous timeout).
    pub collective_timeout: Duration,
}

impl RunOptions {
    /// One process on `device`, writing to `run_dir`: no stop, no resume, evaluation batch
    /// 512, a 5-minute collective timeout for when `world` is set.
    pub fn new(run_dir: impl Into<PathBuf>, device: Device) -> Self {
        Self { run_dir: run_dir.into(), device, stop_after: None, resume: false, eval_batch_size: 512, world: None, collective_timeout: Duration::from_secs(300) }
    }
}

/// What the loop reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// An epoch starts.
    EpochStart {
        /// 0-based epoch.
        epoch: usize,
        /// Its learning rate.
        lr: f64,
        /// Batches in it.
        batches: usize,
    },
    /// A training step finished.
    Step {
        /// 0-based step within the epoch.
        step: usize,
        /// Running mean CE loss of the epoch.
        ce_loss: f64,
        /// Running mean loss of the contrastive branch.
        proco_loss: f64,
        /// Running training accuracy, percent (see [`StepOutcome::correct`]); NaN where the step has no prediction.
        accuracy: f64,
        /// Images per second over the epoch so far.
        images_per_sec: f64,
    },
    /// An epoch ended and was evaluated and saved.
    EpochEnd(EpochRecord),
}

/// One epoch's results, as written to `metrics.jsonl`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// The epoch's stage: `joint` (one-stage training), or two-stage `representation` (the
    /// contrastive loss alone; no evaluation) or `linear` (the classifier on the frozen
    /// backbone; the contrastive loss is 0).
    pub stage: Stage,
    /// Learning rate.
    pub lr: f64,
    /// Mean classifier loss over the epoch's batches (0 in a representation stage).
    pub ce_loss_train: f64,
    /// Mean loss of the contrastive branch (ProCo, SupCon or BCL; 0 without one), under
    /// the ProCo name that metrics readers know.
    pub proco_loss_train: f64,
    /// Training accuracy, percent (absent where the step has no prediction: SupCon's and
    /// BCL's representation stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_top1: Option<f64>,
    /// Logit-adjusted CE of the classifier on the selection split (absent in a
    /// representation stage, which is not evaluated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ce_loss_val: Option<f64>,
    /// Accuracies on the split that selects the best epoch: val where the data has one, else
    /// test (CIFAR, as the authors' code does). Absent in a representation stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val: Option<ShotAccuracy>,
    /// Expected calibration error of the classifier on the selecting split, percent
    /// ([`ECE_BINS`] equal-width bins of the max softmax probability).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_ece: Option<f64>,
    /// Test accuracies, where a test split exists beside the selecting val split.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<ShotAccuracy>,
    /// Wall time of training + evaluation, seconds.
    pub seconds: f64,
    /// Training images per second (of every rank together).
    pub images_per_sec: f64,
    /// Data-parallel training: the epoch's training steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// Data-parallel training: seconds rank 0 spent in collectives over the epoch, waiting
    /// for slower ranks included (evaluation's gathers too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collective_seconds: Option<f64>,
    /// Data-parallel training: of these, the gradient all-reduce of the training steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gradient_allreduce_seconds: Option<f64>,
    /// ProCo: the spread of kappa over classes at the epoch's end, in the estimator the loss
    /// uses (the previous epoch's statistics plus this one's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kappa: Option<crate::estimator::KappaDistribution>,
}

/// The outcome of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// Every epoch run in this call.
    pub epochs: Vec<EpochRecord>,
    /// Best epoch of the whole run.
    pub best: Option<BestEpoch>,
}


/// The generator of the fresh estimator at the start of `epoch`.
fn estimator_rng(seed: u64, epoch: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0xe571_u64.wrapping_mul(epoch as u64 + 1))
}

/// Evaluates the classifier on `test`: accuracies and logit-adjusted CE.
pub fn evaluate(
    net: &TwoBranchNet,
    test: Arc<dyn Dataset>,
    transform: Arc<dyn SampleTransform>,
    class_counts: &[usize],
    batch_size: usize,
    threads: usize,
    reduced_decode: bool,
) -> Result<(ShotAccuracy, f64)> {
    evaluate_sharded(net, test, transform, class_counts, batch_size, threads, reduced_decode, None)
}

/// [`evaluate`], with `dist` splitting every batch over the ranks and gathering the
/// predictions and losses: every rank returns the figures of the whole split.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_sharded(
    net: &TwoBranchNet,
    test: Arc<dyn Dataset>,
    transform: Arc<dyn SampleTransform>,
    class_counts: &[usize],
    batch_size: usize,
    threads: usize,
    reduced_decode: bool,
    dist: Option<&mut Distributed>,
) -> Result<(ShotAccuracy, f64)> {
    let e = evaluate_detailed(net, test, transform, class_counts, batch_size, threads, reduced_decode, dist)?;
    Ok((e.accuracy, e.ce_loss))
}

/// Everything one evaluation of the classifier gives.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Top-1 and shot-group accuracies.
    pub accuracy: ShotAccuracy,
    /// Mean logit-adjusted CE.
    pub ce_loss: f64,
    /// Predicted class of every sample, in dataset order.
    pub predictions: Vec<usize>,
    /// Label of every sample.
    pub labels: Vec<usize>,
    /// Max softmax probability of the classifier logits, per sample (in [0, 1]).
    pub confidences: Vec<f64>,
}

/// Number of confidence bins of the expected calibration error, as LT papers report it.
pub const ECE_BINS: usize = 15;

impl Evaluation {
    /// Calibration over [`ECE_BINS`] bins.
    ///
    /// # Errors
    /// Never for an evaluation built here (confidences are probabilities).
    pub fn calibration(&self) -> Result<Calibration> {
        let correct: Vec<bool> = self.predictions.iter().zip(&self.labels).map(|(p, y)| p == y).collect();
        Calibration::from_predictions(&self.confidences, &correct, ECE_BINS)
    }

    /// The confusion matrix over `num_classes`.
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] when a label or prediction is out of range.
    pub fn confusion(&self, num_classes: usize) -> Result<ConfusionMatrix> {
        ConfusionMatrix::new(&self.predictions, &self.labels, num_classes)
    }
}

/// [`evaluate_sharded`] with every sample's prediction and confidence kept: for
/// calibration, confusion matrices and per-class figures.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_detailed(
    net: &TwoBranchNet,
    test: Arc<dyn Dataset>,
    transform: Arc<dyn SampleTransform>,
    class_counts: &[usize],
    batch_size: usize,
    threads: usize,
    reduced_decode: bool,
    dist: Option<&mut Distributed>,
) -> Result<Evaluation> {
    let device = net.vs.device();
    let total = test.len();
    let shard = dist.as_ref().map_or(Shard::WHOLE, |d| Shard { rank: d.rank(), world: d.world_size() });
    let config = LoaderConfig { batch_size, drop_last: false, shuffle: false, seed: 0, threads, prefetch: 2, reduced_decode, shard };
    let loader = Loader::new(test.clone(), transform, config)?;
    let counts: Vec<f64> = class_counts.iter().map(|&c| c as f64).collect();
    let ce = LogitAdjustedCe::new(LogPrior::from_counts(&counts)?);
    // Prediction + 1 at each evaluated sample's index (0: another rank's), its confidence,
    // and the loss sum.
    let (mut slots, mut confidences, mut loss_sum) = (vec![0i64; total], vec![0.0f64; total], 0.0);
    let _guard = tch::no_grad_guard();
    for batch in loader.epoch(0) {
        let batch = batch?;
        let k = batch.indices.len();
        if k == 0 {
            continue;
        }
        let x = batch.views.f_select(0, 0)?.f_to_device(device)?;
        let y = batch.labels.f_to_device(device)?;
        let logits = net.logits(&x)?;
        loss_sum += ce.loss(&logits, &y)?.f_double_value(&[])? * k as f64;
        let (top, preds) = logits.f_to_kind(Kind::Double)?.f_softmax(-1, Kind::Double)?.f_max_dim(-1, false)?;
        let preds = Vec::<i64>::try_from(&preds.f_to_device(Device::Cpu)?)?;
        let top = Vec::<f64>::try_from(&top.f_to_device(Device::Cpu)?)?;
        for ((&i, p), c) in batch.indices.iter().zip(preds).zip(top) {
            slots[i] = p + 1;
            confidences[i] = c;
        }
    }
    if let Some(d) = dist {
        d.all_reduce_values(&mut slots, ReduceOp::Sum)?;
        d.all_reduce_values(&mut confidences, ReduceOp::Sum)?;
        let mut loss = [loss_sum];
        d.all_reduce_values(&mut loss, ReduceOp::Sum)?;
        loss_sum = loss[0];
    }
    let missing = slots.iter().filter(|&&p| p <= 0).count();
    if missing > 0 {
        return Err(ProcoError::InvalidConfig { reason: format!("{missing} of {total} evaluation samples got no prediction") });
    }
    let predictions: Vec<usize> = slots.iter().map(|&p| (p - 1) as usize).collect();
    let labels: Vec<usize> = (0..total).map(|i| test.label(i)).collect();
    // Rounding can put a softmax maximum a hair above 1.
    let confidences = confidences.into_iter().map(|c| c.clamp(0.0, 1.0)).collect();
    Ok(Evaluation { accuracy: shot_accuracy(&predictions, &labels, class_counts), ce_loss: loss_sum / total.max(1) as f64, predictions, labels, confidences })
}

/// The loss of a training step: the classifier loss on view 1 plus alpha times the
/// contrastive loss on views 2 and 3: ProCo (logit-adjusted CE over contrast logits, averaged
/// over the two views, with the estimator updates), SupCon or BCL over both views, or none.
#[derive(Debug, Clone)]
pub struct Objective {
    ce: LogitAdjustedCe,
    contrastive: Contrastive,
    alpha: f64,
    num_classes: usize,
    /// Two-stage: the first epoch of the linear stage.
    linear_from: Option<usize>,
}

/// The contrastive branch of an [`Objective`].
#[derive(Debug, Clone)]
enum Contrastive {
    ProCo(ProCoBranch),
    SupCon(SupConLoss),
    Bcl(BclLoss),
    None,
}

impl Objective {
    /// The objective of `recipe` for a training set with `class_counts` images per class.
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for a class without images (the prior needs every
    /// class) and for loss settings out of range.
    pub fn new(recipe: &Recipe, class_counts: &[usize]) -> Result<Self> {
        let counts: Vec<f64> = class_counts.iter().map(|&c| c as f64).collect();
        let prior = LogPrior::from_counts(&counts)?;
        let ce = match recipe.classifier_loss {
            ClassifierLoss::Ce => LogitAdjustedCe::plain(counts.len())?,
            ClassifierLoss::LogitAdjusted => LogitAdjustedCe::new(prior.clone()),
            ClassifierLoss::BalancedSoftmax => LogitAdjustedCe::balanced_softmax(&counts)?,
        };
        let contrastive = match recipe.contrastive_loss {
            ContrastiveLoss::Proco => Contrastive::ProCo(ProCoBranch::new(recipe.feature_dim, recipe.temperature, prior)?.with_route(recipe.bessel)),
            ContrastiveLoss::Supcon => Contrastive::SupCon(SupConLoss::new(recipe.temperature)?),
            ContrastiveLoss::Bcl => Contrastive::Bcl(BclLoss::new(recipe.temperature)?),
            ContrastiveLoss::None => Contrastive::None,
        };
        Ok(Self { ce, contrastive, alpha: recipe.alpha, num_classes: counts.len(), linear_from: (recipe.stages == Stages::Two).then_some(recipe.epochs) })
    }

    /// The stage of `epoch` (see [`Recipe::stage_of`]).
    pub fn stage_at(&self, epoch: usize) -> Stage {
        match self.linear_from {
            None => Stage::Joint,
            Some(l) if epoch < l => Stage::Representation,
            Some(_) => Stage::Linear,
        }
    }

    /// The ProCo branch, if the contrastive loss is ProCo's.
    pub fn branch(&self) -> Option<&ProCoBranch> {
        match &self.contrastive {
            Contrastive::ProCo(b) => Some(b),
            _ => None,
        }
    }

    /// Whether the step updates the vMF estimators (ProCo only).
    pub fn uses_estimators(&self) -> bool {
        matches!(self.contrastive, Contrastive::ProCo(_))
    }

    /// The contrastive loss of a step's features `z` (3N x p, view-major) with labels `y`:
    /// the loss, and ProCo's mean contrast logits (N x C) for the training prediction.
    fn contrastive_loss(&self, net: &TwoBranchNet, z: &Tensor, y: &Tensor, state: &mut LossState, dist: Option<&mut Distributed>) -> Result<(Tensor, Option<Vec<f64>>)> {
        let n = y.size().first().copied().unwrap_or(0);
        match &self.contrastive {
            Contrastive::ProCo(branch) => {
                let estimators = &mut state.estimators;
                let out = match dist {
                    Some(d) => branch.forward_reduced(z, y, estimators, &mut Default::default(), &mut |stats| d.all_reduce_statistics(stats))?,
                    None => branch.forward(z, y, estimators)?,
                };
                Ok((out.loss, Some(out.mean_logits)))
            }
            Contrastive::SupCon(loss) => {
                let views = z.f_narrow(0, n, 2 * n)?;
                let labels = Tensor::f_cat(&[y, y], 0)?;
                let value = loss.loss(&views, &labels, self.num_classes, state.queue.as_ref().and_then(FeatureQueue::contrast_set))?;
                // This step's views join the queue after its loss: the next steps meet them.
                if let Some(queue) = state.queue.as_mut() {
                    queue.push(&views, &labels)?;
                }
                Ok((value, None))
            }
            Contrastive::Bcl(loss) => Ok((loss.loss(&z.f_narrow(0, n, 2 * n)?, y, &net.prototypes(true)?)?, None)),
            Contrastive::None => Ok((Tensor::f_zeros([], (z.kind(), z.device()))?, None)),
        }
    }
}

/// Number of rows whose largest entry of `classifier + alpha * contrast` (both N x C
/// row-major) sits at the row's label: ProCo's training prediction.
fn training_hits(classifier: &[f64], contrast: &[f64], alpha: f64, labels: &[usize]) -> usize {
    let scores: Vec<f64> = classifier.iter().zip(contrast).map(|(l, s)| l + alpha * s).collect();
    argmax_hits(&scores, labels)
}

/// Number of rows of `scores` (N x C row-major) whose first largest entry sits at the row's
/// label.
fn argmax_hits(scores: &[f64], labels: &[usize]) -> usize {
    let c = if labels.is_empty() { 0 } else { scores.len() / labels.len() };
    if c == 0 {
        return 0;
    }
    scores
        .chunks_exact(c)
        .zip(labels)
        .filter(|(row, &label)| row.iter().enumerate().fold((0, f64::NEG_INFINITY), |b, (j, &v)| if v > b.1 { (j, v) } else { b }).0 == label)
        .count()
}

/// Where a training step sits in the schedule.
#[derive(Debug, Clone, Copy)]
pub struct StepPosition {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based step within the epoch.
    pub step: usize,
    /// Learning rate of the step.
    pub lr: f64,
}

/// The figures of one training step.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    /// Classifier CE on view 1.
    pub ce_loss: f64,
    /// The contrastive branch's loss (ProCo: the mean over views 2 and 3; 0 without one).
    pub proco_loss: f64,
    /// Samples whose training prediction is right: classifier + alpha x mean contrast logits
    /// (ProCo), the classifier alone (the other losses, and a linear stage), the contrast
    /// logits alone (ProCo's representation stage); none in SupCon's and BCL's
    /// representation stage, which has no prediction.
    pub correct: Option<usize>,
}

/// One training step: forward of the 3N stacked views `x` (view-major, on the network's
/// device) with labels `y`, CE on view 1 + alpha * ProCo on views 2 and 3 with the estimator
/// updates, backward, and an SGD update at `at.lr`. Fails with [`ProcoError::Diverged`] on a
/// non-finite network output or loss, before touching the weights.
pub fn train_step(
    net: &TwoBranchNet,
    sgd: &mut Sgd,
    state: &mut LossState,
    objective: &Objective,
    x: &Tensor,
    y: &Tensor,
    at: StepPosition,
) -> Result<StepOutcome> {
    train_step_sharded(net, sgd, state, objective, x, y, at, None)
}

/// Gradient buckets of data-parallel training: 25 MB, DDP's default.
const GRADIENT_BUCKET_BYTES: usize = 25 << 20;

/// [`train_step`] on this rank's slice `x`, `y` of the global batch, with `dist`: rank 0's
/// BatchNorm running statistics first (as DDP broadcasts buffers), the estimator statistics
/// all-reduced before the estimators take them, and the gradients averaged over the ranks
/// before the update, so that every rank makes the same update.
#[allow(clippy::too_many_arguments)]
pub fn train_step_sharded(
    net: &TwoBranchNet,
    sgd: &mut Sgd,
    state: &mut LossState,
    objective: &Objective,
    x: &Tensor,
    y: &Tensor,
    at: StepPosition,
    mut dist: Option<&mut Distributed>,
) -> Result<StepOutcome> {
    let StepPosition { epoch, step, lr } = at;
    let stage = objective.stage_at(epoch);
    if stage == Stage::Linear {
        return linear_step(net, sgd, objective, x, y, at, dist);
    }
    if let Some(d) = dist.as_deref_mut() {
        follow_leaders_buffers(net, d)?;
    }
    let n = y.size().first().copied().unwrap_or(0);
    let (z, logits) = net.forward_t(x, true)?;
    let finite = logits.f_isfinite()?.f_all()?.f_int64_value(&[])? == 1 && z.f_isfinite()?.f_all()?.f_int64_value(&[])? == 1;
    if !finite {
        return Err(ProcoError::Diverged { epoch, step, what: "the network output".into() });
    }
    let logits1 = logits.f_narrow(0, 0, n)?;
    let (proco_loss, contrast) = objective.contrastive_loss(net, &z, y, state, dist.as_deref_mut())?;
    // The representation stage trains the contrastive loss alone.
    let (ce_loss, loss) = match stage {
        Stage::Representation => (None, proco_loss.shallow_clone()),
        _ => {
            let ce = objective.ce.loss(&logits1, y)?;
            let loss = &ce + &proco_loss * objective.alpha;
            (Some(ce), loss)
        }
    };
    let value = loss.f_double_value(&[])?;
    if !value.is_finite() {
        return Err(ProcoError::Diverged { epoch, step, what: format!("the loss ({value})") });
    }
    sgd.zero_grad(&net.vs);
    loss.f_backward()?;
    if let Some(d) = dist {
        d.average_gradients(&net.vs.trainable_variables(), GRADIENT_BUCKET_BYTES)?;
    }
    sgd.step(&net.vs, lr)?;

    let classifier = Vec::<f64>::try_from(&logits1.detach().f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
    let labels = validate::labels(y, n, net.num_classes())?;
    let correct = match (&contrast, stage) {
        // ProCo's prediction; its contrast logits alone while the classifier is not trained.
        (Some(contrast), Stage::Representation) => Some(argmax_hits(contrast, &labels)),
        (Some(contrast), _) => Some(training_hits(&classifier, contrast, objective.alpha, &labels)),
        (None, Stage::Representation) => None,
        (None, _) => Some(argmax_hits(&classifier, &labels)),
    };
    let ce_loss = match ce_loss {
        Some(ce) => ce.f_double_value(&[])?,
        None => 0.0,
    };
    Ok(StepOutcome { ce_loss, proco_loss: proco_loss.f_double_value(&[])?, correct })
}

/// A linear-stage step: the classifier loss of view 1's logits through the frozen backbone,
/// and an update of the classifier alone.
fn linear_step(net: &TwoBranchNet, sgd: &mut Sgd, objective: &Objective, x: &Tensor, y: &Tensor, at: StepPosition, dist: Option<&mut Distributed>) -> Result<StepOutcome> {
    let StepPosition { epoch, step, lr } = at;
    let n = y.size().first().copied().unwrap_or(0);
    let logits = net.frozen_backbone_logits(&x.f_narrow(0, 0, n)?)?;
    if logits.f_isfinite()?.f_all()?.f_int64_value(&[])? != 1 {
        return Err(ProcoError::Diverged { epoch, step, what: "the classifier output".into() });
    }
    let loss = objective.ce.loss(&logits, y)?;
    let value = loss.f_double_value(&[])?;
    if !value.is_finite() {
        return Err(ProcoError::Diverged { epoch, step, what: format!("the loss ({value})") });
    }
    sgd.zero_grad(&net.vs);
    loss.f_backward()?;
    let is_classifier = |name: &str| name.starts_with(TwoBranchNet::CLASSIFIER_PREFIX);
    if let Some(d) = dist {
        let vars: Vec<Tensor> = net.vs.variables().into_iter().filter(|(name, v)| v.requires_grad() && is_classifier(name)).map(|(_, v)| v).collect();
        d.average_gradients(&vars, GRADIENT_BUCKET_BYTES)?;
    }
    sgd.step_where(&net.vs, lr, is_classifier)?;
    let classifier = Vec::<f64>::try_from(&logits.detach().f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?.f_flatten(0, -1)?)?;
    let labels = validate::labels(y, n, net.num_classes())?;
    Ok(StepOutcome { ce_loss: value, proco_loss: 0.0, correct: Some(argmax_hits(&classifier, &labels)) })
}

/// The variables of `net` that are not trained (BatchNorm running statistics), by name.
/// Sorted by name, so that every rank lists them in the same order.
fn buffers_of(net: &TwoBranchNet) -> Vec<Tensor> {
    named_variables(net).into_iter().filter(|(_, v)| !v.requires_grad()).map(|(_, v)| v).collect()
}

/// Overwrites `net`'s BatchNorm running statistics with rank 0's (as DDP broadcasts buffers).
fn follow_leaders_buffers(net: &TwoBranchNet, d: &mut Distributed) -> Result<()> {
    let mut buffers = buffers_of(net);
    if buffers.is_empty() {
        return Ok(());
    }
    tch::no_grad(|| d.broadcast_from_leader(&mut buffers))
}

/// Every variable of `net` (parameters and buffers), sorted by name.
fn named_variables(net: &TwoBranchNet) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = net.vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Trains (or continues) a run. Writes `recipe.toml`, `metrics.jsonl`, TensorBoard events and
/// checkpoints under `options.run_dir`; reports progress through `progress`.
///
/// Every epoch evaluates every split of `data.eval`; the first selects the best epoch.
///
/// With `options.world`, this process is one rank of a data-parallel job (see
/// [`crate::distributed`]): every rank calls `train` with the same recipe and data; the
/// recipe's `batch_size` is the global batch, which must divide by the world size; only rank
/// 0 writes to the run directory; on resume rank 0 reads the checkpoint and sends it to the
/// others, so the world size may differ from the run that wrote it.
pub fn train(recipe: &Recipe, data: &RunData, options: &RunOptions, progress: &mut dyn FnMut(Progress)) -> Result<TrainSummary> {
    let mut dist = match &options.world {
        Some(spec) => {
            let backend = match options.device {
                Device::Cuda(i) => Backend::Nccl { device: i },
                _ => Backend::Gloo,
            };
            Some(Distributed::join(spec, backend, options.collective_timeout)?)
        }
        None => None,
    };
    let checked = check_run_data(recipe, data).and_then(|()| check_world(recipe, dist.as_ref()));
    let mut run = Run::start(recipe, data, options, dist.take(), checked)?;
    let total = recipe.total_epochs();
    let end = options.stop_after.map_or(total, |s| s.min(total));
    let mut records = Vec::new();
    for epoch in run.state.next_epoch..end {
        let record = run.epoch(epoch, progress)?;
        run.record(&record)?;
        progress(Progress::EpochEnd(record.clone()));
        records.push(record);
    }
    if let Some(log) = &run.log {
        write_plots(&options.run_dir, log, &data.class_counts, run.state.best.as_ref())?;
    }
    Ok(TrainSummary { epochs: records, best: run.state.best })
}

/// The global batch must split evenly over the ranks.
fn check_world(recipe: &Recipe, dist: Option<&Distributed>) -> Result<()> {
    if dist.is_some_and(|d| d.world_size() > 1) && matches!(recipe.contrastive_loss, ContrastiveLoss::Supcon | ContrastiveLoss::Bcl) {
        // Their pairs span the whole batch: every rank would need every feature, with the
        // gradient of the pairs across ranks, which the data-parallel step does not gather.
        return Err(ProcoError::InvalidConfig {
            reason: format!("contrastive_loss {} trains in a single process for now: its pairs span the whole batch; use one process, or proco / none", recipe.contrastive_loss.as_str()),
        });
    }
    let Some(d) = dist else { return Ok(()) };
    let mut batches = vec![("batch_size", recipe.batch_size)];
    if recipe.stages == Stages::Two {
        batches.push(("linear_batch_size", recipe.linear_batch_size));
    }
    match batches.into_iter().find(|(_, b)| !b.is_multiple_of(d.world_size())) {
        Some((field, b)) => Err(ProcoError::InvalidConfig {
            reason: format!("the {field} {b} (the global batch) does not divide by the {} ranks; choose a world size that divides it, or set {field}", d.world_size()),
        }),
        None => Ok(()),
    }
}

/// A fingerprint of what the ranks must agree on: the recipe and the data (sizes, class
/// counts, and where the first and last samples come from).
fn run_fingerprint(recipe: &Recipe, data: &RunData, options: &RunOptions) -> Result<u64> {
    let mut text = recipe.to_toml()?;
    // The run options that must agree too: evaluation shards follow the evaluation batch.
    let device = if options.device.is_cuda() { "cuda" } else { "cpu" };
    text.push_str(&format!("|{}|{:?}|{}|{device}", options.eval_batch_size, options.stop_after, options.resume));
    text.push_str(&format!("{:?}", data.class_counts));
    for ds in std::iter::once(&data.train).chain(data.eval.iter().map(|s| &s.dataset)) {
        let n = ds.len();
        text.push_str(&format!("|{n}|{}", ds.num_classes()));
        if n > 0 {
            text.push_str(&format!("|{}|{}|{}|{}", ds.describe(0), ds.label(0), ds.describe(n - 1), ds.label(n - 1)));
        }
    }
    Ok(crate::distributed::fingerprint(&[text.as_bytes()]))
}

/// What `train` needs of the data: agreeing class counts, three training views, a split to
/// select on.
fn check_run_data(recipe: &Recipe, data: &RunData) -> Result<()> {
    recipe.validate()?;
    let num_classes = data.class_counts.len();
    data.selection()?;
    if data.train.num_classes() != num_classes {
        return Err(ProcoError::InvalidConfig { reason: format!("the training set has {} classes but {num_classes} class counts", data.train.num_classes()) });
    }
    if let Some(s) = data.eval.iter().find(|s| s.dataset.num_classes() != num_classes) {
        return Err(ProcoError::InvalidConfig { reason: format!("the {} split has {} classes, the training set {num_classes}", s.name, s.dataset.num_classes()) });
    }
    if data.train_transform.views() != 3 {
        return Err(ProcoError::InvalidConfig { reason: "the training transform must give 3 views (classification + 2 contrastive)".into() });
    }
    Ok(())
}

/// A run in progress: its network, optimiser, loss state, bookkeeping and sinks.
struct Run<'a> {
    recipe: &'a Recipe,
    data: &'a RunData,
    options: &'a RunOptions,
    net: TwoBranchNet,
    sgd: Sgd,
    /// ProCo's estimators, SupCon's queue.
    loss: LossState,
    state: TrainState,
    objective: Objective,
    loader: Loader,
    /// The metrics sinks: rank 0's (a single process is rank 0).
    log: Option<JsonlLog>,
    tb: Option<TensorBoardWriter>,
    dist: Option<Distributed>,
}

impl<'a> Run<'a> {
    /// A fresh run (writing its recipe), or the run in `options.run_dir` resumed from its
    /// latest checkpoint (refusing a recipe other than the saved one). `checked` is the
    /// outcome of the checks before it. With `dist`, rank 0 alone touches the run directory;
    /// every rank then learns whether all started and agree, and takes rank 0's state.
    fn start(recipe: &'a Recipe, data: &'a RunData, options: &'a RunOptions, mut dist: Option<Distributed>, checked: Result<()>) -> Result<Self> {
        let leader = dist.as_ref().is_none_or(|d| d.rank() == 0);
        let shard = dist.as_ref().map_or(Shard::WHOLE, |d| Shard { rank: d.rank(), world: d.world_size() });
        let local = checked.and_then(|()| Self::prepare(recipe, data, options, leader, shard));
        if let Some(d) = dist.as_mut() {
            let agreed = d.check_agreement(run_fingerprint(recipe, data, options)?, local.is_ok());
            // This rank's own error says more than the agreement's.
            let mut run = local?;
            agreed?;
            run.take_leaders_state(d)?;
            run.dist = dist;
            return Ok(run);
        }
        local
    }

    /// This rank's run: the network, optimiser, estimators and, on the leader, the run
    /// directory's checks, the recipe, the checkpoint to resume from and the sinks.
    fn prepare(recipe: &'a Recipe, data: &'a RunData, options: &'a RunOptions, leader: bool, shard: Shard) -> Result<Self> {
        let dir = &options.run_dir;
        let num_classes = data.class_counts.len();
        let mut net = TwoBranchNet::new(&recipe.model(), num_classes, options.device)?;
        let mut sgd = Sgd::new(recipe.momentum, recipe.weight_decay);
        let mut loss = LossState::new(recipe, num_classes, options.device)?;
        let mut state = TrainState { next_epoch: 0, num_classes, best: None };
        let (mut log, mut tb) = (None, None);
        if leader {
            std::fs::create_dir_all(dir).map_err(ProcoError::io_at(dir))?;
            let recipe_path = dir.join("recipe.toml");
            let existing = checkpoint::latest(dir)?;
            if options.resume {
                let saved = std::fs::read_to_string(&recipe_path).map_err(ProcoError::io_at(&recipe_path))?;
                if Recipe::from_toml(&saved)? != *recipe {
                    return Err(ProcoError::RecipeMismatch { saved: recipe_path });
                }
            } else if existing.is_some() {
                return Err(ProcoError::RunExists { dir: dir.clone() });
            } else {
                std::fs::write(&recipe_path, recipe.to_toml()?).map_err(ProcoError::io_at(&recipe_path))?;
            }
            let jsonl = JsonlLog::new(dir.join("metrics.jsonl"));
            if options.resume {
                let ckpt = existing.ok_or_else(|| ProcoError::InvalidConfig { reason: format!("nothing to resume: {} has no checkpoint yet", dir.display()) })?;
                state = checkpoint::load_all(&ckpt, &mut net, &mut sgd, &mut loss)?;
                jsonl.truncate_from_epoch(state.next_epoch as u64)?;
            } else {
                // A fresh run (or one that crashed before its first checkpoint) starts a fresh log.
                jsonl.truncate_from_epoch(0)?;
            }
            log = Some(jsonl);
            tb = Some(TensorBoardWriter::create(dir)?);
        }
        let objective = Objective::new(recipe, &data.class_counts)?;
        let loader = Loader::new(data.train.clone(), data.train_transform.clone(), Self::loader_config(recipe, shard))?;
        Ok(Self { recipe, data, options, net, sgd, loss, state, objective, loader, log, tb, dist: None })
    }

    fn loader_config(recipe: &Recipe, shard: Shard) -> LoaderConfig {
        LoaderConfig { batch_size: recipe.batch_size, drop_last: true, shuffle: true, seed: recipe.seed, threads: recipe.loader_threads, prefetch: 4, reduced_decode: recipe.reduced_decode, shard }
    }

    /// Makes this rank's run rank 0's: its bookkeeping, every variable of the network, the
    /// momentum buffers and both estimators.
    fn take_leaders_state(&mut self, d: &mut Distributed) -> Result<()> {
        let leader = d.rank() == 0;
        let state_json = serde_json::to_vec(&self.state).map_err(|e| ProcoError::InvalidConfig { reason: e.to_string() })?;
        let state_json = d.broadcast_bytes(&state_json)?;
        self.state = serde_json::from_slice(&state_json).map_err(|e| ProcoError::Distributed { rank: d.rank(), reason: format!("rank 0 sent unreadable run state ({e})") })?;
        let mut vars: Vec<Tensor> = named_variables(&self.net).into_iter().map(|(_, v)| v).collect();
        tch::no_grad(|| d.broadcast_from_leader(&mut vars))?;
        // Momentum: rank 0's buffers where it has them (a resumed run), one per trainable
        // variable, in the variables' order.
        let has_momentum = d.broadcast_bytes(&[u8::from(leader && !self.sgd.buffers().is_empty())])?;
        if has_momentum.first() == Some(&1) {
            let trained: Vec<(String, Tensor)> = named_variables(&self.net).into_iter().filter(|(_, v)| v.requires_grad()).collect();
            let mut buffers = Vec::with_capacity(trained.len());
            for (n, v) in &trained {
                let b = match self.sgd.buffers().get(n) {
                    Some(b) if leader => b.shallow_clone(),
                    _ => v.f_zeros_like()?,
                };
                buffers.push(b);
            }
            let names: Vec<String> = trained.into_iter().map(|(n, _)| n).collect();
            d.broadcast_from_leader(&mut buffers)?;
            self.sgd.set_buffers(names.into_iter().zip(buffers).collect());
        }
        // SupCon (and its queue) is refused on more than one rank: only the estimators travel.
        let estimators = &self.loss.estimators;
        let (c, p) = (estimators.previous().num_classes(), estimators.previous().dim());
        let leaders = |e: &crate::estimator::VmfEstimator, d: &mut Distributed| -> Result<crate::estimator::VmfEstimator> {
            let (mut means, mut counts) = (e.means().to_vec(), e.counts().to_vec());
            d.broadcast_values(&mut means)?;
            d.broadcast_values(&mut counts)?;
            Ok(crate::estimator::VmfEstimator::from_state(c, p, means, counts)?)
        };
        self.loss.estimators = EstimatorPair::from_parts(leaders(estimators.previous(), d)?, leaders(estimators.current(), d)?);
        Ok(())
    }

    /// Makes the loader and the optimiser those of `epoch`'s stage: the linear stage's batch
    /// size, and at the linear stage's first epoch momentum from zero without weight decay
    /// (inside it, the resumed buffers stay).
    fn enter_stage(&mut self, epoch: usize) -> Result<()> {
        let batch = self.recipe.batch_size_at(epoch);
        if self.loader.batch_size() != batch {
            let shard = self.dist.as_ref().map_or(Shard::WHOLE, |d| Shard { rank: d.rank(), world: d.world_size() });
            let config = LoaderConfig { batch_size: batch, ..Self::loader_config(self.recipe, shard) };
            self.loader = Loader::new(self.data.train.clone(), self.data.train_transform.clone(), config)?;
        }
        if self.recipe.stage_of(epoch) == Stage::Linear {
            if epoch == self.recipe.epochs {
                self.sgd.restart(0.0);
            } else {
                self.sgd.set_weight_decay(0.0);
            }
        }
        Ok(())
    }

    /// Trains and evaluates one epoch.
    fn epoch(&mut self, epoch: usize, progress: &mut dyn FnMut(Progress)) -> Result<EpochRecord> {
        let (recipe, device) = (self.recipe, self.options.device);
        let start = Instant::now();
        let comm_start = self.dist.as_ref().map(Distributed::collective_time);
        let lr = recipe.lr_at(epoch);
        let stage = recipe.stage_of(epoch);
        self.enter_stage(epoch)?;
        self.loss.estimators.start_epoch(&mut estimator_rng(recipe.seed, epoch))?;
        let batches = self.loader.batches_per_epoch();
        progress(Progress::EpochStart { epoch, lr, batches });
        let (mut ce_sum, mut proco_sum, mut correct, mut seen) = (0.0, 0.0, 0usize, 0usize);
        let mut predicted = true;
        let world = self.dist.as_ref().map_or(1, Distributed::world_size);
        for (step, batch) in self.loader.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let n = batch.indices.len() as i64;
            let size = batch.views.size();
            let x = batch.views.f_view([3 * n, size[2], size[3], size[4]])?.f_to_device(device)?;
            let y = batch.labels.f_to_device(device)?;
            let out = train_step_sharded(&self.net, &mut self.sgd, &mut self.loss, &self.objective, &x, &y, StepPosition { epoch, step, lr }, self.dist.as_mut())?;
            ce_sum += out.ce_loss * n as f64;
            proco_sum += out.proco_loss * n as f64;
            match out.correct {
                Some(c) => correct += c,
                None => predicted = false,
            }
            seen += n as usize;
            progress(Progress::Step {
                step,
                ce_loss: ce_sum / seen as f64,
                proco_loss: proco_sum / seen as f64,
                accuracy: if predicted { 100.0 * correct as f64 / seen as f64 } else { f64::NAN },
                // Rank 0's figures; its throughput times the ranks is the job's.
                images_per_sec: (seen * world) as f64 / start.elapsed().as_secs_f64(),
            });
        }
        let train_secs = start.elapsed().as_secs_f64();
        if let Some(d) = self.dist.as_mut() {
            // The epoch's figures over every rank's samples.
            let mut all = [ce_sum, proco_sum, correct as f64, seen as f64];
            d.all_reduce_values(&mut all, ReduceOp::Sum)?;
            (ce_sum, proco_sum, correct, seen) = (all[0], all[1], all[2] as usize, all[3] as usize);
            // Evaluate (and save) rank 0's BatchNorm running statistics, as DDP does.
            follow_leaders_buffers(&self.net, d)?;
        }
        // A representation stage has no trained classifier to evaluate.
        let mut results = Vec::new();
        let mut ece = None;
        if stage != Stage::Representation {
            for split in &self.data.eval {
                let (ds, tf) = (split.dataset.clone(), self.data.test_transform.clone());
                let e = evaluate_detailed(&self.net, ds, tf, &self.data.class_counts, self.options.eval_batch_size, recipe.loader_threads, recipe.reduced_decode, self.dist.as_mut())?;
                if ece.is_none() {
                    // Non-finite logits have no confidence: no ECE that epoch, as before.
                    ece = e.calibration().ok().map(|c| 100.0 * c.ece);
                }
                results.push((e.accuracy, e.ce_loss));
            }
        }
        // The first split selects; a test split beside it is reported as `test`.
        let test = self.data.eval.iter().position(|s| s.name == "test").filter(|&i| i > 0).and_then(|i| results.get(i)).map(|r| r.0.clone());
        let comm = self.dist.as_ref().zip(comm_start).map(|(d, at)| {
            let now = d.collective_time();
            crate::distributed::CollectiveTime { all: now.all - at.all, gradients: now.gradients - at.gradients }
        });
        if stage != Stage::Representation && results.is_empty() {
            return Err(ProcoError::InvalidConfig { reason: "the run has no split to evaluate".into() });
        }
        let (val, ce_val) = results.into_iter().next().unzip();
        Ok(EpochRecord {
            epoch,
            stage,
            lr,
            ce_loss_train: ce_sum / seen.max(1) as f64,
            proco_loss_train: proco_sum / seen.max(1) as f64,
            train_top1: predicted.then(|| 100.0 * correct as f64 / seen.max(1) as f64),
            ce_loss_val: ce_val,
            val,
            val_ece: ece,
            test,
            seconds: start.elapsed().as_secs_f64(),
            images_per_sec: seen as f64 / train_secs,
            steps: self.dist.as_ref().map(|_| batches),
            collective_seconds: comm.map(|c| c.all.as_secs_f64()),
            gradient_allreduce_seconds: comm.map(|c| c.gradients.as_secs_f64()),
            kappa: (self.objective.uses_estimators() && stage != Stage::Linear).then(|| crate::estimator::KappaDistribution::of(self.loss.estimators.previous())),
        })
    }

    /// Reports an evaluated epoch: the best so far, the metrics log, TensorBoard, `best/`
    /// and the checkpoint (in that order, see below).
    fn record(&mut self, record: &EpochRecord) -> Result<()> {
        let (epoch, dir) = (record.epoch, &self.options.run_dir);
        if let Some(val) = &record.val {
            if self.state.best.as_ref().is_none_or(|b| val.top1 > b.accuracy.top1) {
                self.state.best = Some(BestEpoch { epoch, accuracy: val.clone(), test: record.test.clone() });
            }
        }
        self.state.next_epoch = epoch + 1;
        let (Some(log), Some(tb)) = (&self.log, &mut self.tb) else { return Ok(()) };
        log.append(&serde_json::to_value(record).map_err(|e| ProcoError::InvalidConfig { reason: e.to_string() })?)?;
        let g = |o: Option<f64>| o.unwrap_or(f64::NAN);
        let mut scalars = vec![
            ("acc/train_top1", g(record.train_top1)),
            ("loss/ce_train", record.ce_loss_train),
            ("loss/proco_train", record.proco_loss_train),
            ("loss/ce_val", g(record.ce_loss_val)),
            ("lr", record.lr),
        ];
        if let Some(val) = &record.val {
            scalars.push(("calibration/val_ece", g(record.val_ece)));
            scalars.extend([("acc/val_top1", val.top1), ("acc/val_many", g(val.many)), ("acc/val_medium", g(val.medium)), ("acc/val_few", g(val.few))]);
        }
        if let Some(k) = &record.kappa {
            scalars.extend([("kappa/min", k.min), ("kappa/p10", k.p10), ("kappa/median", k.median), ("kappa/p90", k.p90), ("kappa/max", k.max)]);
        }
        if let Some(t) = &record.test {
            scalars.extend([("acc/test_top1", t.top1), ("acc/test_many", g(t.many)), ("acc/test_medium", g(t.medium)), ("acc/test_few", g(t.few))]);
        }
        tb.scalars(epoch as i64, &scalars)?;
        // best/ first: a crash between the two leaves best/ ahead of the checkpoint, and the
        // resumed run recomputes the same epoch and writes the same best again.
        if self.state.best.as_ref().is_some_and(|b| b.epoch == epoch) {
            save_best(dir, &self.net, &self.state)?;
        }
        checkpoint::save(dir, &self.net, &self.sgd, &self.loss, &self.state)?;
        Ok(())
    }
}

/// Copies the weights of the best epoch to `best/`: written to `best.tmp`, then swapped in so
/// that at every moment `best/` or `best.old/` holds a complete copy (see [`best_dir`]).
fn save_best(dir: &Path, net: &TwoBranchNet, state: &TrainState) -> Result<()> {
    let tmp = dir.join("best.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(ProcoError::io_at(&tmp))?;
    checkpoint::write_model(net, &tmp.join("model.safetensors"))?;
    let text = serde_json::to_string_pretty(state).map_err(|e| ProcoError::InvalidConfig { reason: e.to_string() })?;
    std::fs::write(tmp.join("state.json"), text).map_err(ProcoError::io_at(&tmp))?;
    checkpoint::sync_dir_tree(&tmp)?;
    let best = dir.join("best");
    let old = dir.join("best.old");
    if best.exists() {
        // best/ is complete, so a leftover best.old/ from an earlier crash is redundant.
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(&best, &old).map_err(ProcoError::io_at(&best))?;
    }
    std::fs::rename(&tmp, &best).map_err(ProcoError::io_at(&best))?;
    checkpoint::sync_dir(dir)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The directory holding the best epoch's weights: `best/`, or `best.old/` if a crash
/// interrupted the swap.
pub fn best_dir(run_dir: &Path) -> Result<PathBuf> {
    for name in ["best", "best.old"] {
        let d = run_dir.join(name);
        if d.join("state.json").is_file() {
            return Ok(d);
        }
    }
    Err(ProcoError::Data {
        path: run_dir.to_path_buf(),
        reason: "no best epoch saved yet; evaluate the latest checkpoint instead".into(),
    })
}

/// Redraws the plots of a run directory from its metrics log and best epoch (for a run that
/// was stopped, or after changing the plotting code).
pub fn redraw_plots(run_dir: &Path, class_counts: &[usize]) -> Result<()> {
    let best = best_dir(run_dir).ok().map(|d| checkpoint::load_state(&d)).transpose()?.and_then(|s| s.best);
    write_plots(run_dir, &JsonlLog::new(run_dir.join("metrics.jsonl")), class_counts, best.as_ref())
}

/// Training curves and per-class accuracy against class size, as PNGs under `plots/`.
fn write_plots(dir: &Path, log: &JsonlLog, class_counts: &[usize], best: Option<&BestEpoch>) -> Result<()> {
    let plots = dir.join("plots");
    std::fs::create_dir_all(&plots).map_err(ProcoError::io_at(&plots))?;
    let records = log.read()?;
    let series = |key: &str, sub: Option<&str>| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| {
                let e = r.get("epoch")?.as_f64()?;
                let v = match sub {
                    Some(s) => r.get(key)?.get(s)?.as_f64()?,
                    None => r.get(key)?.as_f64()?,
                };
                Some((e, v))
            })
            .collect()
    };
    crate::plot::line_chart(&plots.join("accuracy.png"), "TEST ACCURACY (%)", &[
        ("TOP-1", series("val", Some("top1"))),
        ("MANY", series("val", Some("many"))),
        ("MEDIUM", series("val", Some("medium"))),
        ("FEW", series("val", Some("few"))),
    ])?;
    crate::plot::line_chart(&plots.join("loss.png"), "TRAINING LOSS", &[
        ("CE", series("ce_loss_train", None)),
        ("PROCO", series("proco_loss_train", None)),
        ("CE VAL", series("ce_loss_val", None)),
    ])?;
    if let Some(b) = best {
        let groups: Vec<usize> = class_counts
            .iter()
            .map(|&n| crate::data::long_tail::Shot::of(n).index())
            .collect();
        // Classes sorted by training size (largest first): accuracy against class size.
        let mut order: Vec<usize> = (0..class_counts.len()).collect();
        order.sort_by_key(|&j| std::cmp::Reverse(class_counts[j]));
        let title = format!("PER-CLASS TEST ACCURACY (%), BEST EPOCH {}, LARGEST CLASS FIRST", b.epoch);
        let acc: Vec<f64> = order.iter().map(|&j| b.accuracy.per_class.get(j).copied().flatten().unwrap_or(0.0)).collect();
        let groups: Vec<usize> = order.iter().map(|&j| groups[j]).collect();
        crate::plot::bar_chart(&plots.join("per_class_accuracy.png"), &title, &acc, &groups, &["MANY", "MEDIUM", "FEW"], crate::plot::Axis::Linear(100.0))?;
    }
    Ok(())
}

/// Reads a run's saved recipe.
pub fn load_recipe(run_dir: &Path) -> Result<Recipe> {
    let path = run_dir.join("recipe.toml");
    let text = std::fs::read_to_string(&path).map_err(ProcoError::io_at(&path))?;
    Recipe::from_toml(&text)
}

/// Evaluates a saved run (its `best/` weights, or the latest checkpoint with `latest = true`)
/// on `test`.
pub fn evaluate_run(
    run_dir: &Path,
    latest: bool,
    test: Arc<dyn Dataset>,
    transform: Arc<dyn SampleTransform>,
    class_counts: &[usize],
    device: Device,
) -> Result<Evaluation> {
    let recipe = load_recipe(run_dir)?;
    let dir = if latest {
        checkpoint::latest(run_dir)?.ok_or_else(|| ProcoError::Data { path: run_dir.to_path_buf(), reason: "no checkpoint in this run directory".into() })?
    } else {
        best_dir(run_dir)?
    };
    let mut net = TwoBranchNet::new(&recipe.model(), test.num_classes(), device)?;
    checkpoint::load_model(&dir, &mut net)?;
    evaluate_detailed(&net, test, transform, class_counts, 512, recipe.loader_threads, recipe.reduced_decode, None)
}

#[cfg(test)]
mod tests {
    use super::training_hits;

    #[test]
    fn training_prediction_adds_alpha_times_the_contrast_logits() {
        // Two samples, three classes. Row 0: the classifier alone says class 0, the contrast
        // logits tip it to class 2; row 1: class 1 either way.
        let classifier = [1.0, 0.0, 0.5, 0.0, 2.0, 0.0];
        let contrast = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        assert_eq!(training_hits(&classifier, &contrast, 1.0, &[2, 1]), 2);
        assert_eq!(training_hits(&classifier, &contrast, 0.0, &[2, 1]), 1);
        assert_eq!(training_hits(&[], &[], 1.0, &[]), 0);
    }
}
