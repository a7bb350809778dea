//! Debye's uniform asymptotic expansion in the order, for large nu and every x > 0.
//!
//! With z = x/nu, s = sqrt(1+z^2), p = 1/s and eta = s + ln(z/(1+s)):
//!
//! I_nu(nu z)  ~ e^{nu eta} / (sqrt(2 pi nu) s^{1/2}) * sum_k U_k(p) / nu^k,
//! I'_nu(nu z) ~ s^{1/2} e^{nu eta} / (sqrt(2 pi nu) z) * sum_k V_k(p) / nu^k,
//!
//! (DLMF 10.41.3-4). The expansion is uniform in z, so its accuracy depends on nu alone:
//! with nu >= [`super::DEBYE_MIN_NU`] and up to [`MAX_TERMS`] terms the truncation error is
//! below 1e-17 for every x (checked against the power series in the tests).
//!
//! The ratio I_{nu+1}/I_nu = I'_nu/I_nu - 1/z = (s V/U - 1)/z would cancel for small z. It is
//! evaluated instead as z (1/(1+s) - p D/U) with D = sum_{k>=1} (p/nu)^k Q_k(p^2), from
//! V_k - U_k = p (p^2 - 1) (U_{k-1}/2 + p U'_{k-1}) (the recurrence below) and
//! s (p^2 - 1) = -z^2 p, s - 1 = z^2/(1+s). The two terms never cancel (p D/U < 1/(1+s) / nu),
//! so one expansion gives both log I and the ratio to a few ulps for every x.
//!
//! U_k(p) is p^k times a polynomial of degree k in t = p^2, Q_k a polynomial of degree k-1 in
//! t, Q_k = (k - 1/2) P_{k-1} + 2 t P'_{k-1} where U_{k-1} = p^{k-1} P_{k-1}(t). The U_k are
//! generated once from U_{k+1} = p^2 (1-p^2) U_k' / 2 + (1/8) int_0^p (1 - 5 t^2) U_k(t) dt in
//! f64; their own rounding is far below what the 1/nu^k factors leave visible.

use std::sync::OnceLock;

/// Number of correction terms generated (U_0..U_{MAX_TERMS}).
pub(crate) const MAX_TERMS: usize = 20;

/// Coefficients of U_k and Q_k in t = p^2 (U_k(p) = p^k * sum_j u[k][j] t^j; q[0] is empty).
struct Coefficients {
    u: Vec<Vec<f64>>,
    q: Vec<Vec<f64>>,
}

/// Dense polynomial in p, index = power.
fn derivative(a: &[f64]) -> Vec<f64> {
    a.iter().enumerate().skip(1).map(|(i, c)| c * i as f64).collect()
}

fn mul(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            out[i + j] += x * y;
        }
    }
    out
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; a.len().max(b.len())];
    for (i, x) in a.iter().enumerate() {
        out[i] += x;
    }
    for (i, y) in b.iter().enumerate() {
        out[i] += y;
    }
    out
}

fn integral_from_zero(a: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; a.len() + 1];
    for (i, c) in a.iter().enumerate() {
        out[i + 1] = c / (i as f64 + 1.0);
    }
    out
}

/// Rewrites p^k * P(p^2) from its dense p-form into the coefficients of P.
fn to_t_basis(a: &[f64], k: usize) -> Vec<f64> {
    (0..=k).map(|j| a.get(k + 2 * j).copied().unwrap_or(0.0)).collect()
}

fn coefficients() -> &'static Coefficients {
    static COEFFS: OnceLock<Coefficients> = OnceLock::new();
    COEFFS.get_or_init(|| {
        let half_p2_one_minus_p2 = [0.0, 0.0, 0.5, 0.0, -0.5];
        let one_minus_5p2_over_8 = [0.125, 0.0, -0.625];
        let mut u_dense: Vec<Vec<f64>> = vec![vec![1.0]];
        for k in 0..MAX_TERMS {
            let uk = &u_dense[k];
            let a = mul(&half_p2_one_minus_p2, &derivative(uk));
            let b = integral_from_zero(&mul(&one_minus_5p2_over_8, uk));
            u_dense.push(add(&a, &b));
        }
        let u: Vec<Vec<f64>> = u_dense.iter().enumerate().map(|(k, a)| to_t_basis(a, k)).collect();
        let mut q = vec![Vec::new()];
        for k in 1..=MAX_TERMS {
            q.push(u[k - 1].iter().enumerate().map(|(j, c)| (k as f64 - 0.5 + 2.0 * j as f64) * c).collect());
        }
        Coefficients { u, q }
    })
}

fn horner(c: &[f64], t: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &a| acc.mul_add(t, a))
}

/// Shared pieces of one evaluation.
struct Expansion {
    s: f64,
    z: f64,
    p: f64,
    sum_u: f64,
    /// D = sum_{k>=1} (p/nu)^k Q_k(t), when asked for.
    sum_d: f64,
}

