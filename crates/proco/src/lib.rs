//! ProCo (probabilistic contrastive learning) for long-tailed visual recognition, on LibTorch.
//!
//! One batch, start to end: [`data`] (CIFAR / folder / list-file sources, the long-tail
//! protocol) -> [`loader`] running [`pipeline`] transforms built from [`augment`] ops (three
//! views) -> [`model`] (backbone, classifier, projection head) -> [`loss`] (logit-adjusted CE
//! on view 1; [`estimator`] update + ProCo loss on views 2 and 3) -> [`train`] (SGD step,
//! evaluation by shot group, metrics, checkpoints, [`plot`]s).
//!
//! - [`estimator`]: per-class vMF estimates from running first moments, and the epoch swap.
//! - [`loss`]: the ProCo loss with exact Bessel numerics and gradient, logit-adjusted CE.
//! - [`validate`]: typed errors for bad feature / label tensors.
//! - [`bench`]: the measurements behind `proco bench`.
//! - [`allocator`]: malloc settings that keep a training step free of page faults.
//! - [`openmp`]: host jobs side by side on LibTorch's OpenMP threads.
//!
//! The mathematics lives in `proco-vmf` (no tensors); this crate knows nothing of the terminal.

pub mod allocator;
pub mod augment;
pub mod bench;
pub mod calibration;
pub mod data;
pub mod distributed;
pub mod error;
pub mod estimator;
pub mod experiment;
pub mod figures;
pub mod import;
mod host_autograd;
mod host_tensor;
pub mod loader;
pub mod loss;
pub mod model;
pub mod openmp;
pub mod parallel;
pub mod pickle;
pub mod pipeline;
pub mod plot;
pub mod train;
pub mod validate;

pub use error::{ImageProblem, ProcoError, Result};
pub use estimator::{BatchStatistics, ClassConcentration, EstimatorPair, KappaDistribution, KappaFlag, TensorUpdate, VmfEstimator};
pub use loss::{BclLoss, BesselRoute, ContrastLogits, ContrastSet, FeatureQueue, LogPrior, LogitAdjustedCe, Positives, ProCoLoss, SupConLoss};
pub use tch;
