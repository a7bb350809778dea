//! The per-sample transforms the loader runs: ProCo's three CIFAR training views and the
//! test-time preprocessing, each writing normalised f32 CHW straight into the batch buffer.

use image::RgbImage;
use rand::rngs::StdRng;

use crate::augment::{normalize_into, ClassificationView, ContrastiveView, CIFAR_MEAN, CIFAR_STD};
use crate::error::{ProcoError, Result};
use crate::loader::SampleTransform;

/// View 1: crop + flip + AutoAugment + Cutout (classifier branch); views 2 and 3: SimCLR-style
/// crops with colour jitter (ProCo branch). All normalised with the CIFAR statistics.
pub struct CifarTrainViews {
    classification: ClassificationView,
    contrastive: ContrastiveView,
}

impl CifarTrainViews {
    /// The reference's CIFAR recipe.
    pub fn new() -> Self {
        Self { classification: ClassificationView::cifar(), contrastive: ContrastiveView::cifar() }
    }
}

impl Default for CifarTrainViews {
    fn default() -> Self {
        Self::new()
    }
}

fn check_size(img: &RgbImage, size: u32) -> Result<()> {
    if img.dimensions() != (size, size) {
        return Err(ProcoError::InvalidConfig { reason: format!("expected {size}x{size} images, got {:?}", img.dimensions()) });
    }
    Ok(())
}

impl SampleTransform for CifarTrainViews {
    fn views(&self) -> usize {
        3
    }
    fn height(&self) -> usize {
        32
    }
    fn width(&self) -> usize {
        32
    }
    fn apply(&self, img: &RgbImage, rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
        check_size(img, 32)?;
        let [first, second, third] = out else {
            return Err(ProcoError::InvalidConfig { reason: format!("{} output views for a 3-view transform", out.len()) });
        };
        normalize_into(&self.classification.apply(img, rng), CIFAR_MEAN, CIFAR_STD, first)?;
        normalize_into(&self.contrastive.apply(img, rng), CIFAR_MEAN, CIFAR_STD, second)?;
        normalize_into(&self.contrastive.apply(img, rng), CIFAR_MEAN, CIFAR_STD, third)
    }
}

/// Test-time preprocessing for CIFAR: ToTensor + Normalize, nothing random.
pub struct CifarTestView;

impl SampleTransform for CifarTestView {
    fn views(&self) -> usize {
        1
    }
    fn height(&self) -> usize {
        32
    }
    fn width(&self) -> usize {
        32
    }
    fn apply(&self, img: &RgbImage, _rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
        check_size(img, 32)?;
        let [only] = out else {
            return Err(ProcoError::InvalidConfig { reason: format!("{} output views for a 1-view transform", out.len()) });
        };
        normalize_into(img, CIFAR_MEAN, CIFAR_STD, only)
    }
}
