//! Training: the recipe (data), learning-rate schedule, SGD with checkpointable state, the
//! two-branch loop, evaluation by shot group, metrics sinks and checkpoints.

pub mod accuracy;
pub mod checkpoint;
pub mod events;
pub mod loss_state;
pub mod recipe;
pub mod report;
pub mod run_data;
pub mod sgd;
pub mod trainer;

pub use accuracy::{shot_accuracy, ShotAccuracy};
pub use loss_state::LossState;
pub use recipe::Recipe;
pub use run_data::{load_run_data, EvalSplit, RunData};
pub use trainer::{evaluate, evaluate_detailed, evaluate_run, evaluate_sharded, Evaluation, ECE_BINS, train, train_step, train_step_sharded, EpochRecord, Objective, Progress, RunOptions, StepOutcome, StepPosition, TrainSummary};
