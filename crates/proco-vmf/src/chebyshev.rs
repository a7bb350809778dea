//! Chebyshev interpolation of the ProCo pair function on an interval of arguments, certified
//! against the exact evaluation before it is used.
//!
//! Why: in one batch every argument kt_ij of class j lies in [|kappa_j - 1/tau|, kappa_j +
//! 1/tau], a short interval on which A(x) = I_{nu+1}(x)/I_nu(x) is analytic (its poles, the
//! zeros of I_nu, sit on the imaginary axis beyond |x| = nu). A degree-[`DEGREE`] Chebyshev
//! interpolant of A from [`NODES`] exact evaluations reproduces it to a few ulps, and the
//! logit s = F(kt) - F(kappa) (F = log I_nu - nu log, F' = A) is its integral from kappa to
//! kt, read off the interpolant's antiderivative. Both are short runs of fused multiply-adds
//! that vectorise over the batch's rows, where the exact evaluation costs logarithms,
//! divisions and a data-dependent series per pair. The integral form is also more accurate
//! than the difference of two exact F values, which are each ~nu log kt large and round at
//! that scale (1e-11 absolute at kt = 1e5).
//!
//! An interpolant is only returned when its last coefficients are negligible and it matches
//! the exact A and F(x) - F(lo) at both ends and inside the interval within
//! [`TOLERANCE_ULPS`] ulps; otherwise the caller evaluates every pair exactly. A depends on x
//! alone, so an interpolant serves any class and batch whose arguments lie in its interval
//! (the anchor kappa enters only at evaluation), which is what lets
//! [`crate::contrast::InterpolantCache`] keep them between batches.

use std::sync::OnceLock;

use crate::kernels::clenshaw_pair;

/// Degree of the interpolants: enough for p >= 64 at temperatures from 0.05 to 1 and any
/// kappa (the tests cover p = 128..1024, tau = 0.05..1, kappa = 0..1e5); at small orders the
/// zeros of I_nu sit close to the real axis and some classes fall back to exact evaluation.
pub const DEGREE: usize = 24;

/// Number of interpolation nodes (Chebyshev points of the first kind).
pub const NODES: usize = DEGREE + 1;

/// Largest accepted deviation from the exact values, in ulps of the largest |value| on the
/// interval, or for F of the caller's error scale if larger (the exact values carry a few ulps
/// of the terms they are computed from themselves).
pub const TOLERANCE_ULPS: f64 = 16.0;

/// cos(pi m (k + 1/2) / NODES) for m, k in 0..NODES: node k is the row m = 1.
fn cosines() -> &'static [[f64; NODES]; NODES] {
    static TABLE: OnceLock<[[f64; NODES]; NODES]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [[0.0; NODES]; NODES];
        for (m, row) in t.iter_mut().enumerate() {
            for (k, v) in row.iter_mut().enumerate() {
                *v = (std::f64::consts::PI * m as f64 * (k as f64 + 0.5) / NODES as f64).cos();
            }
        }
        t
    })
}

/// The interpolant of A on an interval and the antiderivative that gives s. A depends on x
/// alone, so one interpolant serves every class and batch whose arguments fall inside its
/// interval; the anchor (kappa_j) only enters through [`Self::primitive_at`].
#[derive(Debug, Clone, PartialEq)]
pub struct PairInterpolant {
    lo: f64,
    hi: f64,
    mid: f64,
    half: f64,
    inv_half: f64,
    /// Chebyshev coefficients of A(mid + half t), the constant one already halved.
    a: [f64; NODES],
    /// Coefficients of an antiderivative in t of the same (degree NODES).
    prim: [f64; NODES + 1],
}

fn coefficients(values: &[f64; NODES]) -> [f64; NODES] {
    let cos = cosines();
    let mut c = [0.0; NODES];
    for (m, cm) in c.iter_mut().enumerate() {
        let sum: f64 = values.iter().zip(&cos[m]).map(|(v, w)| v * w).sum();
        *cm = 2.0 / NODES as f64 * sum;
    }
    c[0] *= 0.5;
    c
}

/// Antiderivative coefficients: for f = a_0 + sum_{m>=1} a_m T_m, int f dt = sum_{k>=1} C_k T_k
/// with C_1 = a_0 - a_2 / 2 and C_k = (a_{k-1} - a_{k+1}) / (2k).
fn antiderivative(a: &[f64; NODES]) -> [f64; NODES + 1] {
    let at = |m: usize| if m < NODES { a[m] } else { 0.0 };
    let mut c = [0.0; NODES + 1];
    c[1] = a[0] - 0.5 * at(2);
    for (k, ck) in c.iter_mut().enumerate().skip(2) {
        *ck = (at(k - 1) - at(k + 1)) / (2.0 * k as f64);
    }
    c
}

