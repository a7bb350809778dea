//! A training recipe is data: one serialisable struct holding every setting of a run, with
//! presets for the paper's settings, overridable from a TOML file or flags. The resolved
//! recipe is saved with every run so that two runs can be diffed.

use serde::{Deserialize, Serialize};

use crate::error::{ProcoError, Result};
pub use crate::loss::{BesselRoute, ClassifierLoss, ContrastiveLoss};
pub use crate::model::{Arch, ClassifierKind, Precision};
use crate::model::ModelConfig;

/// Which dataset a recipe trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// CIFAR-10 (long-tailed by the recipe's imbalance ratio).
    Cifar10,
    /// CIFAR-100.
    Cifar100,
    /// ImageNet-LT (list files).
    ImagenetLt,
    /// iNaturalist 2018 (list files).
    Inat2018,
    /// The user's own images: class sub-folders (`train/`, with `val/` and / or `test/`) or
    /// list files (`train.txt`, `val.txt`, `test.txt`) under the data directory.
    Own,
}

impl DatasetKind {
    /// Whether this is CIFAR (32 x 32 images in memory, the CIFAR views).
    pub fn is_cifar(self) -> bool {
        matches!(self, DatasetKind::Cifar10 | DatasetKind::Cifar100)
    }
}

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrDecay {
    /// x0.1 at each milestone epoch.
    Step,
    /// Cosine to 0 over the remaining epochs.
    Cosine,
}

/// How a run trains its two branches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stages {
    /// Classifier loss + alpha x contrastive loss together, every epoch (ProCo, BCL).
    #[default]
    One,
    /// SupCon's protocol: `epochs` of the contrastive loss alone (the classifier loss is not
    /// computed), then `linear_epochs` training the classifier alone on the frozen
    /// backbone's features (eval-mode BatchNorm, no projection head).
    Two,
}

/// The stage an epoch belongs to ([`Recipe::stage_of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// One-stage training: both branches.
    Joint,
    /// Two-stage, stage 1: the contrastive loss alone.
    Representation,
    /// Two-stage, stage 2: the classifier on the frozen backbone.
    Linear,
}

/// Every setting of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Dataset.
    pub dataset: DatasetKind,
    /// Largest / smallest class size of the long-tailed training set (CIFAR); 1 = balanced.
    pub imbalance_ratio: f64,
    /// Backbone.
    pub arch: Arch,
    /// Classifier head.
    pub classifier: ClassifierKind,
    /// Projection-head output dimension p (128 on CIFAR).
    pub feature_dim: usize,
    /// Projection-head hidden width (512 on CIFAR).
    pub hidden_dim: usize,
    /// Temperature tau of the ProCo loss.
    pub temperature: f64,
    /// Weight alpha of the contrastive loss: loss = classifier loss + alpha * contrastive loss.
    pub alpha: f64,
    /// Loss of the classifier branch (logit-adjusted CE in ProCo).
    #[serde(default)]
    pub classifier_loss: ClassifierLoss,
    /// Loss of the contrastive branch: ProCo, or the peers SupCon and BCL, or none. SupCon
    /// and BCL use `temperature` too.
    #[serde(default)]
    pub contrastive_loss: ContrastiveLoss,
    /// SupCon only: rows of earlier steps' contrastive features (both views, detached) kept
    /// in a first-in first-out queue as extra contrast samples of every anchor; 0 (the
    /// default) contrasts within the batch alone, as Khosla et al. train. Saved with each
    /// checkpoint. A few thousand rows cost a few MB and one K x (2N + queue) product a step.
    #[serde(default)]
    pub supcon_queue: usize,
    /// Bessel numerics of the ProCo loss: `exact`, or `authors` (their recurrence, which
    /// drifts past kappa ~ nu^2 / 8), to measure what exact maths changes.
    #[serde(default)]
    pub bessel: BesselRoute,
    /// One- or two-stage training.
    #[serde(default)]
    pub stages: Stages,
    /// Two-stage: epochs of the linear stage, after the `epochs` of stage 1.
    #[serde(default = "linear_epochs_default")]
    pub linear_epochs: usize,
    /// Two-stage: peak learning rate of the linear stage (cosine to 0 over its epochs, no
    /// warm-up; momentum `momentum`, no weight decay, as SupCon's linear stage).
    #[serde(default = "linear_lr_default")]
    pub linear_lr: f64,
    /// Two-stage: batch size of the linear stage, the same whatever stage 1's, so that a
    /// batch-size comparison varies representation learning only.
    #[serde(default = "linear_batch_size_default")]
    pub linear_batch_size: usize,
    /// Epochs of the schedule (of stage 1 in a two-stage run).
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (on all parameters, as the reference does).
    pub weight_decay: f64,
    /// Linear warm-up epochs.
    pub warmup_epochs: usize,
    /// Decay after warm-up.
    pub lr_decay: LrDecay,
    /// Epochs at which a step decay multiplies the rate by 0.1.
    pub milestones: Vec<usize>,
    /// Seed of everything random (initialisation, sampling, augmentation, estimator).
    pub seed: u64,
    /// Loader threads.
    pub loader_threads: usize,
    /// Side in pixels of the training crops and of the test crop (32 on CIFAR, 224 on
    /// ImageNet-LT and iNaturalist; the test view resizes the shorter side to 8/7 of it first,
    /// 256 for 224). CIFAR recipes need 32.
    #[serde(default = "cifar_image_size")]
    pub image_size: u32,
    /// Arithmetic of the network (f32, or bf16 autocast).
    #[serde(default)]
    pub precision: Precision,
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain wherever every view of
    /// the sample is still a downscale from there (PIL's `draft` mode; a 4000 x 3000 photo
    /// costs a fraction of its full decode); false decodes every image in full, as
    /// torchvision does, for pixel parity with the authors' pipeline. No effect on CIFAR or
    /// on images below twice the crop (ImageNet's 500 x 375 at 224).
    #[serde(default = "reduced_decode_default")]
    pub reduced_decode: bool,
    /// Use about this many images of the training set and of each evaluation split (the same
    /// fraction of every class, and at least one image of each class, so a set with more
    /// classes than this keeps one per class): quick checks. Absent for real runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Recipes saved before `reduced_decode` existed decode at reduced scale too (it changes
