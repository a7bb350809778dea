//! Bad input to the loss and the estimator gives a typed error that names the problem.

use proco::tch::{Kind, Tensor};
use proco::estimator::TensorUpdate;
use proco::{LogPrior, ProcoError, ProCoLoss, VmfEstimator};
use rand::SeedableRng;

fn setup() -> (ProCoLoss, VmfEstimator, LogPrior) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    (ProCoLoss::new(4, 0.1).unwrap(), VmfEstimator::new(3, 4, &mut rng).unwrap(), LogPrior::from_counts(&[10.0, 5.0, 1.0]).unwrap())
}

fn unit_rows() -> Tensor {
    Tensor::from_slice(&[1.0f32, 0.0, 0.0, 0.0, 0.0, 0.6, 0.8, 0.0]).view([2, 4])
}

#[test]
fn non_finite_features() {
    let (loss, est, prior) = setup();
    let z = Tensor::from_slice(&[f32::NAN, 0.0, 0.0, 0.0, 0.0, 0.6, 0.8, 0.0]).view([2, 4]);
    let err = loss.loss(&z, &Tensor::from_slice(&[0i64, 1]), &est, &prior).unwrap_err();
    assert!(matches!(err, ProcoError::InvalidFeatures { .. }), "{err}");
    assert!(err.to_string().contains("NaN"), "{err}");
}

#[test]
fn non_normalised_features() {
    let (loss, est, prior) = setup();
    let z = unit_rows() * 2.0;
    let err = loss.loss(&z, &Tensor::from_slice(&[0i64, 1]), &est, &prior).unwrap_err();
    assert!(matches!(err, ProcoError::InvalidFeatures { .. }) && err.to_string().contains("norm"), "{err}");
}

#[test]
fn wrong_feature_dimension() {
    let (loss, est, prior) = setup();
    let z = Tensor::ones([2, 5], (Kind::Float, proco::tch::Device::Cpu)) / 5f64.sqrt();
    let err = loss.loss(&z, &Tensor::from_slice(&[0i64, 1]), &est, &prior).unwrap_err();
    assert!(err.to_string().contains("[N, 4]"), "{err}");
}

#[test]
fn labels_out_of_range_or_wrong_type() {
    let (loss, est, prior) = setup();
    let err = loss.loss(&unit_rows(), &Tensor::from_slice(&[0i64, 3]), &est, &prior).unwrap_err();
    assert!(matches!(err, ProcoError::InvalidLabels { .. }) && err.to_string().contains("label 3"), "{err}");
    let err = loss.loss(&unit_rows(), &Tensor::from_slice(&[0i64, -1]), &est, &prior).unwrap_err();
    assert!(matches!(err, ProcoError::InvalidLabels { .. }), "{err}");
    let err = loss.loss(&unit_rows(), &Tensor::from_slice(&[0i32, 1]), &est, &prior).unwrap_err();
    assert!(err.to_string().contains("int64"), "{err}");
    let err = loss.loss(&unit_rows(), &Tensor::from_slice(&[0i64]), &est, &prior).unwrap_err();
    assert!(matches!(err, ProcoError::InvalidLabels { .. }), "{err}");
}

#[test]
fn bad_dimension_and_temperature() {
    assert!(matches!(ProCoLoss::new(1, 0.1), Err(ProcoError::Vmf(proco_vmf::VmfError::InvalidDimension { p: 1 }))));
    for tau in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let err = ProCoLoss::new(128, tau).unwrap_err();
        assert!(matches!(err, ProcoError::InvalidConfig { .. }) && err.to_string().contains("tau"), "{err}");
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    assert!(VmfEstimator::new(3, 1, &mut rng).is_err());
    assert!(LogPrior::from_counts(&[3.0, 0.0]).unwrap_err().to_string().contains("class 1"));
}

#[test]
fn estimator_rejects_bad_batches() {
    let (_, mut est, _) = setup();
    let before = est.clone();
    let z = unit_rows() * 3.0;
    assert!(est.update(&z, &Tensor::from_slice(&[0i64, 1])).is_err());
    assert!(est.update(&unit_rows(), &Tensor::from_slice(&[0i64, 7])).is_err());
    assert_eq!(est, before, "a rejected batch must leave the estimator untouched");
}

