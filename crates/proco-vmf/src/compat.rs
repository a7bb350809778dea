//! The authors' Bessel numerics, reproduced so users can compare runs side by side.
//!
//! The reference implementation (LeapLabTHU/ProCo) evaluates I_n(x) with a Miller backward
//! recurrence: start at index 2n with (I_{2n}, I_{2n+1}) = (1, 0), apply
//! I_{i-1} = (2i/x) I_i + I_{i+1} down to I_0, rescale on overflow, and normalise with the
//! exactly known I_0(x) e^{-x}. The order is truncated to an integer, n = int(p/2 - 1), while
//! the `nu log x` term keeps the half-integer order, and the gradient (the Bessel ratio) is
//! clipped at 1.
//!
//! This is **never the default** and is wrong in known places (see `shared/golden/README.md`):
//! - the start index 2n is too low once x exceeds about n^2/8: log I is off by about
//!   exp(-3 n^2 / x) (p = 128: 5e-6 at x = 1000, 0.5 at x = 1e4), and the ratio can exceed 1;
//! - for p = 2 and 3 (n = 0) the loop is empty and log I_n comes out -inf;
//! - for odd p the order is truncated (1 instead of 1.5 for p = 5).

use crate::bessel::log_bessel_i;

/// Largest order the recurrence is run for (p = 2e7; ProCo uses p <= a few thousand).
pub const MAX_ORDER: f64 = 1e7;

/// Rescale the recurrence when a value passes this (well before f64 overflow).
const RESCALE_ABOVE: f64 = 1e250;

/// (log I_n(x) - x, log I_{n+1}(x) - x) by the authors' Miller recurrence, n = trunc(nu).
///
/// For n = 0 the recurrence loop is empty: the first value is -inf and the second is
/// log(I_0(x) e^{-x}), exactly as the reference returns them. x must be > 0. The loop costs
/// 2n steps, so orders above [`MAX_ORDER`] (and invalid input) give NaN instead of running for hours.
pub fn log_bessel_ive_pair(nu: f64, x: f64) -> (f64, f64) {
    if !(nu >= 0.0 && nu <= MAX_ORDER && x > 0.0 && x.is_finite()) {
        return (f64::NAN, f64::NAN);
    }
    let n = nu.trunc() as u64;
    let log_i0e = log_bessel_i(0.0, x) - x;
    if n == 0 {
        return (f64::NEG_INFINITY, log_i0e);
    }
    // cur = I_i, next = I_{i+1}, up to a common factor exp(log_scale).
    let (mut cur, mut next) = (1.0_f64, 0.0_f64);
    let mut log_scale = 0.0_f64;
    let (mut at_n, mut at_n1) = ((0.0, 0.0), (0.0, 0.0));
    for i in (1..=2 * n).rev() {
        let prev = (2.0 * i as f64 / x) * cur + next;
        next = cur;
        cur = prev;
        if cur > RESCALE_ABOVE {
            log_scale += cur.ln();
            next /= cur;
            cur = 1.0;
        }
        // After this step `next` holds I_i.
        if i == n {
            at_n = (next, log_scale);
        } else if i == n + 1 {
            at_n1 = (next, log_scale);
        }
    }
    let log_i0 = cur.ln() + log_scale;
    (
        log_i0e + at_n.0.ln() + at_n.1 - log_i0,
        log_i0e + at_n1.0.ln() + at_n1.1 - log_i0,
    )
}

/// The reference's contrast-logit Bessel term: log I_n(x) - nu log(x + 1e-20), with n = trunc(nu).
pub fn log_bessel_i_minus_nu_log_x(nu: f64, x: f64) -> f64 {
    let (l0, _) = log_bessel_ive_pair(nu, x);
    l0 + x - nu * (x + 1e-20).ln()
}

/// The reference's gradient factor: I_{n+1}(x)/I_n(x) from the recurrence, clipped at 1.
pub fn bessel_ratio_clipped(nu: f64, x: f64) -> f64 {
    let (l0, l1) = log_bessel_ive_pair(nu, x);
    (l1 - l0).exp().min(1.0)
}

/// The reference's unclipped ratio, to show where it leaves [0, 1).
pub fn bessel_ratio_unclipped(nu: f64, x: f64) -> f64 {
    let (l0, l1) = log_bessel_ive_pair(nu, x);
    (l1 - l0).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bessel::{bessel_ratio, log_bessel_i};

    fn log_i_error(nu: f64, x: f64) -> f64 {
        let (l0, _) = log_bessel_ive_pair(nu, x);
        (l0 + x - log_bessel_i(nu, x)).abs()
    }

    #[test]
    fn accurate_where_the_start_index_suffices() {
        for (nu, x) in [(63.0, 1.0), (63.0, 100.0), (511.0, 1000.0), (7.0, 1.0)] {
            assert!(log_i_error(nu, x) < 1e-12 * log_bessel_i(nu, x).abs().max(1.0), "nu={nu} x={x}");
            assert!((bessel_ratio_unclipped(nu, x) - bessel_ratio(nu, x)).abs() < 1e-12);
        }
    }

    #[test]
    fn wrong_where_the_golden_readme_says() {
        // README: p=16 -> 3e-7 at x=10 and 0.09 at x=63; p=128 -> 5e-6 at 1000 and 0.5 at 1e4.
        let e = log_i_error(7.0, 10.0);
        assert!(e > 1e-7 && e < 1e-6, "{e}");
        let e = log_i_error(7.0, 63.0);
        assert!(e > 0.05 && e < 0.15, "{e}");
        let e = log_i_error(63.0, 1000.0);
        assert!(e > 2e-6 && e < 1e-5, "{e}");
        let e = log_i_error(63.0, 1e4);
        assert!(e > 0.3 && e < 0.8, "{e}");
        // Far out, the unclipped ratio passes 1; the clipped one stops at 1; the exact one never does.
        assert!(bessel_ratio_unclipped(63.0, 1e5) > 1.0);
        assert_eq!(bessel_ratio_clipped(63.0, 1e5), 1.0);
        assert!(bessel_ratio(63.0, 1e5) < 1.0);
    }

    #[test]
    fn refuses_orders_it_cannot_finish() {
        assert!(log_bessel_ive_pair(1e19, 1.0).0.is_nan());
        assert!(log_bessel_ive_pair(3.0, 0.0).0.is_nan());
        assert!(log_bessel_ive_pair(-1.0, 1.0).1.is_nan());
    }

    #[test]
    fn empty_loop_and_truncated_order() {
        assert_eq!(log_bessel_ive_pair(0.0, 3.0).0, f64::NEG_INFINITY);
        assert_eq!(log_bessel_ive_pair(0.5, 3.0).0, f64::NEG_INFINITY);
        // p = 5: order 1.5 is evaluated as 1.
        let x = 0.05;
        let (l0, _) = log_bessel_ive_pair(1.5, x);
        // Started only two steps up, the recurrence is itself off by about x/(4n+2) here.
        assert!((l0 + x - log_bessel_i(1.0, x)).abs() < 1e-3);
        assert!((l0 + x - log_bessel_i(1.5, x)).abs() > 0.1);
    }
}
