//! Ascending power series of I_nu(x), used where it converges quickly and cannot overflow.
//!
//! I_nu(x) = (x/2)^nu / Gamma(nu+1) * S_nu(x), with S_nu(x) = sum_k (x^2/4)^k / (k! (nu+1)_k).
//! Every term is positive, so summing loses nothing to cancellation: the relative error of S
//! is a few ulps times the number of terms. The sum is kept as S - 1 so that log I stays
//! accurate when it is tiny (log I_0(1e-6) = 2.5e-13).

/// Largest x for which the dispatcher uses the series at orders below the Debye threshold:
/// 120, or nu^2 where that is larger (so Hankel's expansion starts where its terms shrink from
/// the first). The largest term is about e^x, far below f64 overflow for x < 625, and the term
/// count (about x) keeps the cost bounded.
pub(crate) fn max_x(nu: f64) -> f64 {
    (nu * nu).max(120.0)
}

/// Sums S_nu(x) - 1 and S_{nu+1}(x) - 1 together (they share the powers of x^2/4).
fn sums_minus_one(nu: f64, x: f64) -> (f64, f64) {
    let q = 0.25 * x * x;
    let (mut t, mut u) = (1.0_f64, 1.0_f64);
    let (mut s, mut r) = (0.0_f64, 0.0_f64);
    let mut k = 0.0_f64;
    loop {
        k += 1.0;
        t *= q / (k * (nu + k));
        u *= q / (k * (nu + 1.0 + k));
        s += t;
        r += u;
        // Terms decrease once q < k (nu + k); stop when they no longer change either sum.
        if q < k * (nu + k) && t <= f64::EPSILON * 0.25 * (1.0 + s) && u <= f64::EPSILON * 0.25 * (1.0 + r)
        {
            return (s, r);
        }
    }
}

/// log I_nu(x) - nu log x, for x > 0 with x <= [`max_x`] (or x^2/4 small against nu).
pub(crate) fn log_i_minus_nu_log_x(nu: f64, x: f64) -> f64 {
    let (s, _) = sums_minus_one(nu, x);
    -nu * std::f64::consts::LN_2 - libm::lgamma(nu + 1.0) + s.ln_1p()
}

/// log I_nu(x), for x > 0 in the same range. Kept separate from the scaled form so that
/// nu log(x/2) is taken as one logarithm (more accurate when log I is near zero).
pub(crate) fn log_i(nu: f64, x: f64) -> f64 {
    let (s, _) = sums_minus_one(nu, x);
    let lead = if nu == 0.0 { 0.0 } else { nu * (0.5 * x).ln() };
    lead - libm::lgamma(nu + 1.0) + s.ln_1p()
}

/// I_{nu+1}(x) / I_nu(x) = x / (2 (nu+1)) * S_{nu+1} / S_nu, for x >= 0 in the same range.
pub(crate) fn ratio(nu: f64, x: f64) -> f64 {
    let (s, r) = sums_minus_one(nu, x);
    x / (2.0 * (nu + 1.0)) * ((1.0 + r) / (1.0 + s))
}
