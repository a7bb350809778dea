//! Every preset's network and objective run a training step: the ImageNet-scale presets'
//! ResNet-50 / ResNeXt-50 with the cosine classifier and the 2048 -> 2048 -> 1024 head (here at
//! 32 px and 20 classes), the CIFAR presets' ResNet-32. The loss is finite and the weights move.

use proco::estimator::EstimatorPair;
use proco::model::TwoBranchNet;
use proco::tch::{Device, Kind, Tensor};
use proco::train::recipe::PRESETS;
use proco::train::sgd::Sgd;
use proco::train::{train_step, LossState, Objective, Recipe, StepPosition};
use rand::SeedableRng;

#[test]
fn every_preset_trains_a_step() {
    proco::tch::set_num_threads(2);
    let classes = 20usize;
    let counts: Vec<usize> = (0..classes).map(|j| 120 - 5 * j).collect();
    for name in PRESETS {
        let recipe = Recipe::preset(name).unwrap();
        let recipe = if recipe.dataset.is_cifar() { recipe } else { recipe.merge_toml("image_size = 32").unwrap() };
        let net = TwoBranchNet::new(&recipe.model(), classes, Device::Cpu).unwrap();
        let mut sgd = Sgd::new(recipe.momentum, recipe.weight_decay);
        let mut state = LossState { estimators: EstimatorPair::new(classes, recipe.feature_dim, &mut rand::rngs::StdRng::seed_from_u64(0)).unwrap(), queue: None };
        let objective = Objective::new(&recipe, &counts).unwrap();
        let n = 4i64;
        let size = i64::from(recipe.image_size);
        let x = Tensor::randn([3 * n, 3, size, size], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 5, 11, 19]);
        let before: Vec<Tensor> = net.vs.trainable_variables().iter().map(|t| t.detach().copy()).collect();
        let out = train_step(&net, &mut sgd, &mut state, &objective, &x, &y, StepPosition { epoch: 0, step: 0, lr: recipe.lr_at(0).max(1e-3) }).unwrap();
        assert!(out.ce_loss.is_finite() && out.proco_loss.is_finite(), "{name}: {out:?}");
        let moved = net.vs.trainable_variables().iter().zip(&before).filter(|(a, b)| !a.equal(b)).count();
        assert!(moved * 2 > before.len(), "{name}: only {moved} of {} parameters changed", before.len());
    }
}
