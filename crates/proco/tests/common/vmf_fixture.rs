//! Estimators with a chosen mean direction and concentration per class, shared by the Monte
//! Carlo tests.

use proco::VmfEstimator;

/// The estimator whose classes are vMF(mu_j, kappa_j): running means m_j = R_j mu_j with
/// p R / (1 - R^2) = kappa, so the estimator reproduces kappa. `mu` holds C unit rows of p
/// values (row-major), `kappa` C positive values.
pub fn estimator_for(mu: &[f64], kappa: &[f64], p: usize) -> VmfEstimator {
    assert_eq!(mu.len(), kappa.len() * p, "one mean direction of p = {p} values per kappa");
    let pf = p as f64;
    let means = mu
        .chunks_exact(p)
        .zip(kappa)
        .flat_map(|(m, &k)| {
            let r = 2.0 * k / (pf + (pf * pf + 4.0 * k * k).sqrt());
            m.iter().map(move |v| v * r)
        })
        .collect();
    VmfEstimator::from_state(kappa.len(), p, means, vec![1.0; kappa.len()]).unwrap()
}
