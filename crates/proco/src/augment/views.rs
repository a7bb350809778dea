//! The training views of the ProCo recipes, as 8-bit images ready for
//! [`normalize_into`](super::normalize::normalize_into).
//!
//! - [`ClassificationView`] (CIFAR): `RandomCrop(32, padding=4)`, `RandomHorizontalFlip`,
//!   `CIFAR10Policy`, `Cutout(1, 16)`; normalise with the CIFAR statistics.
//! - [`ContrastiveView`] (CIFAR at 32 px, ImageNet-LT at 224 px): `RandomResizedCrop`,
//!   `RandomHorizontalFlip`, `RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8)`,
//!   `RandomGrayscale(p=0.2)`.
//! - [`RandAugmentView`] (ImageNet-LT classification branch): `RandomResizedCrop(224)`,
//!   `RandomHorizontalFlip`, `ColorJitter(0.4, 0.4, 0.4, 0)`, RandAugment `rand-n2-m10-mstd0.5`.
//!
//! Each view draws all its randomness from the `rng` passed to `apply`, so seeding one generator
//! per (sample, epoch) makes every view reproducible.

use std::num::NonZeroU32;

use image::RgbImage;
use rand::Rng;

use super::autoaugment::Cifar10Policy;
use super::geometry::{cutout, padded_crop};
use super::jitter::{random_grayscale, ColorJitter};
use super::randaugment::RandAugment;
use super::resized_crop::RandomResizedCrop;

/// `RandomHorizontalFlip(0.5)`.
fn random_flip<R: Rng>(mut img: RgbImage, rng: &mut R) -> RgbImage {
    if rng.random_bool(0.5) {
        image::imageops::flip_horizontal_in_place(&mut img);
    }
    img
}

/// The CIFAR classification view of ProCo (the LDAM / PaCo "regular" augmentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassificationView {
    size: u32,
    padding: u32,
    cutout_length: u32,
}

impl Default for ClassificationView {
    fn default() -> Self {
        Self::cifar()
    }
}

impl ClassificationView {
    /// The CIFAR recipe: 32 px crops with 4 px zero padding, Cutout of length 16.
    pub fn cifar() -> Self {
        Self {
            size: 32,
            padding: 4,
            cutout_length: 16,
        }
    }

    /// A view cropping `size` x `size` windows from the image zero-padded by `padding`, with a
    /// Cutout hole of side `cutout_length` (0 disables Cutout).
    pub fn new(size: NonZeroU32, padding: u32, cutout_length: u32) -> Self {
        Self {
            size: size.get(),
            padding,
            cutout_length,
        }
    }

    /// Output side length in pixels.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Applies the view; the output is `size` x `size`.
    ///
    /// The crop corner is drawn in `0..=dim + 2 padding - size` per axis (torchvision's
    /// `RandomCrop`); images too small for the window, which torchvision rejects, are padded
    /// further with zeros instead. The Cutout centre is uniform over the output.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        let span = |dim: u32| (dim + 2 * self.padding).saturating_sub(self.size);
        let top = rng.random_range(0..=span(img.height()));
        let left = rng.random_range(0..=span(img.width()));
        let out = padded_crop(img, self.padding, self.size, top, left);
        let out = random_flip(out, rng);
        let mut out = Cifar10Policy.apply(&out, rng);
        if self.cutout_length > 0 {
            let cy = rng.random_range(0..self.size);
            let cx = rng.random_range(0..self.size);
            cutout(&mut out, cy, cx, self.cutout_length);
        }
        out
    }
}

/// The contrastive (SimCLR-style) view of ProCo, used twice per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ContrastiveView {
    crop: RandomResizedCrop,
    jitter: ColorJitter,
    jitter_p: f64,
    grayscale_p: f64,
}

