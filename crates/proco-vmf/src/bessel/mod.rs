//! Modified Bessel functions of the first kind in log space, exact in double precision.
//!
//! ProCo needs log I_nu(x) and the ratio I_{nu+1}(x)/I_nu(x) for orders nu = p/2 - 1 up to
//! about 511 (p = 1024) and arguments from 0 to beyond 1e5, where I_nu itself under- or
//! overflows f64 by thousands of orders of magnitude. No Rust crate evaluates these in log space
//! at large order (statrs, puruspe and others return I_nu itself, overflowing past x ~ 700),
//! and the authors' Miller recurrence loses accuracy past x ~ nu^2/8 (see [`crate::compat`]),
//! so the functions are written here. Each regime uses the method that is accurate there:
//!
//! | order | argument | log I_nu | ratio |
//! |---|---|---|---|
//! | nu < [`DEBYE_MIN_NU`] | x <= max(120, nu^2) | power series | power series (S_{nu+1}/S_nu) |
//! | nu < [`DEBYE_MIN_NU`] | x > max(120, nu^2) | Hankel expansion | Hankel (H_{nu+1}/H_nu) |
//! | nu >= [`DEBYE_MIN_NU`] | x < 1e-100 | power series | power series |
//! | nu >= [`DEBYE_MIN_NU`] | x >= 1e-100 | Debye expansion | Debye, in a form without cancellation |
//!
//! Why these boundaries: the power series has only positive terms (no cancellation) but needs
//! about x terms, so it is capped at x = 120, or at x = nu^2 (< 625, far below overflow) for the
//! larger orders below the Debye threshold. Past that, Hankel's terms shrink from the first on
//! (their ratio is about 4nu^2/(8kx) <= 1/2), so its alternating sum loses nothing.
//! Debye's expansion is uniform in x/nu and its error depends on nu alone; from
//! [`DEBYE_MIN_NU`] on, 20 terms reach double precision for all x. The textbook Debye ratio
//! I'_nu/I_nu - nu/x cancels for x << nu; `debye` rewrites it so that it does not, and one
//! expansion then yields log I and the ratio together (a Gauss continued fraction checks it in
//! the tests).
//!
//! Accuracy (tests against 50-digit values in `shared/golden/bessel.json`): relative error of
//! log I_nu below 1e-13 and of the ratio below 1e-13 for nu in 0..1023, x in 1e-6..1e6.

#[cfg(test)]
mod continued_fraction;
mod debye;
mod hankel;
mod series;

/// Order from which Debye's uniform expansion is used (see the module table).
pub const DEBYE_MIN_NU: f64 = 25.0;

fn invalid(nu: f64, x: f64) -> bool {
    !(nu >= 0.0 && x >= 0.0) || nu.is_infinite()
}