/// Clenshaw's recurrence for sum_m c_m T_m(t), t in [-1, 1].
fn clenshaw(c: &[f64], t: f64) -> f64 {
    let (mut b1, mut b2) = (0.0, 0.0);
    for &cm in c[1..].iter().rev() {
        let b = (2.0 * t).mul_add(b1, cm - b2);
        b2 = b1;
        b1 = b;
    }
    t.mul_add(b1, c[0] - b2)
}

/// The error scale of F(x) = log I_nu(x) - nu log x up to x: the size of the terms its exact
/// evaluation adds (x, nu log(x + nu), nu log nu), which its rounding is relative to.
pub fn pair_error_scale(nu: f64, x: f64) -> f64 {
    x + nu * ((1.0 + x + nu).ln() + 1.0)
}

impl PairInterpolant {
    /// Interpolates A on [lo, hi] from `exact` (x -> (F(x), A(x))), certifies it and returns
    /// `None` when the interval is degenerate, or when the interpolant misses the exact A by
    /// more than [`TOLERANCE_ULPS`] ulps of max |A|, or F(x) - F(lo) by more than that many
    /// ulps of `f_scale` (the exact F's own rounding scale, see [`pair_error_scale`]). The
    /// outcome depends on (exact, lo, hi, f_scale) only, so a cache of interpolants keyed by
    /// their interval gives the same numbers as building afresh.
    pub fn build<B: Fn(f64) -> (f64, f64)>(exact: &B, lo: f64, hi: f64, f_scale: f64) -> Option<Self> {
        let half = 0.5 * (hi - lo);
        let mid = 0.5 * (hi + lo);
        // Below this width the map to [-1, 1] amplifies rounding; exact evaluation is cheap
        // for the few distinct arguments such a batch holds.
        if !(lo >= 0.0 && half > 1e-6 * mid.max(1.0) && hi.is_finite()) {
            return None;
        }
        let cos = cosines();
        let mut av = [0.0; NODES];
        for (k, v) in av.iter_mut().enumerate() {
            *v = exact(mid + half * cos[1][k]).1;
        }
        let a = coefficients(&av);
        let prim = antiderivative(&a);
        let out = Self { lo, hi, mid, half, inv_half: 1.0 / half, a, prim };

        let scale_a = av.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
        let tol_a = TOLERANCE_ULPS * f64::EPSILON * scale_a.max(1e-300);
        let tol_s = TOLERANCE_ULPS * f64::EPSILON * f_scale.abs().max(1.0);
        if !(out.a[DEGREE].abs() + out.a[DEGREE - 1].abs() <= tol_a) {
            return None;
        }
        let checks = [lo, mid - 0.3 * half, mid + 0.6 * half, hi].map(|x| (x, exact(x)));
        let f_lo = checks[0].1 .0;
        let at_lo = out.primitive_at(lo);
        for (x, (f, a_exact)) in checks {
            let (s, a) = out.eval(x, at_lo);
            if !((a - a_exact).abs() <= tol_a && (s - (f - f_lo)).abs() <= tol_s) {
                return None;
            }
        }
        Some(out)
    }

    /// Whether [lo, hi] lies inside the interval this interpolant was built on.
    pub fn covers(&self, lo: f64, hi: f64) -> bool {
        self.lo <= lo && hi <= self.hi
    }

    /// The antiderivative at `anchor` (inside the interval; clamped to it), the constant that
    /// [`Self::eval`] and [`Self::eval_into`] subtract to give s = F(x) - F(anchor).
    pub fn primitive_at(&self, anchor: f64) -> f64 {
        clenshaw(&self.prim, ((anchor - self.mid) * self.inv_half).clamp(-1.0, 1.0))
    }

    /// (s, A) at one x: s = F(x) - F(anchor) and A(x), with `anchor_primitive` from
    /// [`Self::primitive_at`]. x is clamped to the interval the interpolant was built on
    /// (arguments outside it are a caller's error; rounding at the ends is what the clamp is
    /// for).
    pub fn eval(&self, x: f64, anchor_primitive: f64) -> (f64, f64) {
        debug_assert!(((x - self.mid) * self.inv_half).abs() <= 1.0 + 1e-9, "x = {x} outside the interpolant's interval");
        let t = ((x - self.mid) * self.inv_half).clamp(-1.0, 1.0);
        (self.half * (clenshaw(&self.prim, t) - anchor_primitive), clenshaw(&self.a, t))
    }

