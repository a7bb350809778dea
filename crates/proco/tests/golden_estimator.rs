//! VmfEstimator against every step of every sequence in `estimator_cases.json`, and the
//! epoch swap of the estimator pair.

#[path = "../../proco-vmf/tests/support/mod.rs"]
mod support;

use proco::tch::Tensor;
use proco::estimator::{batch_statistics, TensorUpdate};
use proco::{EstimatorPair, VmfEstimator};
use rand::SeedableRng;
use support::{load, zip_exact, At};

fn state(v: &At, c: usize, p: usize) -> VmfEstimator {
    VmfEstimator::from_state(c, p, v.get("means").matrix(c, p), v.get("counts").vec(c))
        .unwrap_or_else(|e| panic!("{}: state refused: {e}", v.here()))
}

fn check_derived(est: &VmfEstimator, want: &At, what: &str, informational_flags: &[usize]) {
    let c = est.counts().len();
    let conc = est.concentrations();
    let (r, kappa, logc) = (want.get("R").vec(c), want.get("kappa").vec(c), want.get("logc").vec(c));
    let flags = want.get("kappa_flag").strs(c);
    for (j, cj) in conc.iter().enumerate() {
        assert!((cj.r - r[j]).abs() <= 2e-15 * r[j].max(1e-300), "{what} class {j}: R {} vs {}", cj.r, r[j]);
        let cond = 2.0 / (1.0 - r[j] * r[j]).abs().max(1e-300);
        if kappa[j] < 1e5 {
            let tol = (1e-15 + 4e-16 * cond) * kappa[j];
            assert!((cj.kappa - kappa[j]).abs() <= tol, "{what} class {j}: kappa {} vs {}", cj.kappa, kappa[j]);
            assert!((cj.logc - logc[j]).abs() <= 1e-13 * logc[j].abs().max(1.0) + 2.0 * tol,
                "{what} class {j}: logc {} vs {}", cj.logc, logc[j]);
        } else {
            assert_eq!(cj.kappa, 1e5, "{what} class {j}: clamped kappa");
            assert!((cj.logc - logc[j]).abs() <= 1e-13 * logc[j].abs().max(1.0), "{what} class {j}: logc {} vs {}", cj.logc, logc[j]);
        }
        // README: for a class seen once, R = 1 up to rounding and the flag depends on how |z| rounds.
        if !informational_flags.contains(&j) {
            assert_eq!(cj.flag.as_str(), flags[j], "{what} class {j}: flag");
        }
    }
}

#[test]
fn every_step_of_every_sequence() {
    let golden = load("estimator_cases.json");
    let mut steps_checked = 0;
    for seq in golden.at().get("sequences").items() {
        let name = seq.get("name").str();
        let (p, c) = (seq.get("p").usize(), seq.get("num_classes").usize());
        let initial = seq.get("initial_state");
        check_derived(&state(&initial, c, p), &initial, &format!("{name} initial"), &[]);
        let mut prev = initial;
        for (k, step) in seq.get("steps").items().into_iter().enumerate() {
            let what = format!("{name} step {k}");
            let mut est = state(&prev, c, p);
            let labels = step.get("batch_labels").ints_any();
            let feats = step.get("batch_features").matrix(labels.len(), p);
            let z = Tensor::from_slice(&feats).view([labels.len() as i64, p as i64]);
            let y = Tensor::from_slice(&labels);
            let stats = batch_statistics(&z, &y, c, p).unwrap();
            let want = step.get("expected");
            assert_eq!(stats.counts(), want.get("batch_class_counts").vec(c).as_slice(), "{what}: batch counts");
            let weights = est.update_weights(&stats);
            let want_weights = want.get("update_weight").vec(c);
            for (j, (a, b)) in zip_exact(&weights, &want_weights, &what).enumerate() {
                assert!((a - b).abs() <= 1e-16 * b.max(1.0), "{what} class {j}: weight {a} vs {b}");
            }
            est.apply(&stats).unwrap();
            let counts = want.get("counts").vec(c);
            assert_eq!(est.counts(), counts.as_slice(), "{what}: counts");
            let means = want.get("means").matrix(c, p);
            for (i, (a, b)) in zip_exact(est.means(), &means, &what).enumerate() {
                assert!((a - b).abs() <= 1e-15, "{what} mean entry {i}: {a} vs {b}");
            }
            // A class seen exactly once has R = 1 up to rounding: its flag is informational.
            let seen_once: Vec<usize> = counts.iter().enumerate().filter(|(_, &n)| n == 1.0).map(|(j, _)| j).collect();
            check_derived(&est, &want, &what, &seen_once);
            prev = want;
            steps_checked += 1;
        }
    }
    eprintln!("estimator_cases.json: {steps_checked} steps checked");
}

#[test]
fn statistics_merge_like_one_big_batch() {
    // Two devices' halves of a batch, summed, update the estimator exactly like the whole batch.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let (c, p, n) = (5usize, 8usize, 40i64);
    let z = Tensor::randn([n, p as i64], (proco::tch::Kind::Double, proco::tch::Device::Cpu));
    let z = &z / z.norm_scalaropt_dim(2, [1i64].as_slice(), true);
    let y = Tensor::randint(c as i64, [n], (proco::tch::Kind::Int64, proco::tch::Device::Cpu));
    let mut whole = VmfEstimator::new(c, p, &mut rng).unwrap();
    let mut split = whole.clone();
    whole.update(&z, &y).unwrap();
    let mut a = batch_statistics(&z.narrow(0, 0, 17), &y.narrow(0, 0, 17), c, p).unwrap();
    let b = batch_statistics(&z.narrow(0, 17, n - 17), &y.narrow(0, 17, n - 17), c, p).unwrap();
    a.merge(&b).unwrap();
    split.apply(&a).unwrap();
    assert_eq!(whole.counts(), split.counts());
    for (x, w) in zip_exact(whole.means(), split.means(), "means") {
        assert!((x - w).abs() < 1e-15);
    }
}

#[test]
fn epoch_swap_moves_current_to_previous() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let (c, p) = (4usize, 6usize);
    let mut pair = EstimatorPair::new(c, p, &mut rng).unwrap();
    let z = Tensor::from_slice(&[1.0f64, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]).view([2, 6]);
    let y = Tensor::from_slice(&[2i64, 2]);
    pair.update(&z, &y).unwrap();
    assert_eq!(pair.previous().counts()[2], 2.0);
    assert_eq!(pair.current().counts()[2], 2.0);
    let finished = pair.current().clone();
    pair.start_epoch(&mut rng).unwrap();
    assert_eq!(pair.previous(), &finished);
    assert_eq!(pair.current().counts(), &[0.0; 4]);
    // A fresh estimator starts at |m| = 0.9, i.e. kappa = p * 0.9 / 0.19.
    for cj in pair.current().concentrations() {
        assert!((cj.kappa - p as f64 * 90.0 / 19.0).abs() < 1e-12, "{}", cj.kappa);
    }
}