/// log I_nu(x), the logarithm of the modified Bessel function of the first kind.
///
/// Defined for real order nu >= 0 (integer and half-integer orders included) and x >= 0; it
/// never overflows or underflows (log I_1023(1e-6) = -20836 and log I_0(1e7) = 9999991.1 are
/// both returned accurately). At x = 0 it returns the limit: 0 for nu = 0, -inf otherwise;
/// x = +inf gives +inf. Invalid input (nu < 0, x < 0, NaN, infinite nu) gives NaN.
pub fn log_bessel_i(nu: f64, x: f64) -> f64 {
    if invalid(nu, x) {
        return f64::NAN;
    }
    if x == 0.0 {
        return if nu == 0.0 { 0.0 } else { f64::NEG_INFINITY };
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    if nu >= DEBYE_MIN_NU {
        if x < 1e-100 {
            return series::log_i(nu, x);
        }
        return debye::log_i(nu, x);
    }
    if x <= series::max_x(nu) {
        series::log_i(nu, x)
    } else {
        hankel::log_i(nu, x).unwrap_or(f64::NAN)
    }
}

/// log I_nu(x) - nu log x, the x-dependent part of the vMF log-normaliser and of the ProCo
/// contrast logit (log C_p(k) = nu log k - (nu+1) log 2pi - log I_nu(k) with nu = p/2 - 1).
///
/// Computed without forming the two large terms separately where they would cancel (small x),
/// so it is finite at x = 0, where it equals -nu log 2 - log Gamma(nu + 1). Same domain and
/// invalid-input behaviour as [`log_bessel_i`].
pub fn log_bessel_i_minus_nu_log_x(nu: f64, x: f64) -> f64 {
    if invalid(nu, x) {
        return f64::NAN;
    }
    if x.is_infinite() {
        return f64::INFINITY;
    }
    if nu >= DEBYE_MIN_NU && x >= 1e-100 {
        return debye::log_i_minus_nu_log_x(nu, x);
    }
    if x <= series::max_x(nu) || nu >= DEBYE_MIN_NU {
        return series::log_i_minus_nu_log_x(nu, x);
    }
    hankel::log_i(nu, x).map_or(f64::NAN, |l| l - nu * x.ln())
}

/// I_{nu+1}(x) / I_nu(x): the vMF mean resultant length A_p(x) for p = 2 nu + 2, and the
/// derivative of [`log_bessel_i_minus_nu_log_x`] in x.
///
/// Always in [0, 1) for finite x >= 0 (0 at x = 0); tends to 1 as x grows. Same domain and
/// invalid-input behaviour as [`log_bessel_i`]; x = +inf gives 1.
pub fn bessel_ratio(nu: f64, x: f64) -> f64 {
    if invalid(nu, x) {
        return f64::NAN;
    }
    if x == 0.0 {
        return 0.0;
    }
    if x.is_infinite() {
        return 1.0;
    }
    let r = if nu >= DEBYE_MIN_NU {
        if x < 1e-100 {
            // z = x/nu underflows towards subnormals here; the series is exact.
            series::ratio(nu, x)
        } else {
            debye::ratio(nu, x)
        }
    } else if x <= series::max_x(nu) {
        series::ratio(nu, x)
    } else {
        hankel::ratio(nu, x).unwrap_or(f64::NAN)
    };
    r.min(1.0 - f64::EPSILON / 2.0)
}

/// Both log I_nu(x) - nu log x and the ratio I_{nu+1}(x)/I_nu(x) in one call: what the ProCo
/// loss needs per (sample, class) pair (the value for the logit, the ratio for its gradient).
///
/// Where both come from Debye's expansion (nu >= [`DEBYE_MIN_NU`]) they share one expansion,
/// which costs little more than either value alone. For many arguments at one order,
/// [`FixedOrderBessel`] also saves the order's logarithms.
pub fn log_bessel_i_minus_nu_log_x_and_ratio(nu: f64, x: f64) -> (f64, f64) {
    FixedOrderBessel::new(nu).log_i_minus_nu_log_x_and_ratio(x)
}

/// [`log_bessel_i_minus_nu_log_x_and_ratio`] at one order, with the order's constants
/// computed once: the form the ProCo loss uses for its N x C pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixedOrderBessel {
    nu: f64,
    /// nu ln nu + ln(2 pi nu) / 2, where the Debye expansion applies.
    constant: f64,
}

impl FixedOrderBessel {
    /// The functions at order nu (any value; invalid orders give NaN on evaluation).
    pub fn new(nu: f64) -> Self {
        let constant = if nu >= DEBYE_MIN_NU && nu.is_finite() { debye::order_constant(nu) } else { f64::NAN };
        Self { nu, constant }
    }

    /// The order nu.
    pub fn order(&self) -> f64 {
        self.nu
    }