/// nothing on their CIFAR data).
fn reduced_decode_default() -> bool {
    true
}

fn linear_epochs_default() -> usize {
    10
}

fn linear_lr_default() -> f64 {
    0.1
}

fn linear_batch_size_default() -> usize {
    256
}

/// The image size of recipes saved before the field existed (all CIFAR).
fn cifar_image_size() -> u32 {
    32
}

impl Recipe {
    /// The reference's CIFAR recipe for `epochs` (200 or 400 reproduce the paper; other
    /// lengths use 0.8E/0.9E milestones and max(1, 5E/200) warm-up epochs).
    pub fn cifar(dataset: DatasetKind, imbalance_ratio: f64, epochs: usize) -> Self {
        let (milestones, warmup) = match epochs {
            200 => (vec![160, 180], 5),
            400 => (vec![360, 380], 10),
            e => (vec![e * 8 / 10, e * 9 / 10], (5 * e / 200).max(1).min(e.saturating_sub(1))),
        };
        Recipe {
            dataset,
            imbalance_ratio,
            arch: Arch::Resnet32,
            classifier: ClassifierKind::Linear,
            feature_dim: 128,
            hidden_dim: 512,
            temperature: 0.1,
            alpha: 1.0,
            classifier_loss: ClassifierLoss::LogitAdjusted,
            contrastive_loss: ContrastiveLoss::Proco,
            supcon_queue: 0,
            bessel: BesselRoute::Exact,
            stages: Stages::One,
            linear_epochs: linear_epochs_default(),
            linear_lr: linear_lr_default(),
            linear_batch_size: linear_batch_size_default(),
            epochs,
            batch_size: 256,
            lr: 0.3,
            momentum: 0.9,
            weight_decay: 2e-4,
            warmup_epochs: warmup,
            lr_decay: LrDecay::Step,
            milestones,
            seed: 0,
            loader_threads: 2,
            image_size: 32,
            precision: Precision::Fp32,
            reduced_decode: true,
            limit: None,
        }
    }

