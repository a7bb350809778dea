//! The two losses of ProCo's two branches: logit-adjusted cross entropy for the classifier,
//! and the ProCo contrastive loss (closed-form expectation over vMF class distributions).

mod branch;
mod logit_adjusted;
mod proco;

pub use branch::{BranchOutput, BranchPhases, ProCoBranch, StatisticsReducer};
pub use logit_adjusted::{LogPrior, LogitAdjustedCe};
pub use proco::{attach_gradient, BesselRoute, ContrastLogits, HostBatch, HostGradient, ProCoLoss};
pub use proco_vmf::contrast::ContrastLoss;
