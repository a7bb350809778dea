//! Exact double-precision von Mises-Fisher mathematics for ProCo.
//!
//! This crate knows nothing of tensors: it is plain `f64` code that the `proco` library calls
//! for every (sample, class) pair of the ProCo loss, and that can be used on its own.
//!
//! - [`bessel`]: log I_nu(x), log I_nu(x) - nu log x and I_{nu+1}(x)/I_nu(x), exact in every regime.
//! - [`vmf`]: log normaliser, mean resultant length A_p, concentration from R.
//! - [`sampler`]: Wood's exact vMF sampler.
//! - [`chebyshev`]: certified per-class interpolants of the pair function, for the loss's inner loop.
//! - [`contrast`]: the ProCo loss of a batch and its gradient in one host pass.
//! - [`rows`]: feature rows in f32 or f64, widened where they are used.
//! - [`parallel`]: who runs the loss pass's parallel jobs (spawned threads or the caller's pool).
//! - [`compat`]: the authors' Miller recurrence, reproduced for side-by-side comparison only.

pub mod bessel;
pub mod chebyshev;
pub mod compat;
pub mod contrast;
pub mod estimator;
mod error;
mod kernels;
pub mod parallel;
pub mod rows;
pub mod sampler;
pub mod vmf;

pub use bessel::{
    bessel_ratio, log_bessel_i, log_bessel_i_minus_nu_log_x, log_bessel_i_minus_nu_log_x_and_ratio, FixedOrderBessel,
};
pub use error::VmfError;
pub use rows::FeatureRows;
pub use sampler::{random_unit_vector, VonMisesFisher};
pub use vmf::{bessel_order, kappa_banerjee, kappa_newton, kappa_proco, log_normalizer, mean_resultant_length};
