//! Typed errors of the vMF layer: each says which input was wrong and what is allowed.

/// An input outside the domain of a vMF computation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VmfError {
    /// The ambient dimension p must be at least 2 (the circle); p = 1 has no sphere to speak of.
    #[error("feature dimension p = {p} is not supported: the vMF distribution needs p >= 2")]
    InvalidDimension {
        /// The dimension that was passed.
        p: usize,
    },
    /// A mean resultant length must lie in [0, 1): it is the norm of a mean of unit vectors.
    #[error("mean resultant length R = {r} is outside [0, 1); R is the norm of a mean of unit vectors")]
    InvalidResultantLength {
        /// The value that was passed.
        r: f64,
    },
    /// A concentration must be finite and >= 0.
    #[error("concentration kappa = {kappa} is invalid: it must be finite and >= 0")]
    InvalidConcentration {
        /// The value that was passed.
        kappa: f64,
    },
    /// A mean direction must be a finite non-zero vector of length p.
    #[error("mean direction is invalid: {reason}")]
    InvalidMeanDirection {
        /// What was wrong with it.
        reason: String,
    },
    /// A batch handed to the ProCo loss is inconsistent (lengths, labels, temperature).
    #[error("invalid ProCo batch: {reason}")]
    InvalidBatch {
        /// What was wrong with it.
        reason: String,
    },
    /// Features handed to an estimator do not match its shape.
    #[error("invalid features: {reason}")]
    InvalidFeatures {
        /// What was wrong with them.
        reason: String,
    },
    /// A label names a class that does not exist.
    #[error("invalid labels: {reason}")]
    InvalidLabels {
        /// What was wrong with them.
        reason: String,
    },
    /// An estimator state or batch statistics are inconsistent (lengths, non-finite values,
    /// a mean of norm > 1, statistics of another shape).
    #[error("invalid estimator state: {reason}")]
    InvalidEstimator {
        /// What was wrong with it.
        reason: String,
    },
    /// A [`crate::parallel::Parallel`] runner returned without completing every job it was
    /// given (a job skipped, or a panic swallowed); the outputs are incomplete.
    #[error("the parallel runner completed {completed} of {jobs} jobs of the ProCo pass; it must run every job exactly once and let panics reach the caller")]
    IncompleteJobs {
        /// Jobs completed.
        completed: usize,
        /// Jobs handed to the runner.
        jobs: usize,
    },
}
