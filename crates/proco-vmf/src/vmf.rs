//! The von Mises-Fisher quantities ProCo needs: normaliser, mean resultant length, and the
//! concentration estimated from a mean resultant length.
//!
//! vMF(mu, kappa) on the unit sphere S^{p-1} in R^p has density C_p(kappa) exp(kappa mu.z),
//! with C_p(kappa) = kappa^{nu} / ((2 pi)^{p/2} I_nu(kappa)), nu = p/2 - 1.

use crate::bessel::{bessel_ratio, log_bessel_i_minus_nu_log_x};
use crate::error::VmfError;

/// The Bessel order nu = p/2 - 1 of the vMF distribution on S^{p-1} (half-integer for odd p).
pub fn bessel_order(p: usize) -> Result<f64, VmfError> {
    if p < 2 {
        return Err(VmfError::InvalidDimension { p });
    }
    Ok(p as f64 / 2.0 - 1.0)
}

fn check_kappa(kappa: f64) -> Result<(), VmfError> {
    if kappa.is_finite() && kappa >= 0.0 {
        Ok(())
    } else {
        Err(VmfError::InvalidConcentration { kappa })
    }
}

/// log C_p(kappa), the log normaliser of vMF on S^{p-1}, for p >= 2 and finite kappa >= 0.
///
/// At kappa = 0 it is the log of the uniform density, -log(2 pi^{p/2} / Gamma(p/2)).
pub fn log_normalizer(p: usize, kappa: f64) -> Result<f64, VmfError> {
    let nu = bessel_order(p)?;
    check_kappa(kappa)?;
    Ok(-(p as f64 / 2.0) * std::f64::consts::TAU.ln() - log_bessel_i_minus_nu_log_x(nu, kappa))
}

/// A_p(kappa) = I_{p/2}(kappa) / I_{p/2-1}(kappa): the expected cosine E[mu.z] under
/// vMF(mu, kappa), in [0, 1). p >= 2, finite kappa >= 0.
pub fn mean_resultant_length(p: usize, kappa: f64) -> Result<f64, VmfError> {
    let nu = bessel_order(p)?;
    check_kappa(kappa)?;
    Ok(bessel_ratio(nu, kappa))
}

fn check_r(r: f64) -> Result<(), VmfError> {
    if (0.0..1.0).contains(&r) {
        Ok(())
    } else {
        Err(VmfError::InvalidResultantLength { r })
    }
}

/// ProCo's closed-form concentration kappa = p R / (1 - R^2), the estimate the ProCo
/// estimator uses (and the golden vectors assume). R in [0, 1).
pub fn kappa_proco(p: usize, r: f64) -> Result<f64, VmfError> {
    bessel_order(p)?;
    check_r(r)?;
    Ok(p as f64 * r / (1.0 - r * r))
}

/// Banerjee et al.'s (2005) approximation kappa = R (p - R^2) / (1 - R^2), the starting point
/// of Sra's (2012) Newton refinement. R in [0, 1).
pub fn kappa_banerjee(p: usize, r: f64) -> Result<f64, VmfError> {
    bessel_order(p)?;
    check_r(r)?;
    Ok(r * (p as f64 - r * r) / (1.0 - r * r))
}

/// Refines a concentration estimate by Newton's method on A_p(kappa) = R (Sra 2012), using
/// A'(kappa) = 1 - A^2 - (p-1) A / kappa. Each step roughly squares the relative error; two or
/// three steps from [`kappa_banerjee`] reach double precision. Returns the maximum-likelihood
/// kappa for mean resultant length R in [0, 1).
pub fn kappa_newton(p: usize, r: f64, kappa0: f64, steps: usize) -> Result<f64, VmfError> {
    let nu = bessel_order(p)?;
    check_r(r)?;
    check_kappa(kappa0)?;
    let mut kappa = kappa0;
    for _ in 0..steps {
        if kappa <= 0.0 {
            break;
        }
        let a = bessel_ratio(nu, kappa);
        let slope = 1.0 - a * a - (p as f64 - 1.0) * a / kappa;
        if !(slope > 0.0) {
            break;
        }
        let next = kappa - (a - r) / slope;
        // Newton on this concave-in-log function can overshoot below 0 from far away; halve instead.
        kappa = if next > 0.0 { next } else { 0.5 * kappa };
    }
    Ok(kappa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_limit_of_the_normaliser() {
        // p = 3: uniform density on S^2 is 1/(4 pi).
        let l = log_normalizer(3, 0.0).unwrap();
        assert!((l + (4.0 * std::f64::consts::PI).ln()).abs() < 1e-15);
        // p = 3 closed form: C_3(k) = k / (4 pi sinh k).
        for k in [1e-3f64, 0.5, 3.0, 50.0, 500.0] {
            // log sinh k = k + log(1 - e^{-2k}) - log 2.
            let log_sinh = k + (-(-2.0 * k).exp_m1()).ln() - std::f64::consts::LN_2;
            let want = k.ln() - (4.0 * std::f64::consts::PI).ln() - log_sinh;
            let got = log_normalizer(3, k).unwrap();
            assert!((got - want).abs() < 1e-13 * want.abs().max(1.0), "k={k}: {got} vs {want}");
        }
    }

    #[test]
    fn newton_recovers_kappa_from_its_own_mean_resultant_length() {
        for p in [2usize, 3, 16, 128, 1024] {
            for kappa in [0.5, 10.0, 300.0, 5e4] {
                let r = mean_resultant_length(p, kappa).unwrap();
                let k0 = kappa_banerjee(p, r).unwrap();
                let k = kappa_newton(p, r, k0, 6).unwrap();
                assert!((k - kappa).abs() < 1e-9 * kappa, "p={p} kappa={kappa}: {k} (start {k0})");
            }
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert_eq!(log_normalizer(1, 1.0), Err(VmfError::InvalidDimension { p: 1 }));
        assert!(matches!(log_normalizer(3, -1.0), Err(VmfError::InvalidConcentration { .. })));
        assert!(matches!(kappa_proco(3, 1.0), Err(VmfError::InvalidResultantLength { .. })));
        assert!(matches!(kappa_banerjee(3, f64::NAN), Err(VmfError::InvalidResultantLength { .. })));
        assert_eq!(kappa_proco(128, 0.9).unwrap(), 128.0 * 0.9 / (1.0 - 0.81));
    }
}
