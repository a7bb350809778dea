//! The losses of the two branches. Classifier branch: cross entropy, logit-adjusted cross
//! entropy, Balanced Softmax ([`LogitAdjustedCe`]). Contrastive branch: the ProCo loss
//! (closed-form expectation over vMF class distributions), and the peers it is compared
//! with, SupCon ([`SupConLoss`]) and BCL ([`BclLoss`]).

mod bcl;
mod branch;
mod logit_adjusted;
mod proco;
mod queue;
mod supcon;

use serde::{Deserialize, Serialize};

pub use bcl::BclLoss;
pub use queue::FeatureQueue;
pub use supcon::{ContrastSet, Positives, SupConLoss};

pub use branch::{BranchOutput, BranchPhases, ProCoBranch, StatisticsReducer};
pub use logit_adjusted::{LogPrior, LogitAdjustedCe};
pub use proco::{attach_gradient, BesselRoute, ContrastLogits, HostBatch, HostGradient, ProCoLoss};
pub use proco_vmf::contrast::ContrastLoss;

/// The loss of the classifier branch, chosen in the recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierLoss {
    /// Plain cross entropy.
    Ce,
    /// Logit-adjusted cross entropy, CE(logits + log pi) (Menon et al. 2021): ProCo's.
    #[default]
    LogitAdjusted,
    /// Balanced Softmax, CE(logits + log n_j) (Ren et al. 2020). log n_j and log pi_j differ
    /// by the constant log sum n, which the softmax cancels: it is the same loss as
    /// logit-adjusted CE with scale 1, offered under the name its users know.
    BalancedSoftmax,
}

/// The loss of the contrastive branch, chosen in the recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContrastiveLoss {
    /// ProCo: vMF estimators and the closed-form infinite-pair loss ([`ProCoBranch`]).
    #[default]
    Proco,
    /// SupCon over the batch's two contrastive views ([`SupConLoss`]).
    Supcon,
    /// BCL: SupCon with class prototypes and class-averaging ([`BclLoss`]).
    Bcl,
    /// No contrastive branch (the classifier loss alone).
    None,
}

impl ContrastiveLoss {
    /// The name used in recipes and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ContrastiveLoss::Proco => "proco",
            ContrastiveLoss::Supcon => "supcon",
            ContrastiveLoss::Bcl => "bcl",
            ContrastiveLoss::None => "none",
        }
    }
}