    /// (log I_nu(x) - nu log x, I_{nu+1}(x)/I_nu(x)); the values of
    /// [`log_bessel_i_minus_nu_log_x`] and [`bessel_ratio`] (the first may differ in its last
    /// ulp: the fused expansion can stop one negligible term later), with their domain and
    /// invalid-input behaviour.
    #[inline]
    pub fn log_i_minus_nu_log_x_and_ratio(&self, x: f64) -> (f64, f64) {
        if self.nu >= DEBYE_MIN_NU && x >= 1e-100 && x.is_finite() && self.nu.is_finite() {
            let (f, r) = debye::log_i_minus_nu_log_x_and_ratio(self.nu, self.constant, x);
            return (f, r.min(1.0 - f64::EPSILON / 2.0));
        }
        (log_bessel_i_minus_nu_log_x(self.nu, x), bessel_ratio(self.nu, x))
    }
}

#[cfg(test)]
mod tests {
    //! Each method against an independent one where both are valid, across the regime
    //! boundaries chosen above (the golden vectors only sample the orders 0..1023 on one grid).
    use super::*;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs().max(1e-300)
    }

    fn grid(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> {
        (0..n).map(move |i| lo * (hi / lo).powf(i as f64 / (n - 1) as f64))
    }

    #[test]
    fn debye_matches_power_series_from_threshold_on() {
        for nu in [DEBYE_MIN_NU, 25.5, 31.0, 40.0, 63.0, 127.5] {
            for x in grid(1e-3, 120.0, 60) {
                let a = debye::log_i_minus_nu_log_x(nu, x);
                let b = series::log_i_minus_nu_log_x(nu, x);
                // Both forms carry rounding of a few ulps of the terms they cancel (~ log I).
                let scale = b.abs().max(series::log_i(nu, x).abs());
                assert!((a - b).abs() < 2e-15 * scale, "nu={nu} x={x}: debye {a} series {b}");
                let a = debye::log_i(nu, x);
                let b = series::log_i(nu, x);
                // Here the series cancels nu ln(x/2) against ln Gamma(nu+1), each good to an ulp.
                let scale = b.abs() + nu * (0.5 * x).ln().abs() + libm::lgamma(nu + 1.0);
                assert!((a - b).abs() < 2e-15 * scale, "nu={nu} x={x}: debye {a} series {b}");
            }
        }
    }

    #[test]
    fn hankel_matches_power_series_below_threshold() {
        // The series is exact (positive terms) up to x ~ 700; Hankel takes over at max(120, nu^2).
        for nu in [0.0, 0.5, 1.0, 7.0, 15.0, 24.5] {
            for x in grid(series::max_x(nu), 650.0, 30) {
                let a = hankel::log_i(nu, x).expect("hankel converges");
                let b = series::log_i(nu, x);
                assert!(rel(a, b) < 2e-15, "nu={nu} x={x}: hankel {a} series {b}");
                let a = hankel::ratio(nu, x).expect("hankel converges");
                let b = series::ratio(nu, x);
                assert!(rel(a, b) < 4e-15, "nu={nu} x={x}: hankel ratio {a} series {b}");
            }
        }
    }

    #[test]
    fn continued_fraction_matches_debye_and_series_ratios() {
        // The Debye ratio is used for every x > 0 at nu >= DEBYE_MIN_NU: check it down to
        // x << nu, where the textbook form would cancel.
        for nu in [DEBYE_MIN_NU, 25.5, 63.0, 511.0, 1023.0] {
            for x in grid(1e-6 * nu, 4.0 * nu, 60) {
                let a = continued_fraction::ratio(nu, x, 1_000_000);
                let b = debye::ratio(nu, x);
                assert!(rel(a, b) < 4e-15, "nu={nu} x={x}: cf {a} debye {b}");
            }
        }
        for nu in [0.0, 0.5, 3.0, 24.0] {
            for x in grid(1e-4, 120.0, 40) {
                let a = continued_fraction::ratio(nu, x, 1_000_000);
                let b = series::ratio(nu, x);
                assert!(rel(a, b) < 4e-15, "nu={nu} x={x}: cf {a} series {b}");
            }
        }
    }

    #[test]
    fn limits_and_invalid_input() {
        assert_eq!(log_bessel_i(0.0, 0.0), 0.0);
        assert_eq!(log_bessel_i(2.5, 0.0), f64::NEG_INFINITY);
        assert_eq!(bessel_ratio(63.0, 0.0), 0.0);
        let at_zero = log_bessel_i_minus_nu_log_x(63.0, 0.0);
        let want = -63.0 * std::f64::consts::LN_2 - libm::lgamma(64.0);
        assert!(rel(at_zero, want) < 1e-15, "{at_zero} vs {want}");
        assert!(rel(log_bessel_i_minus_nu_log_x(63.0, 1e-200), want) < 1e-15);
        // Far below the Debye range: ratio = x / (2 (nu + 1)).
        for x in [1e-310, 1e-300, 1e-150] {
            assert!(rel(bessel_ratio(63.0, x), x / 128.0) < 1e-15, "x={x}");
        }
        for (nu, x) in [(-1.0, 1.0), (1.0, -1.0), (f64::NAN, 1.0), (1.0, f64::NAN), (f64::INFINITY, 1.0)] {
            assert!(log_bessel_i(nu, x).is_nan() && bessel_ratio(nu, x).is_nan());
            assert!(log_bessel_i_minus_nu_log_x(nu, x).is_nan());
        }
        // The top of the documented range: finite, and the ratio strictly below 1.
        for nu in [0.0, 0.5, 63.0, 511.0] {
            assert!(log_bessel_i(nu, 1e7).is_finite());
            let r = bessel_ratio(nu, 1e7);
            // ratio = 1 - (2 nu + 1) / (2x) + O(1/x^2) for large x.
            assert!(r < 1.0 && r > 1.0 - (nu + 1.0) / 1e7, "nu={nu}: {r}");
        }
    }

    #[test]
    fn fused_evaluation_matches_the_separate_ones() {
        for nu in [0.0, 0.5, 24.0, DEBYE_MIN_NU, 63.0, 511.0] {
            for x in grid(1e-3, 1e6, 80) {
                let (f, r) = log_bessel_i_minus_nu_log_x_and_ratio(nu, x);
                // The fused expansion may add one more negligible U term: an ulp at most.
                let f1 = log_bessel_i_minus_nu_log_x(nu, x);
                assert!((f - f1).abs() <= 2.0 * f64::EPSILON * f1.abs(), "nu={nu} x={x}: {f} vs {f1}");
                assert_eq!(r, bessel_ratio(nu, x), "nu={nu} x={x}");
            }
        }
    }

    #[test]
    fn half_integer_closed_form() {
        // I_{1/2}(x) = sqrt(2/(pi x)) sinh x.
        for x in grid(1e-6, 700.0, 50) {
            let want = (2.0 / (std::f64::consts::PI * x)).sqrt().ln() + x.sinh().ln();
            assert!((log_bessel_i(0.5, x) - want).abs() <= 2e-15 * want.abs().max(1.0), "x={x}");
        }
    }

    #[test]
    fn fixed_order_values_agree_with_the_plain_functions() {
        // The host pass subtracts logc from F(kt) for exactly evaluated classes and integrates
        // A from kappa for interpolated ones; both rest on these agreeing.
        for nu in [0.5, 7.0, 24.5, 25.0, 63.0, 511.0] {
            let fixed = FixedOrderBessel::new(nu);
            for k in 0..=120 {
                let x = 1e-6 * 10f64.powf(k as f64 / 10.0);
                let (f, r) = fixed.log_i_minus_nu_log_x_and_ratio(x);
                let want = log_bessel_i_minus_nu_log_x(nu, x);
                assert!((f - want).abs() <= 4.0 * f64::EPSILON * want.abs().max(1.0), "nu={nu} x={x}: {f} vs {want}");
                assert!((r - bessel_ratio(nu, x)).abs() <= 4.0 * f64::EPSILON, "nu={nu} x={x}");
            }
        }
    }
}
