//! Hankel's large-argument expansion, for small orders at large x.
//!
//! I_nu(x) ~ e^x / sqrt(2 pi x) * H_nu(x), H_nu(x) = sum_k (-1)^k a_k(nu) / x^k with
//! a_k(nu) = prod_{j<=k} (4 nu^2 - (2j-1)^2) / (k! 8^k). The term ratio is about
//! (4nu^2 - (2k-1)^2) / (8 k x); the dispatcher only uses it for nu < [`super::DEBYE_MIN_NU`]
//! and x > max(120, nu^2), where the terms shrink from the first one on and fall below 1e-17
//! well before they start to grow again (around k = 2x). The exponentially small e^{-x} part is below
//! double precision there.

/// Sum H_nu(x). Returns `None` if the terms never drop below the target accuracy before they
/// start to grow (the dispatcher never asks for such points; this guards future changes).
fn sum(nu: f64, x: f64) -> Option<f64> {
    let mu = 4.0 * nu * nu;
    let mut term = 1.0_f64;
    let mut total = 1.0_f64;
    let mut k = 0.0_f64;
    loop {
        k += 1.0;
        let odd = 2.0 * k - 1.0;
        let factor = -(mu - odd * odd) / (8.0 * k * x);
        term *= factor;
        total += term;
        if term.abs() <= 0.25 * f64::EPSILON * total.abs() {
            return Some(total);
        }
        if factor.abs() >= 1.0 && k > 2.0 * nu + 1.0 {
            return None;
        }
    }
}

/// log I_nu(x) for large x (see the module notes for the range).
pub(crate) fn log_i(nu: f64, x: f64) -> Option<f64> {
    let h = sum(nu, x)?;
    Some(x - 0.5 * (std::f64::consts::TAU * x).ln() + h.ln())
}

/// I_{nu+1}(x) / I_nu(x) = H_{nu+1}(x) / H_nu(x) for large x (no e^x to cancel).
pub(crate) fn ratio(nu: f64, x: f64) -> Option<f64> {
    Some(sum(nu + 1.0, x)? / sum(nu, x)?)
}
