//! The two-branch network of ProCo: one backbone, a classifier (CE branch, the only part used
//! at inference) and a projection head (ProCo branch), with all parameters in one `VarStore`.

use std::sync::{Mutex, PoisonError};

use tch::nn::{self, Module, ModuleT};
use tch::{Device, Tensor};

use serde::{Deserialize, Serialize};

use crate::error::{ProcoError, Result};
use crate::model::autocast::AutocastGuard;
use crate::model::{memory_format, Classifier, ProjectionHead, ResNetCifar, ResNetImageNet};

/// Held while a network is seeded and initialised. tch's initialisers draw from LibTorch's one
/// global generator (tch exposes no generator objects), so two networks built at the same time
/// on two threads (two trainings in one process, or tests running side by side) would
/// interleave their draws and neither would get its seed's weights. Other code that draws from
/// the global generator at the same moment can still change them: keep such draws off other
/// threads while a network is built.
static GLOBAL_GENERATOR: Mutex<()> = Mutex::new(());

/// Backbone architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// CIFAR ResNet-32 (32 x 32 inputs, 64-d features).
    Resnet32,
    /// ResNet-50 (ImageNet-LT, iNaturalist; any input of at least 32 x 32, 2048-d features).
    Resnet50,
    /// ResNeXt-50 32x4d.
    Resnext50,
}

/// Classifier of the CE branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClassifierKind {
    /// Linear layer.
    Linear,
    /// Cosine classifier with scale 30.
    Normed,
}

/// Arithmetic of the forward and backward passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// bf16 autocast ([`crate::model::autocast`]): convolutions and matrix products in
    /// bfloat16; weights, reductions, the losses and the optimiser in f32. The network's
    /// outputs are returned in f32.
    Bf16,
}

/// What a [`TwoBranchNet`] is made of: everything the network needs, nothing of the training
/// schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelConfig {
    /// Backbone.
    pub arch: Arch,
    /// Classifier of the CE branch.
    pub classifier: ClassifierKind,
    /// Hidden width of the projection head.
    pub hidden_dim: usize,
    /// Output dimension p of the projection head (the sphere the vMF lives on), at least 2.
    pub feature_dim: usize,
    /// Seed of the initialisation.
    pub seed: u64,
    /// Arithmetic of the forward pass.
    pub precision: Precision,
    /// A second projection head (same shape as the first) that maps the classifier's class
    /// weights to BCL's class prototypes ([`TwoBranchNet::prototypes`]); BCL recipes only.
    pub prototype_head: bool,
}

/// The backbone of a recipe.
enum Backbone {
    Cifar(ResNetCifar),
    ImageNet(ResNetImageNet),
}

impl Backbone {
    /// Images in any layout; converted to channels-last (the weights' layout) unless they
    /// already are, so every convolution runs without a layout reorder.
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let x = memory_format::to_channels_last(x).unwrap_or_else(|_| x.shallow_clone());
        match self {
            Backbone::Cifar(b) => b.forward_t(&x, train),
            Backbone::ImageNet(b) => b.forward_t(&x, train),
        }
    }
}

/// Backbone + classifier + projection head. Convolution weights are kept channels-last
/// ([`memory_format`]); checkpoints store them in the usual contiguous layout.
pub struct TwoBranchNet {
    /// All parameters and BatchNorm statistics.
    pub vs: nn::VarStore,
    backbone: Backbone,
    classifier: Classifier,
    head: ProjectionHead,
    prototype_head: Option<ProjectionHead>,
    num_classes: usize,
    precision: Precision,
    /// A handle to one parameter, whose dtype the images must have: it shares the parameter's
    /// tensor, so it follows `vs.set_kind` without a look-up of the store on every forward.
    dtype_probe: Tensor,
}

impl TwoBranchNet {
    /// Builds the network `config` for `num_classes` classes on `device`, initialised from
    /// the config's seed. Fails with [`ProcoError::InvalidConfig`] for no classes, a zero
    /// hidden width or p < 2.
    pub fn new(config: &ModelConfig, num_classes: usize, device: Device) -> Result<Self> {
        if num_classes == 0 {
            return Err(ProcoError::InvalidConfig { reason: "a classifier needs at least one class".into() });
        }
        if config.hidden_dim == 0 || config.feature_dim < 2 {
            return Err(ProcoError::InvalidConfig { reason: format!("projection head {} -> {}: the hidden width must be at least 1 and p at least 2", config.hidden_dim, config.feature_dim) });
        }
        let recipe = config;
        let seeded = GLOBAL_GENERATOR.lock().unwrap_or_else(PoisonError::into_inner);
        tch::manual_seed((recipe.seed & i64::MAX as u64) as i64);
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let path = &root / "backbone";
        let (backbone, f) = match recipe.arch {
            Arch::Resnet32 => (Backbone::Cifar(ResNetCifar::resnet32(&path)), ResNetCifar::FEATURE_DIM),
            Arch::Resnet50 => (Backbone::ImageNet(ResNetImageNet::resnet50(&path)), ResNetImageNet::FEATURE_DIM),
            Arch::Resnext50 => (Backbone::ImageNet(ResNetImageNet::resnext50_32x4d(&path)), ResNetImageNet::FEATURE_DIM),
        };
        let classifier = match recipe.classifier {
            ClassifierKind::Linear => Classifier::linear(&(&root / "classifier"), f, num_classes as i64),
            ClassifierKind::Normed => Classifier::normed(&(&root / "classifier"), f, num_classes as i64),
        };
        let head = ProjectionHead::new(&(&root / "head"), f, recipe.hidden_dim as i64, recipe.feature_dim as i64);
        if recipe.prototype_head && num_classes < 2 {
            return Err(ProcoError::InvalidConfig { reason: "class prototypes need at least 2 classes (their head's BatchNorm runs over the classes)".into() });
        }
        let prototype_head = recipe.prototype_head.then(|| ProjectionHead::new(&(&root / "prototype_head"), f, recipe.hidden_dim as i64, recipe.feature_dim as i64));
        drop(seeded);
        memory_format::convert_var_store(&vs)?;
        let dtype_probe = vs.trainable_variables().into_iter().next().ok_or_else(|| ProcoError::InvalidConfig { reason: "the network has no parameters".into() })?;
        Ok(Self { vs, backbone, classifier, head, prototype_head, num_classes, precision: config.precision, dtype_probe })
    }

