//! Property tests of the Bessel functions: identities that hold for every order and argument.

use proco_vmf::{bessel_ratio, log_bessel_i, log_bessel_i_minus_nu_log_x};
use proptest::prelude::*;

fn order() -> impl Strategy<Value = f64> {
    // Integer and half-integer orders as p/2 - 1 for p in 2..2048, plus arbitrary real ones.
    prop_oneof![(2u32..2048).prop_map(|p| p as f64 / 2.0 - 1.0), 0.0..1100.0f64]
}

fn argument() -> impl Strategy<Value = f64> {
    (-6.0..6.0f64).prop_map(|e| 10f64.powf(e))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn increasing_in_x(nu in order(), x in argument(), step in 1e-6..1.0f64) {
        let y = x * (1.0 + step);
        prop_assert!(log_bessel_i(nu, x) <= log_bessel_i(nu, y));
    }

    #[test]
    fn decreasing_in_order(nu in order(), x in argument()) {
        prop_assert!(log_bessel_i(nu + 1.0, x) <= log_bessel_i(nu, x));
    }

    #[test]
    fn ratio_in_unit_interval(nu in order(), x in prop_oneof![argument(), 1e6..1e7f64]) {
        let r = bessel_ratio(nu, x);
        prop_assert!((0.0..1.0).contains(&r), "ratio({}, {}) = {}", nu, x, r);
        // Classical bounds (Amos 1974): x / (nu + 1 + sqrt(x^2 + (nu+1)^2)) <= r <= x / (nu + 1/2 + sqrt(x^2 + (nu+1/2)^2)).
        let lower = x / (nu + 1.0 + (x * x + (nu + 1.0) * (nu + 1.0)).sqrt());
        let upper = x / (nu + 0.5 + (x * x + (nu + 0.5) * (nu + 0.5)).sqrt());
        prop_assert!(r >= lower * (1.0 - 1e-14) && r <= upper * (1.0 + 1e-14), "{} not in [{}, {}]", r, lower, upper);
    }

    #[test]
    fn three_term_recurrence_in_log_space(nu in 1.0..1100.0f64, x in argument()) {
        // I_{nu-1} - I_{nu+1} = (2 nu / x) I_nu, divided by I_nu: exp(a) - exp(b) = 2nu/x.
        let l = log_bessel_i(nu, x);
        let a = (log_bessel_i(nu - 1.0, x) - l).exp();
        let b = (log_bessel_i(nu + 1.0, x) - l).exp();
        // Each log carries a rounding error of a few ulps of its largest internal term (about
        // max(|log I|, nu): Debye forms nu * eta); the difference of the two exponentials is then
        // accurate to that times the larger of them.
        let tol = 64.0 * f64::EPSILON * (l.abs() + nu + 1.0) * a.max(b);
        prop_assert!(((a - b) - 2.0 * nu / x).abs() <= tol, "nu={} x={}: {} - {} vs {}", nu, x, a, b, 2.0 * nu / x);
    }

    #[test]
    fn derivative_of_scaled_log_is_ratio(nu in order(), x in (-3.0..5.0f64).prop_map(|e| 10f64.powf(e))) {
        let h = 1e-4 * x;
        let d = (log_bessel_i_minus_nu_log_x(nu, x + h) - log_bessel_i_minus_nu_log_x(nu, x - h)) / (2.0 * h);
        let r = bessel_ratio(nu, x);
        let scale = log_bessel_i_minus_nu_log_x(nu, x).abs() + 1.0;
        prop_assert!((d - r).abs() <= 1e-7 * r.max(1e-3) + 1e-12 * scale / h, "nu={} x={}: fd {} ratio {}", nu, x, d, r);
    }
}
