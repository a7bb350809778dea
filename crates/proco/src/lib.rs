//! ProCo (probabilistic contrastive learning) for long-tailed visual recognition, on LibTorch.
//!
//! - [`estimator`]: per-class vMF estimates from running first moments, and the epoch swap.
//! - [`loss`]: the ProCo loss with exact Bessel numerics and gradient, logit-adjusted CE.
//! - [`bench`]: the measurements behind `proco bench`.
//!
//! The mathematics lives in `proco-vmf` (no tensors); this crate knows nothing of the terminal.

pub mod augment;
pub mod bench;
pub mod data;
pub mod error;
pub mod loader;
pub mod model;
pub mod plot;
pub mod train;
pub mod estimator;
pub mod loss;
pub mod validate;

pub use error::{ProcoError, Result};
pub use estimator::{BatchStatistics, ClassConcentration, EstimatorPair, KappaFlag, VmfEstimator};
pub use loss::{BesselRoute, ContrastLogits, LogPrior, LogitAdjustedCe, ProCoLoss};
pub use tch;
