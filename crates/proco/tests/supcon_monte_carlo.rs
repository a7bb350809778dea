//! ProCo is SupCon's infinite-pair limit: against a contrast set of M samples drawn from the
//! classes' vMF distributions, n_j of class j in proportion to the prior, SupCon's L_in for an
//! anchor less log |P(i)| tends to the ProCo loss of that anchor, and so does its gradient.
//! Checked within the Monte Carlo error measured over independent replicates.

use proco::tch::{Kind, Tensor};
use proco::{ContrastSet, LogPrior, Positives, ProCoLoss, SupConLoss};
use proco_vmf::{random_unit_vector, VonMisesFisher};
use rand::SeedableRng;

#[path = "common/vmf_fixture.rs"]
mod vmf_fixture;
use vmf_fixture::estimator_for;

struct Case {
    p: usize,
    tau: f64,
    kappa: Vec<f64>,
    counts: Vec<usize>,
}

/// Value and gradient (in the anchor z) of one anchor's loss, `f` given z as a 1 x p leaf.
fn value_and_grad(z: &[f64], f: impl Fn(&Tensor) -> Tensor) -> (f64, Vec<f64>) {
    let zt = Tensor::from_slice(z).view([1, z.len() as i64]).set_requires_grad(true);
    let loss = f(&zt);
    loss.backward();
    (loss.double_value(&[]), Vec::<f64>::try_from(&zt.grad().flatten(0, -1)).unwrap())
}

fn check(case: &Case, seed: u64) -> f64 {
    let (p, c) = (case.p, case.kappa.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mu: Vec<f64> = (0..c).flat_map(|_| random_unit_vector(p, &mut rng)).collect();
    let samplers: Vec<VonMisesFisher> = mu.chunks_exact(p).zip(&case.kappa).map(|(m, &k)| VonMisesFisher::new(m, k).unwrap()).collect();
    let estimator = estimator_for(&mu, &case.kappa, p);
    let counts: Vec<f64> = case.counts.iter().map(|&n| n as f64).collect();
    let prior = LogPrior::from_counts(&counts).unwrap();
    let proco_loss = ProCoLoss::new(p, case.tau).unwrap();
    let supcon = SupConLoss::new(case.tau).unwrap().with_positives(Positives::LogOfMean);

    // Anchors: one near each class mean and one anywhere, with every label.
    let mut anchors: Vec<(Vec<f64>, i64)> = Vec::new();
    for j in 0..c {
        anchors.push((samplers[j].sample(&mut rng), j as i64));
        anchors.push((random_unit_vector(p, &mut rng), ((j + 1) % c) as i64));
    }
    let exact: Vec<(f64, Vec<f64>)> = anchors
        .iter()
        .map(|(z, y)| value_and_grad(z, |zt| proco_loss.loss(zt, &Tensor::from_slice(&[*y]), &estimator, &prior).unwrap()))
        .collect();

    const REPLICATES: usize = 24;
    let mut draws: Vec<Vec<(f64, Vec<f64>)>> = vec![Vec::new(); anchors.len()];
    for _ in 0..REPLICATES {
        let mut feats = Vec::new();
        let mut labels = Vec::new();
        for (j, &n) in case.counts.iter().enumerate() {
            for _ in 0..n {
                feats.extend(samplers[j].sample(&mut rng));
                labels.push(j as i64);
            }
        }
        let set_features = Tensor::from_slice(&feats).view([labels.len() as i64, p as i64]);
        let set_labels = Tensor::from_slice(&labels);
        let set = ContrastSet { features: &set_features, labels: &set_labels };
        for (a, (z, y)) in anchors.iter().enumerate() {
            let n_pos = case.counts[*y as usize] as f64;
            draws[a].push(value_and_grad(z, |zt| {
                supcon.per_anchor(zt, &Tensor::from_slice(&[*y]), c, Some(set)).unwrap().sum(Kind::Double) - n_pos.ln()
            }));
        }
    }

    let mut worst: f64 = 0.0;
    let zscore = |values: &[f64], want: f64, what: &str| -> f64 {
        let r = values.len() as f64;
        let mean = values.iter().sum::<f64>() / r;
        let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (r - 1.0)).sqrt();
        let se = sd / r.sqrt();
        // A floor for components the samples pin down to rounding.
        let z = (mean - want) / se.max(1e-12 * want.abs().max(1.0));
        assert!(z.abs() < 6.0, "p={} tau={} {what}: Monte Carlo SupCon {mean} (se {se}) vs ProCo {want}, z = {z}", case.p, case.tau);
        z.abs()
    };
    for (a, (value, grad)) in exact.iter().enumerate() {
        let values: Vec<f64> = draws[a].iter().map(|d| d.0).collect();
        worst = worst.max(zscore(&values, *value, &format!("anchor {a} loss")));
        for (k, g) in grad.iter().enumerate() {
            let comps: Vec<f64> = draws[a].iter().map(|d| d.1[k]).collect();
            worst = worst.max(zscore(&comps, *g, &format!("anchor {a} gradient[{k}]")));
        }
        // And not merely consistent: the Monte Carlo mean is close in absolute terms.
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert!((mean - value).abs() < 0.02 * value.abs().max(1.0), "anchor {a}: {mean} vs {value}");
    }
    worst
}

#[test]
fn supcon_with_many_sampled_pairs_tends_to_proco() {
    let cases = [
        Case { p: 8, tau: 0.5, kappa: vec![3.0, 8.0, 20.0], counts: vec![24_000, 12_000, 4_000] },
        Case { p: 32, tau: 0.2, kappa: vec![40.0, 120.0, 300.0, 60.0], counts: vec![20_000, 10_000, 5_000, 2_500] },
    ];
    for (i, case) in cases.iter().enumerate() {
        let worst = check(case, 7 + i as u64);
        eprintln!("p={} tau={}: worst |z| over losses and gradient components {worst:.2}", case.p, case.tau);
    }
}
