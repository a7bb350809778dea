//! Exact sampling from vMF(mu, kappa) on S^{p-1} by Wood's (1994) rejection algorithm.
//!
//! The cosine w = mu.z is drawn by rejection from a Beta proposal; the tangent part is a
//! uniform direction orthogonal to mu. The constants use the cancellation-free form
//! b = (p-1) / (2 kappa + sqrt(4 kappa^2 + (p-1)^2)), so kappa up to 1e5 and beyond is fine.

use rand::Rng;
use rand_distr::{Beta, Distribution, StandardNormal};

use crate::error::VmfError;

/// A vMF distribution ready to sample: unit mean direction, concentration, Wood's constants.
#[derive(Debug, Clone)]
pub struct VonMisesFisher {
    mu: Vec<f64>,
    kappa: f64,
    b: f64,
    x0: f64,
    c: f64,
    beta: Beta<f64>,
}

impl VonMisesFisher {
    /// Builds vMF(mu / |mu|, kappa). `mu` must be finite, non-zero, of length p >= 2; kappa
    /// finite and >= 0 (0 is the uniform distribution).
    pub fn new(mu: &[f64], kappa: f64) -> Result<Self, VmfError> {
        let p = mu.len();
        if p < 2 {
            return Err(VmfError::InvalidDimension { p });
        }
        if !(kappa.is_finite() && kappa >= 0.0) {
            return Err(VmfError::InvalidConcentration { kappa });
        }
        let norm = mu.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !(norm.is_finite() && norm > 0.0) {
            return Err(VmfError::InvalidMeanDirection { reason: format!("|mu| = {norm}, need a finite non-zero vector") });
        }
        let pm1 = (p - 1) as f64;
        let b = pm1 / (2.0 * kappa + (4.0 * kappa * kappa + pm1 * pm1).sqrt());
        let x0 = (1.0 - b) / (1.0 + b);
        let c = kappa * x0 + pm1 * (1.0 - x0 * x0).ln();
        // Beta((p-1)/2, (p-1)/2) is a valid proposal for every p >= 2, kappa = 0 included
        // (then b = 1, x0 = 0, c = 0 and every draw is accepted).
        let beta = Beta::new(pm1 / 2.0, pm1 / 2.0).map_err(|e| VmfError::InvalidMeanDirection { reason: e.to_string() })?;
        Ok(Self { mu: mu.iter().map(|v| v / norm).collect(), kappa, b, x0, c, beta })
    }

    /// The dimension p of the ambient space.
    pub fn dim(&self) -> usize {
        self.mu.len()
    }

    /// Draws the cosine w = mu.z alone (what the mean-resultant-length checks need).
    pub fn sample_cosine<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let pm1 = (self.dim() - 1) as f64;
        loop {
            let z: f64 = self.beta.sample(rng);
            let w = (1.0 - (1.0 + self.b) * z) / (1.0 - (1.0 - self.b) * z);
            let u: f64 = rng.random();
            if self.kappa * w + pm1 * (1.0 - self.x0 * w).ln() - self.c >= u.ln() {
                return w;
            }
        }
    }

    /// Draws one unit vector z ~ vMF(mu, kappa) of length p.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Vec<f64> {
        let p = self.dim();
        let w = self.sample_cosine(rng);
        // Uniform direction orthogonal to mu: project a uniform direction and renormalise.
        let v = loop {
            let mut v = random_unit_vector(p, rng);
            let along = dot(&v, &self.mu);
            v.iter_mut().zip(&self.mu).for_each(|(vi, mi)| *vi -= along * mi);
            let n = dot(&v, &v).sqrt();
            if n > 1e-6 {
                v.iter_mut().for_each(|vi| *vi /= n);
                break v;
            }
        };
        let t = (1.0 - w * w).max(0.0).sqrt();
        self.mu.iter().zip(&v).map(|(m, vi)| w * m + t * vi).collect()
    }
}

/// A direction drawn uniformly from the unit sphere S^{p-1} (a normalised Gaussian vector).
/// This is also ProCo's initial estimator direction. p must be >= 1.
pub fn random_unit_vector<R: Rng + ?Sized>(p: usize, rng: &mut R) -> Vec<f64> {
    loop {
        let v: Vec<f64> = (0..p).map(|_| rng.sample(StandardNormal)).collect();
        let n = dot(&v, &v).sqrt();
        if n > 1e-150 {
            return v.into_iter().map(|x| x / n).collect();
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmf::mean_resultant_length;
    use rand::SeedableRng;

    /// The sample mean of mu.z must match A_p(kappa) within its standard error.
    #[test]
    fn mean_cosine_equals_mean_resultant_length() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 40_000;
        for p in [2usize, 3, 16, 128, 1024] {
            for kappa in [0.0, 1.0, 10.0, 300.0, 1e5] {
                let mut mu = vec![0.0; p];
                mu[p - 1] = 1.0;
                mu[0] = 0.5;
                let d = VonMisesFisher::new(&mu, kappa).unwrap();
                let ws: Vec<f64> = (0..n).map(|_| d.sample_cosine(&mut rng)).collect();
                let mean = ws.iter().sum::<f64>() / n as f64;
                let var = ws.iter().map(|w| (w - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
                let se = (var / n as f64).sqrt().max(1e-15);
                let want = mean_resultant_length(p, kappa).unwrap();
                let z = (mean - want) / se;
                assert!(z.abs() < 4.5, "p={p} kappa={kappa}: mean {mean} vs A_p {want} (z = {z})");
            }
        }
    }

    /// On the circle (p = 2) the uniform distribution's cosine follows the arcsine law,
    /// E[w^2] = 1/2 (a uniform w on [-1, 1] would give 1/3); on S^2 it is uniform, E[w^2] = 1/3.
    #[test]
    fn uniform_limit_has_the_right_cosine_law() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for (p, want) in [(2usize, 0.5), (3, 1.0 / 3.0)] {
            let d = VonMisesFisher::new(&vec![1.0; p], 0.0).unwrap();
            let n = 100_000;
            let m2 = (0..n).map(|_| d.sample_cosine(&mut rng).powi(2)).sum::<f64>() / n as f64;
            assert!((m2 - want).abs() < 0.005, "p={p}: E[w^2] = {m2}, want {want}");
        }
    }

    #[test]
    fn samples_are_unit_vectors_around_mu() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mu = [3.0, 0.0, 4.0, 0.0];
        let d = VonMisesFisher::new(&mu, 50.0).unwrap();
        let mut mean_cos = 0.0;
        for _ in 0..2000 {
            let z = d.sample(&mut rng);
            assert!((dot(&z, &z) - 1.0).abs() < 1e-12);
            mean_cos += dot(&z, &[0.6, 0.0, 0.8, 0.0]) / 2000.0;
        }
        let want = mean_resultant_length(4, 50.0).unwrap();
        assert!((mean_cos - want).abs() < 0.01, "{mean_cos} vs {want}");
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(matches!(VonMisesFisher::new(&[1.0], 1.0), Err(VmfError::InvalidDimension { p: 1 })));
        assert!(matches!(VonMisesFisher::new(&[0.0, 0.0], 1.0), Err(VmfError::InvalidMeanDirection { .. })));
        assert!(matches!(VonMisesFisher::new(&[1.0, 0.0], f64::NAN), Err(VmfError::InvalidConcentration { .. })));
    }
}