impl ContrastiveView {
    /// The recipe at output side `size`: scale (0.08, 1), ratio (3/4, 4/3), jitter
    /// (0.4, 0.4, 0.4, 0.1) with probability 0.8, grayscale with probability 0.2.
    pub fn square(size: NonZeroU32) -> Self {
        Self {
            crop: RandomResizedCrop::square(size),
            jitter: ColorJitter::proco(),
            jitter_p: 0.8,
            grayscale_p: 0.2,
        }
    }

    /// The CIFAR view (32 px).
    pub fn cifar() -> Self {
        Self::square(NonZeroU32::MIN.saturating_add(31))
    }

    /// The ImageNet-LT view (224 px).
    pub fn imagenet() -> Self {
        Self::square(NonZeroU32::MIN.saturating_add(223))
    }

    /// Output size `(width, height)`.
    pub fn output_size(&self) -> (u32, u32) {
        self.crop.output_size()
    }

    /// The crop that starts the view.
    pub fn crop(&self) -> &RandomResizedCrop {
        &self.crop
    }

    /// Applies the view.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        self.finish(self.crop.apply(img, rng), rng)
    }

    /// Applies the view to a `full` (width, height) image decoded at 1/`reduction` as `img`
    /// (see [`RandomResizedCrop::apply_reduced`]).
    pub fn apply_reduced<R: Rng>(&self, img: &RgbImage, full: (u32, u32), reduction: u32, rng: &mut R) -> RgbImage {
        self.finish(self.crop.apply_reduced(img, full, reduction, rng), rng)
    }

    /// The view's steps after its crop, on the crop's output.
    fn finish<R: Rng>(&self, cropped: RgbImage, rng: &mut R) -> RgbImage {
        let out = random_flip(cropped, rng);
        let out = if rng.random::<f64>() < self.jitter_p {
            self.jitter.apply_owned(out, rng)
        } else {
            out
        };
        random_grayscale(out, self.grayscale_p, rng)
    }
}

/// ProCo's ImageNet-LT classification view with RandAugment.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugmentView {
    crop: RandomResizedCrop,
    jitter: ColorJitter,
    rand_augment: RandAugment,
}

impl RandAugmentView {
    /// `RandomResizedCrop(224, scale=(0.08, 1))`, flip, `ColorJitter(0.4, 0.4, 0.4, 0)` always,
    /// then [`RandAugment::imagenet_lt`].
    pub fn imagenet_lt() -> Self {
        Self {
            crop: RandomResizedCrop::square(NonZeroU32::MIN.saturating_add(223)),
            jitter: ColorJitter::proco().without_hue(),
            rand_augment: RandAugment::imagenet_lt(),
        }
    }

    /// A view with another crop size or RandAugment (the jitter stays the recipe's).
    pub fn new(crop: RandomResizedCrop, rand_augment: RandAugment) -> Self {
        Self {
            crop,
            jitter: ColorJitter::proco().without_hue(),
            rand_augment,
        }
    }

    /// Output size `(width, height)`.
    pub fn output_size(&self) -> (u32, u32) {
        self.crop.output_size()
    }

    /// The crop that starts the view.
    pub fn crop(&self) -> &RandomResizedCrop {
        &self.crop
    }

    /// Applies the view.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        self.finish(self.crop.apply(img, rng), rng)
    }

    /// Applies the view to a `full` (width, height) image decoded at 1/`reduction` as `img`
    /// (see [`RandomResizedCrop::apply_reduced`]).
    pub fn apply_reduced<R: Rng>(&self, img: &RgbImage, full: (u32, u32), reduction: u32, rng: &mut R) -> RgbImage {
        self.finish(self.crop.apply_reduced(img, full, reduction, rng), rng)
    }

    /// The view's steps after its crop, on the crop's output.
    fn finish<R: Rng>(&self, cropped: RgbImage, rng: &mut R) -> RgbImage {
        let out = random_flip(cropped, rng);
        let out = self.jitter.apply_owned(out, rng);
        self.rand_augment.apply(&out, rng)
    }
}
