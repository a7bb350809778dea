//! The closed form against `mc_check.json`, and against our own Monte-Carlo estimate drawn
//! with proco-vmf's Wood sampler: log E_{z'~vMF_j} exp(z.z'/tau) must equal s_j.

#[path = "../../proco-vmf/tests/support/mod.rs"]
mod support;

use proco::tch::Tensor;
use proco::{LogPrior, ProCoLoss};
use proco_vmf::{bessel_ratio, VonMisesFisher};
use rand::SeedableRng;
use support::load;

#[path = "common/vmf_fixture.rs"]
mod vmf_fixture;
use vmf_fixture::estimator_for;

#[test]
fn closed_form_matches_golden_and_our_monte_carlo() {
    let golden = load("mc_check.json");
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let m_samples = 20_000;
    let (mut compared, mut worst_z): (usize, f64) = (0, 0.0);
    for cfg in golden.at().get("configs").items() {
        let (p, c) = (cfg.get("p").usize(), cfg.get("num_classes").usize());
        let mu = cfg.get("mu").matrix(c, p);
        let kappa = cfg.get("kappa").vec(c);
        let est = estimator_for(&mu, &kappa, p);
        for (j, cj) in est.concentrations().iter().enumerate() {
            // kappa = p R / (1 - R^2) magnifies R's rounding by about 1 + 2 kappa / p.
            let tol = 1e-14 * (1.0 + 2.0 * kappa[j] / p as f64) * kappa[j];
            assert!((cj.kappa - kappa[j]).abs() <= tol, "kappa {} vs {}", cj.kappa, kappa[j]);
        }
        let prior = LogPrior::from_counts(&cfg.get("class_counts").vec(c)).unwrap();
        for check in cfg.get("sampler_checks").items() {
            let k = check.get("kappa").f64();
            let want = check.get("mean_cos_exact_bessel_ratio").f64();
            assert!((bessel_ratio(p as f64 / 2.0 - 1.0, k) - want).abs() <= 1e-13 * want, "{}", check.here());
        }
        let samplers: Vec<VonMisesFisher> = mu.chunks_exact(p).zip(&kappa).map(|(m, &k)| VonMisesFisher::new(m, k).unwrap()).collect();
        for result in cfg.get("results").items() {
            let tau = result.get("tau").f64();
            let loss_fn = ProCoLoss::new(p, tau).unwrap();
            for anchor in result.get("anchors").items() {
                let z = anchor.get("anchor").vec(p);
                let label = anchor.get("label").i64();
                let zt = Tensor::from_slice(&z).view([1, p as i64]);
                let s = loss_fn.contrast_logits(&zt, &est).unwrap();
                let got = Vec::<f64>::try_from(&s.logits.flatten(0, -1)).unwrap();
                assert_eq!(got.len(), c, "{}: one logit per class", anchor.here());
                for class in anchor.get("classes").items() {
                    let j = class.get("cls").usize();
                    assert!(j < c, "{}: class {j} of {c}", class.here());
                    let want = class.get("closed_form_s").f64();
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
                let want = anchor.get("loss_closed_form").f64();
                assert!((loss - want).abs() <= 1e-10 * want.abs(), "p={p} tau={tau}: loss {loss} vs {want}");
            }
        }
    }
    eprintln!("{compared} closed-form logits checked against our Monte Carlo, max |z| = {worst_z:.2}");
}
