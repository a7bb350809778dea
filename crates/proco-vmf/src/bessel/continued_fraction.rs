//! Gauss's continued fraction for the ratio I_{nu+1}(x)/I_nu(x):
//!
//! I_{nu+1}/I_nu = 1 / (2(nu+1)/x + 1 / (2(nu+2)/x + 1 / (2(nu+3)/x + ...))).
//!
//! All partial denominators are positive, so the modified Lentz evaluation is stable. It
//! converges in a few dozen steps when x is at most about nu (the dispatcher's use), and
//! needs about x steps when x is much larger than nu (where the Debye or Hankel forms are
//! used instead).

/// Evaluates the continued fraction for x > 0. `max_steps` bounds the work; if it is not
/// enough, the last approximant is returned (the dispatcher sizes it so this never happens).
pub(crate) fn ratio(nu: f64, x: f64, max_steps: usize) -> f64 {
    const TINY: f64 = 1e-300;
    let inv_x = 2.0 / x;
    // f = 1 / (b1 + 1/(b2 + ...)) evaluated as the CF b0 + a1/(b1 + ...) with b0 = 0.
    let mut f = TINY;
    let mut c = f;
    let mut d = 0.0_f64;
    for k in 1..=max_steps {
        let b = (nu + k as f64) * inv_x;
        d = b + d;
        if d == 0.0 {
            d = TINY;
        }
        c = b + 1.0 / c;
        if c == 0.0 {
            c = TINY;
        }
        d = 1.0 / d;
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() <= 0.5 * f64::EPSILON {
            break;
        }
    }
    f
}