    /// The authors' ImageNet-scale recipe (ImageNet-LT, iNaturalist 2018, and the default for
    /// own data): ResNet-50, cosine classifier, projection head 2048 -> 2048 -> 1024, tau 0.07,
    /// global batch 256, SGD momentum 0.9, lr 0.1 with cosine decay and no warm-up, weight
    /// decay 5e-4, 90 epochs, 224 px crops.
    pub fn imagenet_scale(dataset: DatasetKind) -> Self {
        Recipe {
            dataset,
            imbalance_ratio: 1.0,
            arch: Arch::Resnet50,
            classifier: ClassifierKind::Normed,
            feature_dim: 1024,
            hidden_dim: 2048,
            temperature: 0.07,
            alpha: 1.0,
            classifier_loss: ClassifierLoss::LogitAdjusted,
            contrastive_loss: ContrastiveLoss::Proco,
            supcon_queue: 0,
            bessel: BesselRoute::Exact,
            stages: Stages::One,
            linear_epochs: linear_epochs_default(),
            linear_lr: linear_lr_default(),
            linear_batch_size: linear_batch_size_default(),
            epochs: 90,
            batch_size: 256,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 0,
            lr_decay: LrDecay::Cosine,
            milestones: vec![],
            seed: 0,
            loader_threads: 8,
            image_size: 224,
            precision: Precision::Fp32,
            reduced_decode: true,
            limit: None,
        }
    }

    /// This recipe with a schedule of `epochs`: step-decay recipes take the CIFAR rule of
    /// [`Recipe::cifar`] for warm-up and milestones, cosine recipes keep their warm-up
    /// (shortened if it would not fit).
    pub fn with_epochs(&self, epochs: usize) -> Self {
        match self.lr_decay {
            LrDecay::Step => {
                let base = Recipe::cifar(self.dataset, self.imbalance_ratio, epochs);
                Recipe { epochs, warmup_epochs: base.warmup_epochs, milestones: base.milestones, ..self.clone() }
            }
            LrDecay::Cosine => Recipe { epochs, warmup_epochs: self.warmup_epochs.min(epochs.saturating_sub(1)), ..self.clone() },
        }
    }

    /// The network this recipe trains.
    pub fn model(&self) -> ModelConfig {
        ModelConfig { arch: self.arch, classifier: self.classifier, hidden_dim: self.hidden_dim, feature_dim: self.feature_dim, seed: self.seed, precision: self.precision, prototype_head: self.contrastive_loss == ContrastiveLoss::Bcl }
    }

    /// A named preset (see [`PRESETS`]): `cifar10-lt-if{100,50,10}`,
    /// `cifar100-lt-if{100,50,10}` (200 epochs), `cifar100-lt-if100-400ep`; the authors'
    /// ImageNet-LT recipes `imagenet-lt-r50` (90 epochs), `imagenet-lt-r50-180ep`,
    /// `imagenet-lt-x50` (ResNeXt-50 32x4d), their iNaturalist 2018 recipe `inat2018-r50`
    /// (lr 0.2, weight decay 1e-4); and `own-data`, the ImageNet-scale recipe on the user's
    /// own images ([`DatasetKind::Own`]); and the balanced sets `cifar10-balanced`,
    /// `cifar100-balanced` (imbalance 1: every training image, the CIFAR recipe).
    pub fn preset(name: &str) -> Result<Self> {
        let cifar = |d, r, e| Ok(Recipe::cifar(d, r, e));
        match name {
            "cifar10-lt-if100" => cifar(DatasetKind::Cifar10, 100.0, 200),
            "cifar10-lt-if50" => cifar(DatasetKind::Cifar10, 50.0, 200),
            "cifar10-lt-if10" => cifar(DatasetKind::Cifar10, 10.0, 200),
            "cifar100-lt-if100" => cifar(DatasetKind::Cifar100, 100.0, 200),
            "cifar100-lt-if50" => cifar(DatasetKind::Cifar100, 50.0, 200),
            "cifar100-lt-if10" => cifar(DatasetKind::Cifar100, 10.0, 200),
            "cifar100-lt-if100-400ep" => cifar(DatasetKind::Cifar100, 100.0, 400),
            "imagenet-lt-r50" => Ok(Recipe::imagenet_scale(DatasetKind::ImagenetLt)),
            "imagenet-lt-r50-180ep" => Ok(Recipe::imagenet_scale(DatasetKind::ImagenetLt).with_epochs(180)),
            "imagenet-lt-x50" => Ok(Recipe { arch: Arch::Resnext50, ..Recipe::imagenet_scale(DatasetKind::ImagenetLt) }),
            "inat2018-r50" => Ok(Recipe { lr: 0.2, weight_decay: 1e-4, ..Recipe::imagenet_scale(DatasetKind::Inat2018) }),
            "own-data" => Ok(Recipe::imagenet_scale(DatasetKind::Own)),
            "cifar10-balanced" => cifar(DatasetKind::Cifar10, 1.0, 200),
            "cifar100-balanced" => cifar(DatasetKind::Cifar100, 1.0, 200),
            other => Err(ProcoError::InvalidConfig { reason: format!("unknown preset `{other}`; known: {}", PRESETS.join(", ")) }),
        }
    }

