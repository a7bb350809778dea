//! The two heads on the shared backbone: the classifier (the only part used at inference) and
//! ProCo's projection head, whose L2-normalised output the vMF estimator and loss consume.

use tch::nn::{self, Module, ModuleT};
use tch::Tensor;

/// PyTorch's default Linear initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight
/// and bias. The reference applies Kaiming-normal only inside the backbone (its
/// `_weights_init` runs in the encoder's constructor), so its classifier and projection head
/// keep PyTorch's defaults; so do ours.
fn linear(vs: nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    let bound = 1.0 / (c_in as f64).sqrt();
    let init = nn::Init::Uniform { lo: -bound, up: bound };
    let config = nn::LinearConfig { ws_init: init, bs_init: Some(init), bias: true };
    nn::linear(vs, c_in, c_out, config)
}

/// Linear(64, 512) + BatchNorm1d + ReLU + Linear(512, p), then L2 normalisation: unit features on
/// S^{p-1}, p = 128 on CIFAR, 1024 for ImageNet-LT / iNaturalist.
#[derive(Debug)]
pub struct ProjectionHead {
    fc1: nn::Linear,
    bn: nn::BatchNorm,
    fc2: nn::Linear,
}

impl ProjectionHead {
    /// A head from `c_in` backbone features through `hidden` units to `p` output dimensions.
    pub fn new(vs: &nn::Path, c_in: i64, hidden: i64, p: i64) -> Self {
        Self { fc1: linear(vs / "fc1", c_in, hidden), bn: nn::batch_norm1d(vs / "bn", hidden, Default::default()), fc2: linear(vs / "fc2", hidden, p) }
    }
}

impl ModuleT for ProjectionHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let z = x.apply(&self.fc1).apply_t(&self.bn, train).relu().apply(&self.fc2);
        // Under bf16 autocast the projection comes out in bf16; the sphere is taken in f32,
        // so the features are unit vectors to f32 precision, as the ProCo loss requires.
        let z = if matches!(z.kind(), tch::Kind::BFloat16 | tch::Kind::Half) { z.to_kind(tch::Kind::Float) } else { z };
        let norm = z.norm_scalaropt_dim(2, [1i64].as_slice(), true).clamp_min(1e-12);
        z / norm
    }
}

/// The classifier of the CE branch: a plain linear layer, or a cosine classifier
/// (NormedLinear: normalised features times normalised weight columns, times a scale of 30).
#[derive(Debug)]
pub enum Classifier {
    /// Linear(c_in, C).
    Linear(nn::Linear),
    /// Cosine classifier with its weight [c_in, C] and scale.
    Normed {
        /// Weight, one column per class.
        weight: Tensor,
        /// Logit scale (30 in the reference).
        scale: f64,
    },
}

impl Classifier {
    /// Linear classifier from `c_in` features to `classes` logits.
    pub fn linear(vs: &nn::Path, c_in: i64, classes: i64) -> Self {
        Classifier::Linear(linear(vs / "fc", c_in, classes))
    }

    /// Cosine classifier (columns initialised uniform in [-1, 1] and renormalised), scale 30.
    pub fn normed(vs: &nn::Path, c_in: i64, classes: i64) -> Self {
        let weight = vs.var("fc_normed", &[c_in, classes], nn::Init::Uniform { lo: -1.0, up: 1.0 });
        Classifier::Normed { weight, scale: 30.0 }
    }
}

impl Classifier {
    /// The class weights as C rows of c_in values (the linear layer's weight; the cosine
    /// classifier's columns, transposed): BCL's prototypes are made from them.
    pub fn class_weights(&self) -> Tensor {
        match self {
            Classifier::Linear(l) => l.ws.shallow_clone(),
            Classifier::Normed { weight, .. } => weight.tr(),
        }
    }
}

impl Module for Classifier {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Classifier::Linear(l) => x.apply(l),
            Classifier::Normed { weight, scale } => {
                let xn = x / x.norm_scalaropt_dim(2, [1i64].as_slice(), true).clamp_min(1e-12);
                let wn = weight / weight.norm_scalaropt_dim(2, [0i64].as_slice(), true).clamp_min(1e-12);
                xn.matmul(&wn) * *scale
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ResNetCifar;
    use tch::{Device, Kind};

    #[test]
    fn resnet32_shapes_and_parameter_count() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let net = ResNetCifar::resnet32(&(&root / "backbone"));
        let clf = Classifier::linear(&(&root / "classifier"), 64, 10);
        let head = ProjectionHead::new(&(&root / "head"), 64, 512, 128);
        let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
        let f = net.forward_t(&x, true);
        assert_eq!(f.size(), [4, 64]);
        assert_eq!(clf.forward(&f).size(), [4, 10]);
        let z = head.forward_t(&f, true);
        assert_eq!(z.size(), [4, 128]);
        let norms = Vec::<f32>::try_from(&z.norm_scalaropt_dim(2, [1i64].as_slice(), false)).unwrap();
        assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-5));
        // ResNet-32 + Linear(64, 10) has 464,154 trainable parameters (the reference's count).
        let backbone_and_fc: i64 = vs
            .variables()
            .iter()
            .filter(|(name, _)| !name.starts_with("head"))
            .filter(|(_, t)| t.requires_grad())
            .map(|(_, t)| t.numel() as i64)
            .sum();
        assert_eq!(backbone_and_fc, 464_154);
        assert!(ResNetCifar::new(&root, 31).is_err());
    }

    #[test]
    fn cosine_classifier_is_bounded_by_its_scale() {
        let vs = nn::VarStore::new(Device::Cpu);
        let clf = Classifier::normed(&vs.root(), 64, 10);
        let x = Tensor::randn([8, 64], (Kind::Float, Device::Cpu)) * 100.0;
        let max = clf.forward(&x).abs().max().double_value(&[]);
        assert!(max <= 30.0 + 1e-4, "{max}");
    }
}
