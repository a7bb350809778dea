//! The closed form against `mc_check.json`, and against our own Monte-Carlo estimate drawn
//! with proco-vmf's Wood sampler: log E_{z'~vMF_j} exp(z.z'/tau) must equal s_j.

#[path = "../../proco-vmf/tests/support/mod.rs"]
mod support;

use proco::tch::Tensor;
use proco::{LogPrior, ProCoLoss, VmfEstimator};
use proco_vmf::{bessel_ratio, VonMisesFisher};
use rand::SeedableRng;
use support::{f, load, vec1, vec2};

/// Means with |m| = R such that p R / (1 - R^2) = kappa, i.e. the estimator reproduces kappa.
fn estimator_for(mu: &[Vec<f64>], kappa: &[f64], p: usize) -> VmfEstimator {
    let means = mu
        .iter()
        .zip(kappa)
        .flat_map(|(m, &k)| {
            let pf = p as f64;
            let r = 2.0 * k / (pf + (pf * pf + 4.0 * k * k).sqrt());
            m.iter().map(move |v| v * r).collect::<Vec<_>>()
        })
        .collect();
    VmfEstimator::from_state(mu.len(), p, means, vec![1.0; mu.len()]).unwrap()
}

#[test]
fn closed_form_matches_golden_and_our_monte_carlo() {
    let golden = load("mc_check.json");
    let configs = golden["configs"].as_array().expect("configs");
    assert_eq!(configs.len(), 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let m_samples = 20_000;
    let (mut compared, mut worst_z): (usize, f64) = (0, 0.0);
    for cfg in configs {
        let p = cfg["p"].as_u64().unwrap() as usize;
        let mu = vec2(&cfg["mu"]);
        let kappa = vec1(&cfg["kappa"]);
        let est = estimator_for(&mu, &kappa, p);
        for (j, cj) in est.concentrations().iter().enumerate() {
            assert!((cj.kappa - kappa[j]).abs() < 1e-12 * kappa[j], "kappa {} vs {}", cj.kappa, kappa[j]);
        }
        let prior = LogPrior::from_counts(&vec1(&cfg["class_counts"])).unwrap();
        for check in cfg["sampler_checks"].as_array().unwrap() {
            let k = f(&check["kappa"]);
            let want = f(&check["mean_cos_exact_bessel_ratio"]);
            assert!((bessel_ratio(p as f64 / 2.0 - 1.0, k) - want).abs() <= 1e-13 * want);
        }
        let samplers: Vec<VonMisesFisher> = mu.iter().zip(&kappa).map(|(m, &k)| VonMisesFisher::new(m, k).unwrap()).collect();
        for result in cfg["results"].as_array().unwrap() {
            let tau = f(&result["tau"]);
            let loss_fn = ProCoLoss::new(p, tau).unwrap();
            for anchor in result["anchors"].as_array().unwrap() {
                let z = vec1(&anchor["anchor"]);
                let label = anchor["label"].as_i64().unwrap();
                let zt = Tensor::from_slice(&z).view([1, p as i64]);
                let s = loss_fn.contrast_logits(&zt, &est).unwrap();
                let got = Vec::<f64>::try_from(&s.logits.flatten(0, -1)).unwrap();
                for class in anchor["classes"].as_array().unwrap() {
                    let j = class["cls"].as_u64().unwrap() as usize;
                    let want = f(&class["closed_form_s"]);
                    assert!((got[j] - want).abs() <= 1e-11 * want.abs().max(1.0), "p={p} tau={tau} class {j}: s {} vs {want}", got[j]);
                    // Our own Monte Carlo: log mean exp(z.z'/tau), standard error by the delta method.
                    let vals: Vec<f64> = (0..m_samples)
                        .map(|_| {
                            let zp = samplers[j].sample(&mut rng);
                            (z.iter().zip(&zp).map(|(a, b)| a * b).sum::<f64>() / tau - want).exp()
                        })
                        .collect();
                    let mean = vals.iter().sum::<f64>() / m_samples as f64;
                    let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (m_samples - 1) as f64;
                    let se_log = (var / m_samples as f64).sqrt() / mean;
                    let zscore = mean.ln() / se_log;
                    assert!(zscore.abs() < 5.0, "p={p} tau={tau} class {j}: MC log-mean-exp off by {} (z = {zscore})", mean.ln());
                    worst_z = worst_z.max(zscore.abs());
                    compared += 1;
                }
                let loss = loss_fn.loss(&zt, &Tensor::from_slice(&[label]), &est, &prior).unwrap().double_value(&[]);
                let want = f(&anchor["loss_closed_form"]);
                assert!((loss - want).abs() <= 1e-10 * want.abs(), "p={p} tau={tau}: loss {loss} vs {want}");
            }
        }
    }
    assert_eq!(compared, 48);
    eprintln!("{compared} closed-form logits checked against our Monte Carlo, max |z| = {worst_z:.2}");
}
