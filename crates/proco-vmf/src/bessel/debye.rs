//! Debye's uniform asymptotic expansion in the order, for large nu and every x > 0.
//!
//! With z = x/nu, s = sqrt(1+z^2), p = 1/s and eta = s + ln(z/(1+s)):
//!
//! I_nu(nu z)  ~ e^{nu eta} / (sqrt(2 pi nu) s^{1/2}) * sum_k U_k(p) / nu^k,
//! I'_nu(nu z) ~ s^{1/2} e^{nu eta} / (sqrt(2 pi nu) z) * sum_k V_k(p) / nu^k,
//!
//! (DLMF 10.41.3-4). The expansion is uniform in z, so its accuracy depends on nu alone:
//! with nu >= [`super::DEBYE_MIN_NU`] and up to [`MAX_TERMS`] terms the truncation error is
//! below 1e-17 for every x (checked against the power series in the tests). The ratio is
//! I_{nu+1}/I_nu = I'_nu/I_nu - 1/z = (s V/U - 1)/z; the subtraction loses at most two bits
//! for z >= 1, which is where the dispatcher uses it (the continued fraction covers z < 1).
//!
//! U_k(p) and V_k(p) are p^k times a polynomial of degree k in t = p^2. Their coefficients are
//! generated once from the recurrences
//! U_{k+1} = p^2 (1-p^2) U_k' / 2 + (1/8) int_0^p (1 - 5 t^2) U_k(t) dt and
//! V_k = U_k + p (p^2 - 1) (U_{k-1} / 2 + p U_{k-1}'),
//! in f64; their own rounding is far below what the 1/nu^k factors leave visible.

use std::sync::OnceLock;

/// Number of correction terms generated (U_0..U_{MAX_TERMS}).
pub(crate) const MAX_TERMS: usize = 20;

/// Coefficients of U_k and V_k in t = p^2 (U_k(p) = p^k * sum_j u[k][j] t^j).
struct Coefficients {
    u: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
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
        let p3_minus_p = [0.0, -1.0, 0.0, 1.0];
        let mut u_dense: Vec<Vec<f64>> = vec![vec![1.0]];
        for k in 0..MAX_TERMS {
            let uk = &u_dense[k];
            let a = mul(&half_p2_one_minus_p2, &derivative(uk));
            let b = integral_from_zero(&mul(&one_minus_5p2_over_8, uk));
            u_dense.push(add(&a, &b));
        }
        let mut v_dense: Vec<Vec<f64>> = vec![vec![1.0]];
        for k in 1..=MAX_TERMS {
            let prev = &u_dense[k - 1];
            let half_prev: Vec<f64> = prev.iter().map(|c| 0.5 * c).collect();
            let p_deriv = mul(&[0.0, 1.0], &derivative(prev));
            let inner = add(&half_prev, &p_deriv);
            v_dense.push(add(&u_dense[k], &mul(&p3_minus_p, &inner)));
        }
        Coefficients {
            u: u_dense.iter().enumerate().map(|(k, a)| to_t_basis(a, k)).collect(),
            v: v_dense.iter().enumerate().map(|(k, a)| to_t_basis(a, k)).collect(),
        }
    })
}

fn horner(c: &[f64], t: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &a| acc.mul_add(t, a))
}

/// Shared pieces of one evaluation.
struct Expansion {
    s: f64,
    z: f64,
    sum_u: f64,
    sum_v: f64,
}

fn expand(nu: f64, x: f64, want_v: bool) -> Expansion {
    let z = x / nu;
    let s = z.hypot(1.0);
    let p = 1.0 / s;
    let t = p * p;
    let c = coefficients();
    let step = p / nu;
    let mut scale = 1.0_f64;
    let (mut sum_u, mut sum_v) = (1.0_f64, 1.0_f64);
    let mut small_in_a_row = 0;
    for k in 1..=MAX_TERMS {
        scale *= step;
        let tu = scale * horner(&c.u[k], t);
        sum_u += tu;
        let tv = if want_v {
            let tv = scale * horner(&c.v[k], t);
            sum_v += tv;
            tv
        } else {
            0.0
        };
        // The expansion is asymptotic: stop after two consecutive negligible terms, so a term
        // that is small only because p sits near a root of U_k does not end the sum early.
        if tu.abs().max(tv.abs()) <= 0.125 * f64::EPSILON {
            small_in_a_row += 1;
            if small_in_a_row == 2 {
                break;
            }
        } else {
            small_in_a_row = 0;
        }
    }
    Expansion { s, z, sum_u, sum_v }
}

/// log I_nu(x) - nu log x from an expansion.
///
/// nu eta - nu ln x = nu (s - ln(1+s)) - nu ln nu; this form has no cancellation for small z.
fn scaled_from(nu: f64, e: &Expansion) -> f64 {
    nu * (e.s - e.s.ln_1p()) - nu * nu.ln() - 0.5 * (std::f64::consts::TAU * nu).ln() - 0.5 * e.s.ln() + e.sum_u.ln()
}

/// I_{nu+1}/I_nu = I'_nu/I_nu - 1/z from an expansion that includes the V sums.
fn ratio_from(e: &Expansion) -> f64 {
    (e.s * (e.sum_v / e.sum_u) - 1.0) / e.z
}

/// log I_nu(x) - nu log x for nu >= DEBYE_MIN_NU and x > 0.
pub(crate) fn log_i_minus_nu_log_x(nu: f64, x: f64) -> f64 {
    scaled_from(nu, &expand(nu, x, false))
}

/// Both log I_nu(x) - nu log x and the ratio from one expansion (x >= nu), sharing z, s, p and
/// the powers of 1/nu: what the ProCo loss needs per pair.
pub(crate) fn log_i_minus_nu_log_x_and_ratio(nu: f64, x: f64) -> (f64, f64) {
    let e = expand(nu, x, true);
    (scaled_from(nu, &e), ratio_from(&e))
}

/// log I_nu(x) for nu >= DEBYE_MIN_NU and x > 0.
pub(crate) fn log_i(nu: f64, x: f64) -> f64 {
    let e = expand(nu, x, false);
    // eta = s - asinh(1/z): accurate for large z, where ln(z/(1+s)) would lose digits.
    let eta = e.s - (1.0 / e.z).asinh();
    nu * eta - 0.5 * (std::f64::consts::TAU * nu).ln() - 0.5 * e.s.ln() + e.sum_u.ln()
}

/// I_{nu+1}(x)/I_nu(x) for nu >= DEBYE_MIN_NU and x >= nu (z >= 1).
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
        assert!((c.v[1][0] + 9.0 / 24.0).abs() < 1e-16 && (c.v[1][1] - 7.0 / 24.0).abs() < 1e-16);
        // U_k(1) are the Stirling-series coefficients of 1/Gamma: U_1(1) = -1/12, U_2(1) = 1/288.
        assert!((horner(&c.u[1], 1.0) + 1.0 / 12.0).abs() < 1e-16);
        assert!((horner(&c.u[2], 1.0) - 1.0 / 288.0).abs() < 1e-16);
    }
}