    /// s = F(x) - F(anchor) and A(x) at every x of `xs` (each within the interval, clamped as
    /// in [`Self::eval`]), written to `s` and `a`, which must be as long as `xs`; `scratch`
    /// holds the mapped points (resized as needed, so it can be reused across calls). Runs
    /// the recurrences for many points at once in SIMD lanes, with the same operations per
    /// point as [`Self::eval`].
    pub fn eval_into(&self, xs: &[f64], anchor_primitive: f64, s: &mut [f64], a: &mut [f64], scratch: &mut Vec<f64>) {
        debug_assert!(s.len() == xs.len() && a.len() == xs.len(), "output slices must match the arguments");
        let n = xs.len().min(s.len()).min(a.len());
        let (s, a) = (&mut s[..n], &mut a[..n]);
        scratch.clear();
        scratch.extend(xs[..n].iter().map(|&x| 2.0 * ((x - self.mid) * self.inv_half).clamp(-1.0, 1.0)));
        clenshaw_pair(&self.prim, &self.a, scratch, s, a);
        for v in s.iter_mut() {
            *v = self.half * (*v - anchor_primitive);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FixedOrderBessel;

    #[test]
    fn interpolant_matches_exact_values_over_protocol_ranges() {
        for p in [2usize, 3, 16, 128, 512, 1024] {
            let nu = p as f64 / 2.0 - 1.0;
            let bessel = FixedOrderBessel::new(nu);
            let exact = |x: f64| bessel.log_i_minus_nu_log_x_and_ratio(x);
            for tau in [0.05_f64, 0.07, 0.1, 0.2, 1.0] {
                for kappa in [0.0_f64, 0.5, 3.0, 30.0, 63.0, 200.0, 606.0, 5e3, 1e5] {
                    let (lo, hi) = ((kappa - 1.0 / tau).max(0.0), kappa + 1.0 / tau);
                    let scale = pair_error_scale(nu, hi);
                    let f_kappa = exact(kappa).0;
                    let Some(ip) = PairInterpolant::build(&exact, lo, hi, scale) else {
                        // Small orders have zeros of I_nu near the real axis (|x| ~ 2.4 at nu = 0):
                        // there the caller evaluates exactly. ProCo's dimensions must interpolate.
                        assert!(p < 64, "no interpolant for p={p} tau={tau} kappa={kappa} on [{lo}, {hi}]");
                        continue;
                    };
                    let xs: Vec<f64> = (0..=200).map(|i| lo + (hi - lo) * i as f64 / 200.0).collect();
                    let (mut s, mut a) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
                    let anchor = ip.primitive_at(kappa);
                    ip.eval_into(&xs, anchor, &mut s, &mut a, &mut Vec::new());
                    for (i, &x) in xs.iter().enumerate() {
                        let (f, a_exact) = exact(x);
                        assert!((s[i] - (f - f_kappa)).abs() <= 2.0 * TOLERANCE_ULPS * f64::EPSILON * scale,
                            "s p={p} tau={tau} kappa={kappa} x={x}: {} vs {}", s[i], f - f_kappa);
                        assert!((a[i] - a_exact).abs() <= 2.0 * TOLERANCE_ULPS * f64::EPSILON,
                            "A p={p} tau={tau} kappa={kappa} x={x}: {} vs {a_exact}", a[i]);
                        assert_eq!((s[i], a[i]), ip.eval(x, anchor));
                    }
                }
            }
        }
    }

    #[test]
    fn integral_form_is_exact_where_the_difference_of_logs_rounds() {
        // s = F(kt) - F(kappa) for kt within 1e-3 of kappa = 1e5: the exact difference of two
        // ~1e5 values rounds at 1e-11, the integral of A (about 1) does not.
        let nu = 63.0;
        let bessel = FixedOrderBessel::new(nu);
        let exact = |x: f64| bessel.log_i_minus_nu_log_x_and_ratio(x);
        let kappa = 1e5;
        let ip = PairInterpolant::build(&exact, kappa - 10.0, kappa + 10.0, pair_error_scale(nu, kappa + 10.0)).unwrap();
        let x = kappa + 1e-3;
        // x - kappa is exact (Sterbenz); the midpoint rule's error is ~1e-9 A'' dx^3, nil here.
        let want = (x - kappa) * bessel.log_i_minus_nu_log_x_and_ratio(kappa + 0.5 * (x - kappa)).1;
        let s = ip.eval(x, ip.primitive_at(kappa)).0;
        assert!((s - want).abs() < 1e-15, "{s} vs {want}");
    }

    #[test]
    fn a_function_it_cannot_follow_is_refused() {
        // A = |x - 1| has a kink inside the interval: no polynomial of degree 24 gets within ulps.
        let kink = |x: f64| (0.0, (x - 1.0).abs());
        assert!(PairInterpolant::build(&kink, 0.0, 2.0, 1.0).is_none());
        let smooth = |x: f64| (x * x, 2.0 * x);
        assert!(PairInterpolant::build(&smooth, 1.0, 1.0, 1.0).is_none(), "a degenerate interval");
        assert!(PairInterpolant::build(&smooth, -1.0, 2.0, 1.0).is_none(), "negative arguments");
        let ip = PairInterpolant::build(&smooth, 0.0, 2.0, 1.0).unwrap();
        assert!(ip.covers(0.0, 2.0) && ip.covers(0.5, 1.5) && !ip.covers(0.5, 2.1));
        let (s, a) = ip.eval(1.5, ip.primitive_at(0.5));
        assert!((s - 2.0).abs() < 1e-14 && (a - 3.0).abs() < 1e-14, "{s} {a}");
    }
}
