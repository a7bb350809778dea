//! Datasets held in memory as one contiguous pixel buffer (CIFAR and other small sets).

use std::sync::Arc;

use image::RgbImage;

use crate::data::Dataset;
use crate::error::{ProcoError, Result};

/// Equal-sized RGB images in one buffer (N x H x W x 3, interleaved) with their labels.
#[derive(Debug, Clone)]
pub struct InMemoryDataset {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
    labels: Vec<u32>,
    num_classes: usize,
    class_names: Option<Vec<String>>,
}

impl InMemoryDataset {
    /// Wraps a pixel buffer of `labels.len()` images of `width` x `height`. Fails if the
    /// buffer size does not match or a label is not below `num_classes`.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>, labels: Vec<u32>, num_classes: usize) -> Result<Self> {
        let per = width as usize * height as usize * 3;
        if pixels.len() != per * labels.len() {
            return Err(ProcoError::InvalidConfig {
                reason: format!("{} pixel bytes for {} images of {width}x{height}x3", pixels.len(), labels.len()),
            });
        }
        if let Some(l) = labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(ProcoError::InvalidLabels { reason: format!("label {l} is outside 0..{num_classes}") });
        }
        Ok(Self { width, height, pixels, labels, num_classes, class_names: None })
    }

    /// Attaches class names (one per class).
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self> {
        if names.len() != self.num_classes {
            return Err(ProcoError::InvalidConfig {
                reason: format!("{} class names for {} classes", names.len(), self.num_classes),
            });
        }
        self.class_names = Some(names);
        Ok(self)
    }

    /// All labels, in sample order.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// Image width and height in pixels.
    pub fn image_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The raw interleaved pixels of sample i.
    pub fn pixels_of(&self, i: usize) -> &[u8] {
        let per = self.width as usize * self.height as usize * 3;
        &self.pixels[i * per..(i + 1) * per]
    }
}

impl Dataset for InMemoryDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn num_classes(&self) -> usize {
        self.num_classes
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }
    fn image(&self, i: usize) -> Result<RgbImage> {
        RgbImage::from_raw(self.width, self.height, self.pixels_of(i).to_vec())
            .ok_or_else(|| ProcoError::InvalidConfig { reason: "image buffer size mismatch".into() })
    }
    fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }
}

/// A view of some samples of another dataset (for example the long-tailed selection), sharing
/// its pixels instead of copying them.
pub struct Subset<D: Dataset + ?Sized> {
    base: Arc<D>,
    indices: Vec<usize>,
}

impl<D: Dataset + ?Sized> Clone for Subset<D> {
    fn clone(&self) -> Self {
        Self { base: self.base.clone(), indices: self.indices.clone() }
    }
}

impl<D: Dataset + ?Sized> Subset<D> {
    /// The samples `indices` of `base`, in that order. Fails on an index out of range.
    pub fn new(base: Arc<D>, indices: Vec<usize>) -> Result<Self> {
        if let Some(&i) = indices.iter().find(|&&i| i >= base.len()) {
            return Err(ProcoError::InvalidConfig { reason: format!("subset index {i} is outside 0..{}", base.len()) });
        }
        Ok(Self { base, indices })
    }

    /// Indices into the base dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl<D: Dataset + ?Sized> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn num_classes(&self) -> usize {
        self.base.num_classes()
    }
    fn label(&self, i: usize) -> usize {
        self.base.label(self.indices[i])
    }
    fn image(&self, i: usize) -> Result<RgbImage> {
        self.base.image(self.indices[i])
    }
    fn describe(&self, i: usize) -> String {
        self.base.describe(self.indices[i])
    }
    fn class_names(&self) -> Option<&[String]> {
        self.base.class_names()
    }
}