    /// Parses a full recipe from TOML (every field required; use [`Recipe::merge_toml`] to override a preset).
    pub fn from_toml(text: &str) -> Result<Self> {
        let r: Recipe = toml::from_str(text).map_err(|e| ProcoError::InvalidConfig { reason: format!("recipe TOML: {e}") })?;
        r.validate()?;
        Ok(r)
    }

    /// Overrides this recipe's fields with those present in a TOML document.
    pub fn merge_toml(&self, text: &str) -> Result<Self> {
        let overrides: toml::Table = toml::from_str(text).map_err(|e| ProcoError::InvalidConfig { reason: format!("recipe TOML: {e}") })?;
        // Optional fields that are unset (`limit`) are absent from the serialised base, so
        // the field names are checked by deserialising (`deny_unknown_fields`), not against
        // the base's keys.
        let mut base = toml::Table::try_from(self).map_err(|e| ProcoError::InvalidConfig { reason: e.to_string() })?;
        base.extend(overrides);
        let r: Recipe = base.try_into().map_err(|e: toml::de::Error| ProcoError::InvalidConfig { reason: format!("recipe TOML: {e}") })?;
        r.validate()?;
        Ok(r)
    }

    /// The recipe as TOML (what is saved with a run).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| ProcoError::InvalidConfig { reason: e.to_string() })
    }

    /// Checks ranges: positive sizes and rates, milestones inside the schedule, warm-up shorter than it.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(ProcoError::InvalidConfig { reason });
        if self.epochs == 0 || self.batch_size == 0 || self.loader_threads == 0 {
            return bad("epochs, batch_size and loader_threads must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || !(0.0..1.0).contains(&self.momentum) || !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("lr {} must be > 0, momentum {} in [0, 1), weight_decay {} >= 0", self.lr, self.momentum, self.weight_decay));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) || !(self.alpha >= 0.0 && self.alpha.is_finite()) || self.feature_dim < 2 {
            return bad(format!("temperature {} must be > 0, alpha {} >= 0, feature_dim {} >= 2", self.temperature, self.alpha, self.feature_dim));
        }
        if self.warmup_epochs >= self.epochs {
            return bad(format!("warmup_epochs {} must be shorter than the {} epochs", self.warmup_epochs, self.epochs));
        }
        if let Some(m) = self.milestones.iter().find(|&&m| m >= self.epochs) {
            return bad(format!("milestone {m} is not inside the {} epochs", self.epochs));
        }
        if self.seed > i64::MAX as u64 {
            return bad(format!("seed {} must be at most {}", self.seed, i64::MAX));
        }
        if self.limit == Some(0) {
            return bad("limit must be at least 1 image".into());
        }
        if !(self.imbalance_ratio >= 1.0 && self.imbalance_ratio.is_finite()) {
            return bad(format!("imbalance_ratio {} must be >= 1", self.imbalance_ratio));
        }
        if self.hidden_dim == 0 {
            return bad("hidden_dim must be at least 1".into());
        }
        if self.dataset.is_cifar() && self.image_size != 32 {
            return bad(format!("image_size {} on CIFAR: the CIFAR views take 32 x 32 images", self.image_size));
        }
        if !self.dataset.is_cifar() && !(32..=4096).contains(&self.image_size) {
            return bad(format!("image_size {} must be between 32 and 4096 pixels", self.image_size));
        }
        if self.arch == Arch::Resnet32 && !self.dataset.is_cifar() && self.image_size != 32 {
            return bad(format!("arch resnet32 is the CIFAR network for 32 x 32 inputs; use resnet50 or resnext50 at image_size {}", self.image_size));
        }
        if self.stages == Stages::Two {
            if self.linear_epochs == 0 || self.linear_batch_size == 0 || !(self.linear_lr > 0.0 && self.linear_lr.is_finite()) {
                return bad(format!("two-stage training needs linear_epochs {} >= 1, linear_batch_size {} >= 1 and linear_lr {} > 0", self.linear_epochs, self.linear_batch_size, self.linear_lr));
            }
            if self.contrastive_loss == ContrastiveLoss::None {
                return bad("two-stage training learns the representation with the contrastive loss: choose proco, supcon or bcl, or stages = \"one\"".into());
            }
        }
        if self.supcon_queue > 0 && self.contrastive_loss != ContrastiveLoss::Supcon {
            return bad(format!("supcon_queue {} is SupCon's memory queue, but the contrastive loss is {}: set contrastive_loss = \"supcon\" or supcon_queue = 0", self.supcon_queue, self.contrastive_loss.as_str()));
        }
        if self.dataset != DatasetKind::Cifar10 && self.dataset != DatasetKind::Cifar100 && self.imbalance_ratio != 1.0 {
            return bad(format!("imbalance_ratio {} applies to CIFAR only: list files and folders are trained as they are", self.imbalance_ratio));
        }
        Ok(())
    }

    /// Every epoch of the run: `epochs`, plus `linear_epochs` in a two-stage run.
    pub fn total_epochs(&self) -> usize {
        match self.stages {
            Stages::One => self.epochs,
            Stages::Two => self.epochs + self.linear_epochs,
        }
    }

    /// The stage of `epoch` (0-based, below [`Self::total_epochs`]).
    pub fn stage_of(&self, epoch: usize) -> Stage {
        match self.stages {
            Stages::One => Stage::Joint,
            Stages::Two if epoch < self.epochs => Stage::Representation,
            Stages::Two => Stage::Linear,
        }
    }

    /// Batch size of `epoch`'s stage.
    pub fn batch_size_at(&self, epoch: usize) -> usize {
        match self.stage_of(epoch) {
            Stage::Linear => self.linear_batch_size,
            _ => self.batch_size,
        }
    }

    /// Learning rate of `epoch` (0-based): linear warm-up lr (e+1)/W, then steps or cosine,
    /// as the reference's `adjust_lr` does; in a linear stage, linear_lr x (1 + cos(pi k / L)) / 2
    /// at its k-th of L epochs.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        if self.stage_of(epoch) == Stage::Linear {
            let (k, l) = ((epoch - self.epochs) as f64, self.linear_epochs as f64);
            return self.linear_lr * 0.5 * (1.0 + (std::f64::consts::PI * k / l).cos());
        }
        if epoch < self.warmup_epochs {
            return self.lr * (epoch + 1) as f64 / self.warmup_epochs as f64;
        }
        match self.lr_decay {
            LrDecay::Cosine => {
                let (e, w, total) = (epoch as f64, self.warmup_epochs as f64, self.epochs as f64);
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * (e - w + 1.0) / (total - w + 1.0)).cos())
            }
            LrDecay::Step => self.lr * 0.1f64.powi(self.milestones.iter().filter(|&&m| epoch >= m).count() as i32),
        }
    }
}