    /// Number of classes of the classifier.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// Training forward: (unit projection features, classifier logits) for a batch of images
    /// `x` ([N, 3, H, W], the weights' dtype and device; N >= 2 when `train`, since the
    /// projection head's BatchNorm needs two samples).
    ///
    /// # Errors
    /// [`ProcoError::InvalidImages`] for any other input, before LibTorch sees it.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.check_images(x, train)?;
        let _autocast = self.autocast()?;
        let h = self.backbone.forward_t(x, train);
        let (z, logits) = (self.head.forward_t(&h, train), self.classifier.forward(&h));
        Ok((self.full_precision(z)?, self.full_precision(logits)?))
    }

    /// BCL's class prototypes: the classifier's class weights (C x f) through the prototype
    /// head, L2-normalised (C x p unit rows, f32), differentiable in both; `train` runs the
    /// head's BatchNorm over the C rows in training mode, as BCL does.
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] when the network was built without a prototype head
    /// ([`ModelConfig::prototype_head`]).
    pub fn prototypes(&self, train: bool) -> Result<Tensor> {
        let head = self.prototype_head.as_ref().ok_or_else(|| ProcoError::InvalidConfig { reason: "this network has no prototype head (build it with prototype_head = true, as BCL recipes do)".into() })?;
        let _autocast = self.autocast()?;
        let z = head.forward_t(&self.classifier.class_weights(), train);
        self.full_precision(z)
    }

    /// The arithmetic of the forward pass.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The autocast region of a forward pass, if the network runs in bf16.
    fn autocast(&self) -> Result<Option<AutocastGuard>> {
        match self.precision {
            Precision::Fp32 => Ok(None),
            Precision::Bf16 => AutocastGuard::bf16(self.vs.device()).map(Some),
        }
    }

    /// An output in the weights' dtype (autocast may leave it in bf16).
    fn full_precision(&self, t: Tensor) -> Result<Tensor> {
        let want = self.dtype_probe.kind();
        Ok(if t.kind() == want { t } else { t.f_to_kind(want)? })
    }

    /// A linear stage's training forward: the backbone frozen (eval-mode BatchNorm, no
    /// gradient), the classifier logits differentiable in the classifier's weights alone.
    ///
    /// # Errors
    /// As [`TwoBranchNet::forward_t`].
    pub fn frozen_backbone_logits(&self, x: &Tensor) -> Result<Tensor> {
        self.check_images(x, false)?;
        let _autocast = self.autocast()?;
        let h = tch::no_grad(|| self.backbone.forward_t(x, false));
        let logits = self.classifier.forward(&h);
        self.full_precision(logits)
    }

    /// The variable-store prefix of the classifier's weights (`classifier.`).
    pub const CLASSIFIER_PREFIX: &'static str = "classifier.";

    /// Inference: classifier logits only (the projection head costs nothing at test time).
    ///
    /// # Errors
    /// As [`TwoBranchNet::forward_t`].
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.check_images(x, false)?;
        let _autocast = self.autocast()?;
        let logits = self.classifier.forward(&self.backbone.forward_t(x, false));
        self.full_precision(logits)
    }

    /// What the backbone and heads would otherwise panic on inside tch: the rank, the three
    /// colour channels, empty dimensions, the dtype and device of the weights, and a single
    /// sample in training mode (BatchNorm needs two values per channel).
    fn check_images(&self, x: &Tensor, train: bool) -> Result<()> {
        let bad = |reason: String| Err(ProcoError::InvalidImages { reason });
        if !x.defined() {
            return bad("the tensor is undefined".into());
        }
        let size = x.size();
        if size.len() != 4 || size[1] != 3 {
            return bad(format!("expected shape [N, 3, H, W], got {size:?}"));
        }
        if size.iter().any(|&d| d == 0) {
            return bad(format!("shape {size:?} has an empty dimension"));
        }
        if train && size[0] < 2 {
            return bad("a training batch needs at least 2 images (BatchNorm statistics)".into());
        }
        let want = self.dtype_probe.kind();
        if x.kind() != want {
            return bad(format!("dtype {:?} does not match the weights' {want:?}", x.kind()));
        }
        if x.device() != self.vs.device() {
            return bad(format!("images on {:?}, the network on {:?}", x.device(), self.vs.device()));
        }
        Ok(())
    }
}
