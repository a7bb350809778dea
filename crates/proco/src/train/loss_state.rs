//! What the contrastive loss carries from one training step to the next, saved with every
//! checkpoint: ProCo's pair of vMF estimators, and SupCon's memory queue where the recipe
//! asks for one.

use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::Device;

use crate::error::Result;
use crate::estimator::EstimatorPair;
use crate::loss::FeatureQueue;
use crate::train::recipe::Recipe;

/// The step-to-step state of a run's contrastive loss.
#[derive(Debug)]
pub struct LossState {
    /// ProCo's "previous" and "current" estimators (kept, unused, under the other losses, so
    /// that every run's checkpoint has the same files).
    pub estimators: EstimatorPair,
    /// SupCon's queue of earlier steps' features (recipe `supcon_queue` > 0).
    pub queue: Option<FeatureQueue>,
}

impl LossState {
    /// The state at the start of a run of `recipe` over `num_classes` classes: estimators
    /// drawn from the recipe's seed, an empty queue on `device`.
    ///
    /// # Errors
    /// [`crate::ProcoError::InvalidConfig`] for zero classes or a feature dimension below 2.
    pub fn new(recipe: &Recipe, num_classes: usize, device: Device) -> Result<Self> {
        let estimators = EstimatorPair::new(num_classes, recipe.feature_dim, &mut StdRng::seed_from_u64(recipe.seed))?;
        let queue = match recipe.supcon_queue {
            0 => None,
            rows => Some(FeatureQueue::new(rows, recipe.feature_dim, device)?),
        };
        Ok(Self { estimators, queue })
    }
}