/// Names accepted by [`Recipe::preset`].
pub const PRESETS: [&str; 14] = [
    "cifar10-lt-if100",
    "cifar10-lt-if50",
    "cifar10-lt-if10",
    "cifar100-lt-if100",
    "cifar100-lt-if50",
    "cifar100-lt-if10",
    "cifar100-lt-if100-400ep",
    "imagenet-lt-r50",
    "imagenet-lt-r50-180ep",
    "imagenet-lt-x50",
    "inat2018-r50",
    "own-data",
    "cifar10-balanced",
    "cifar100-balanced",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_carry_the_paper_schedules() {
        for name in PRESETS {
            Recipe::preset(name).unwrap().validate().unwrap();
        }
        let r = Recipe::preset("cifar10-lt-if100").unwrap();
        assert_eq!((r.epochs, r.warmup_epochs, r.milestones.as_slice()), (200, 5, [160, 180].as_slice()));
        assert!((r.lr_at(0) - 0.06).abs() < 1e-15 && (r.lr_at(4) - 0.3).abs() < 1e-15);
        assert!((r.lr_at(159) - 0.3).abs() < 1e-15 && (r.lr_at(160) - 0.03).abs() < 1e-15 && (r.lr_at(199) - 0.003).abs() < 1e-15);
        let r = Recipe::preset("cifar100-lt-if100-400ep").unwrap();
        assert_eq!((r.warmup_epochs, r.milestones.as_slice()), (10, [360, 380].as_slice()));
        // Short schedules get at least one warm-up epoch (the reference's rule gives 0 below 40).
        assert_eq!(Recipe::cifar(DatasetKind::Cifar10, 100.0, 12).warmup_epochs, 1);
        Recipe::cifar(DatasetKind::Cifar10, 100.0, 1).validate().unwrap();
        assert!(Recipe::preset("nope").is_err());
    }

    #[test]
    fn imagenet_scale_presets_are_the_authors_scripts() {
        for (name, dataset, arch, epochs, lr, wd) in [
            ("imagenet-lt-r50", DatasetKind::ImagenetLt, Arch::Resnet50, 90, 0.1, 5e-4),
            ("imagenet-lt-r50-180ep", DatasetKind::ImagenetLt, Arch::Resnet50, 180, 0.1, 5e-4),
            ("imagenet-lt-x50", DatasetKind::ImagenetLt, Arch::Resnext50, 90, 0.1, 5e-4),
            ("inat2018-r50", DatasetKind::Inat2018, Arch::Resnet50, 90, 0.2, 1e-4),
            ("own-data", DatasetKind::Own, Arch::Resnet50, 90, 0.1, 5e-4),
        ] {
            let r = Recipe::preset(name).unwrap();
            assert_eq!((r.dataset, r.arch, r.epochs, r.lr, r.weight_decay), (dataset, arch, epochs, lr, wd), "{name}");
            assert_eq!((r.batch_size, r.momentum, r.temperature, r.feature_dim, r.hidden_dim), (256, 0.9, 0.07, 1024, 2048), "{name}");
            assert_eq!((r.classifier, r.lr_decay, r.warmup_epochs, r.image_size), (ClassifierKind::Normed, LrDecay::Cosine, 0, 224), "{name}");
            // Cosine from lr at epoch 0 down to near 0 at the last epoch, no warm-up.
            assert!((r.lr_at(0) - lr * 0.5 * (1.0 + (std::f64::consts::PI / (epochs as f64 + 1.0)).cos())).abs() < 1e-15);
            assert!(r.lr_at(epochs - 1) < lr * 1e-3);
        }
        let r = Recipe::preset("imagenet-lt-r50").unwrap();
        assert_eq!(r.merge_toml("image_size = 64\nbatch_size = 16").unwrap().image_size, 64);
        assert!(r.merge_toml("image_size = 16").is_err());
        assert!(r.merge_toml("imbalance_ratio = 10.0").is_err(), "list-file sets are not subsampled");
        assert!(Recipe::preset("cifar10-lt-if100").unwrap().merge_toml("image_size = 64").is_err());
        assert_eq!(r.model().feature_dim, 1024);
        // A recipe saved before image_size and precision existed reads as CIFAR f32.
        let old = Recipe::preset("cifar10-lt-if100").unwrap().to_toml().unwrap().lines().filter(|l| !l.starts_with("image_size") && !l.starts_with("precision")).collect::<Vec<_>>().join("\n");
        assert_eq!(Recipe::from_toml(&old).unwrap(), Recipe::preset("cifar10-lt-if100").unwrap());
    }

    #[test]
    fn toml_round_trip_and_overrides() {
        let r = Recipe::preset("cifar100-lt-if50").unwrap();
        assert_eq!(Recipe::from_toml(&r.to_toml().unwrap()).unwrap(), r);
        let o = r.merge_toml("lr = 0.1\nbatch_size = 128\nlr_decay = \"cosine\"").unwrap();
        assert_eq!((o.lr, o.batch_size, o.lr_decay), (0.1, 128, LrDecay::Cosine));
        assert!(r.merge_toml("learning_rate = 0.1").unwrap_err().to_string().contains("learning_rate"));
        // An optional field that the base leaves unset is still a known field.
        assert_eq!(r.merge_toml("limit = 500").unwrap().limit, Some(500));
        assert_eq!(Recipe { limit: Some(9), ..r.clone() }.merge_toml("seed = 3").unwrap().limit, Some(9));
        assert!(r.merge_toml("limit = 0").is_err());
        assert!(r.merge_toml("milestones = [500]").is_err());
        assert!(r.merge_toml("lr = -1.0").is_err());
        // SupCon's queue belongs to SupCon; a recipe saved before the field had none.
        assert_eq!(r.merge_toml("contrastive_loss = \"supcon\"\nsupcon_queue = 4096").unwrap().supcon_queue, 4096);
        assert!(r.merge_toml("supcon_queue = 4096").unwrap_err().to_string().contains("set contrastive_loss = \"supcon\" or supcon_queue = 0"));
        let old = r.to_toml().unwrap().lines().filter(|l| !l.starts_with("supcon_queue")).collect::<Vec<_>>().join("\n");
        assert_eq!(Recipe::from_toml(&old).unwrap(), r);
        for field in ["lr", "temperature", "alpha", "weight_decay", "imbalance_ratio"] {
            assert!(r.merge_toml(&format!("{field} = inf")).is_err(), "{field} = inf");
            assert!(r.merge_toml(&format!("{field} = nan")).is_err(), "{field} = nan");
        }
    }
}