fn expand(nu: f64, x: f64, want_ratio: bool) -> Expansion {
    let z = x / nu;
    // sqrt(z^2 + 1) without hypot's overflow care where z^2 cannot overflow.
    let s = if z < 1e150 { z.mul_add(z, 1.0).sqrt() } else { z.hypot(1.0) };
    let p = 1.0 / s;
    let t = p * p;
    let c = coefficients();
    let step = p / nu;
    let mut scale = 1.0_f64;
    let (mut sum_u, mut sum_d) = (1.0_f64, 0.0_f64);
    let mut small_in_a_row = 0;
    for k in 1..=MAX_TERMS {
        scale *= step;
        let tu = scale * horner(&c.u[k], t);
        sum_u += tu;
        let td = if want_ratio {
            let td = scale * horner(&c.q[k], t);
            sum_d += td;
            td
        } else {
            0.0
        };
        // The expansion is asymptotic: stop after two consecutive negligible terms, so a term
        // that is small only because p sits near a root of U_k does not end the sum early.
        // D enters the ratio as p D against 1/(1+s) >= p/2: an absolute bound suits it too.
        if tu.abs().max(td.abs()) <= 0.125 * f64::EPSILON {
            small_in_a_row += 1;
            if small_in_a_row == 2 {
                break;
            }
        } else {
            small_in_a_row = 0;
        }
    }
    Expansion { s, z, p, sum_u, sum_d }
}

/// The part of log I_nu(x) - nu log x that depends on nu alone: nu ln nu + ln(2 pi nu) / 2.
pub(crate) fn order_constant(nu: f64) -> f64 {
    nu * nu.ln() + 0.5 * (std::f64::consts::TAU * nu).ln()
}

/// log I_nu(x) - nu log x from an expansion, given [`order_constant`] of nu.
///
/// nu eta - nu ln x = nu (s - ln(1+s)) - nu ln nu; this form has no cancellation for small z.
/// ln U - ln(s)/2 is taken as one logarithm, ln(U sqrt(p)), and ln(1+s) as a plain one (1+s
/// >= 2): two logarithms per evaluation instead of four.
fn scaled_from(nu: f64, constant: f64, e: &Expansion) -> f64 {
    nu * (e.s - (1.0 + e.s).ln()) - constant + (e.sum_u * e.p.sqrt()).ln()
}

/// I_{nu+1}/I_nu = z (1/(1+s) - p D/U) from an expansion that includes D.
fn ratio_from(e: &Expansion) -> f64 {
    e.z * (1.0 / (1.0 + e.s) - e.p * e.sum_d / e.sum_u)
}

/// log I_nu(x) - nu log x for nu >= DEBYE_MIN_NU and x > 0.
pub(crate) fn log_i_minus_nu_log_x(nu: f64, x: f64) -> f64 {
    scaled_from(nu, order_constant(nu), &expand(nu, x, false))
}

/// Both log I_nu(x) - nu log x and the ratio from one expansion (x > 0), sharing z, s, p and
/// the powers of p/nu: what the ProCo loss needs per pair. `constant` is [`order_constant`]
/// of nu, computed once by callers that evaluate many arguments at one order.
pub(crate) fn log_i_minus_nu_log_x_and_ratio(nu: f64, constant: f64, x: f64) -> (f64, f64) {
    let e = expand(nu, x, true);
    (scaled_from(nu, constant, &e), ratio_from(&e))
}

/// log I_nu(x) for nu >= DEBYE_MIN_NU and x > 0.
pub(crate) fn log_i(nu: f64, x: f64) -> f64 {
    let e = expand(nu, x, false);
    // eta = s - asinh(1/z): accurate for large z, where ln(z/(1+s)) would lose digits.
    let eta = e.s - (1.0 / e.z).asinh();
    nu * eta - 0.5 * (std::f64::consts::TAU * nu).ln() - 0.5 * e.s.ln() + e.sum_u.ln()
}

/// I_{nu+1}(x)/I_nu(x) for nu >= DEBYE_MIN_NU and x > 0.
pub(crate) fn ratio(nu: f64, x: f64) -> f64 {
    ratio_from(&expand(nu, x, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_coefficients_match_dlmf() {
        let c = coefficients();
        // U_1 = (3p - 5p^3)/24, U_2 = (81p^2 - 462p^4 + 385p^6)/1152, V_1 = (-9p + 7p^3)/24.
        assert!((c.u[1][0] - 3.0 / 24.0).abs() < 1e-16 && (c.u[1][1] + 5.0 / 24.0).abs() < 1e-16);
        let u2 = [81.0 / 1152.0, -462.0 / 1152.0, 385.0 / 1152.0];
        for (a, b) in c.u[2].iter().zip(u2) {
            assert!((a - b).abs() < 1e-16, "{a} vs {b}");
        }
        // Q_1 = 1/2; V_2 - U_2 = (p^2 - 1) p^2 Q_2(p^2) with V_2 = (-135p^2 + 594p^4 - 455p^6)/1152.
        assert_eq!(c.q[1], vec![0.5]);
        for pv in [0.1, 0.5, 0.9] {
            let t: f64 = pv * pv;
            let v2 = (-135.0 * t + 594.0 * t * t - 455.0 * t * t * t) / 1152.0;
            let u2 = horner(&c.u[2], t) * t;
            let want = (v2 - u2) / ((t - 1.0) * t);
            assert!((horner(&c.q[2], t) - want).abs() < 1e-15, "p = {pv}");
        }
        // U_k(1) are the Stirling-series coefficients of 1/Gamma: U_1(1) = -1/12, U_2(1) = 1/288.
        assert!((horner(&c.u[1], 1.0) + 1.0 / 12.0).abs() < 1e-16);
        assert!((horner(&c.u[2], 1.0) - 1.0 / 288.0).abs() < 1e-16);
    }
}