#[test]
fn corrupt_estimator_state_is_refused() {
    let err = VmfEstimator::from_state(2, 2, vec![2.0, 0.0, 0.5, 0.0], vec![1.0, 1.0]).unwrap_err();
    assert!(err.to_string().contains("class 0"), "{err}");
    assert!(VmfEstimator::from_state(2, 2, vec![0.0; 3], vec![1.0, 1.0]).is_err());
    assert!(VmfEstimator::from_state(2, 2, vec![0.0; 4], vec![1.0, -1.0]).is_err());
}

#[test]
fn half_precision_features_with_clamped_kappa() {
    // kappa = 1e5 (kappa^2 = 1e10) overflows f16; the loss must still be finite and agree with f32.
    let est = VmfEstimator::from_state(3, 4, vec![1.0 - 1e-9, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0], vec![5.0; 3]).unwrap();
    assert_eq!(est.concentrations()[0].kappa, 1e5);
    let prior = LogPrior::from_counts(&[10.0, 5.0, 1.0]).unwrap();
    let loss_fn = ProCoLoss::new(4, 0.1).unwrap();
    let y = Tensor::from_slice(&[0i64, 1]);
    let full = loss_fn.loss(&unit_rows(), &y, &est, &prior).unwrap().double_value(&[]);
    for kind in [Kind::Half, Kind::BFloat16] {
        let z = unit_rows().to_kind(kind).set_requires_grad(true);
        let loss = loss_fn.loss(&z, &y, &est, &prior).unwrap();
        assert_eq!(loss.kind(), kind);
        loss.backward();
        let got = loss.double_value(&[]);
        assert!((got - full).abs() <= 0.02 * full.abs(), "{kind:?}: {got} vs f32 {full}");
        let g = z.grad().to_kind(Kind::Float);
        assert!(g.isfinite().all().int64_value(&[]) == 1, "{kind:?}: non-finite gradient");
    }
}

/// Shapes, dtypes and batch sizes a user can hand the network come back as typed errors
/// instead of panics inside tch.
#[test]
fn network_input_of_the_wrong_shape_is_a_typed_error() {
    use proco::model::TwoBranchNet;
    use proco::tch::Device;
    use proco::train::Recipe;
    let recipe = Recipe::preset("cifar10-lt-if100").unwrap();
    let net = TwoBranchNet::new(&recipe.model(), 10, Device::Cpu).unwrap();
    let images = |shape: &[i64], kind: Kind| Tensor::zeros(shape, (kind, Device::Cpu));
    let _guard = proco::tch::no_grad_guard();
    for (shape, kind, train, what) in [
        (&[2, 3, 32][..], Kind::Float, false, "[N, 3, H, W]"),
        (&[2, 1, 32, 32][..], Kind::Float, false, "[N, 3, H, W]"),
        (&[2, 32, 32, 3][..], Kind::Float, true, "[N, 3, H, W]"),
        (&[2, 3, 0, 32][..], Kind::Float, false, "empty"),
        (&[0, 3, 32, 32][..], Kind::Float, false, "empty"),
        (&[2, 3, 32, 32][..], Kind::Double, false, "Double"),
        (&[2, 3, 32, 32][..], Kind::Uint8, true, "Uint8"),
        (&[1, 3, 32, 32][..], Kind::Float, true, "at least 2"),
    ] {
        let x = images(shape, kind);
        let err = if train { net.forward_t(&x, true).map(|_| ()) } else { net.logits(&x).map(|_| ()) }.unwrap_err();
        assert!(matches!(err, ProcoError::InvalidImages { .. }) && err.to_string().contains(what), "{shape:?} {kind:?}: {err}");
    }
    let err = net.logits(&Tensor::new()).unwrap_err();
    assert!(matches!(err, ProcoError::InvalidImages { .. }) && err.to_string().contains("undefined"), "{err}");
    // What the checks let through runs: any image size (global pooling), one image at inference.
    let (z, logits) = net.forward_t(&images(&[2, 3, 20, 24], Kind::Float), true).unwrap();
    assert_eq!((z.size(), logits.size()), (vec![2, 128], vec![2, 10]));
    assert_eq!(net.logits(&images(&[1, 3, 32, 32], Kind::Float)).unwrap().size(), [1, 10]);
    // The dtype check follows the weights when the store is converted.
    let mut net = net;
    net.vs.double();
    assert!(net.logits(&images(&[1, 3, 32, 32], Kind::Float)).is_err());
    assert_eq!(net.logits(&images(&[1, 3, 32, 32], Kind::Double)).unwrap().kind(), Kind::Double);
}
