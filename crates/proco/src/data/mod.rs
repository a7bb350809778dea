//! Datasets: images and labels from files on disk, and the long-tail protocol that subsamples
//! them. Images are 8-bit RGB (`image::RgbImage`, row-major, interleaved R, G, B), the form
//! the augmentations in [`crate::augment`] take.

pub mod check;
pub mod cifar;
pub mod cifar_subset;
pub mod decode;
pub mod fetch;
pub mod folder;
pub mod list_file;
pub mod long_tail;
pub mod memory;
pub mod pickle;

pub use memory::{InMemoryDataset, Subset};

use image::RgbImage;

use crate::error::Result;

/// A labelled image collection, readable from several loader threads at once.
///
/// `image(i)` returns an owned image: in-memory datasets copy the pixels of one sample
/// (3 KiB for CIFAR), file-backed ones decode it, so the dataset itself never holds more than
/// one copy of the pixels.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;
    /// Whether the dataset has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of classes (labels are in 0..num_classes).
    fn num_classes(&self) -> usize;
    /// Label of sample i (i < len).
    fn label(&self, i: usize) -> usize;
    /// Pixels of sample i (i < len).
    fn image(&self, i: usize) -> Result<RgbImage>;
    /// Sample i decoded at the reduction `choose(width, height)` asks for, given its stored
    /// size (rounded down to 1, 2, 4 or 8: JPEG's DCT-domain scaling, as PIL's `draft`),
    /// where the source allows it; otherwise in full. The default decodes in full with
    /// [`Dataset::image`].
    fn image_reduced(&self, i: usize, choose: &dyn Fn(u32, u32) -> u32) -> Result<decode::DecodedImage> {
        let _ = choose;
        self.image(i).map(decode::DecodedImage::full)
    }
    /// Human-readable class names, one per class, when the source provides them.
    fn class_names(&self) -> Option<&[String]> {
        None
    }
    /// Where sample i comes from, for messages (a file path and list line, or the index).
    fn describe(&self, i: usize) -> String {
        format!("sample {i}")
    }
}

/// Images per class of `dataset` (`num_classes` entries).
pub fn class_counts(dataset: &dyn Dataset) -> Vec<usize> {
    let mut counts = vec![0usize; dataset.num_classes()];
    (0..dataset.len()).for_each(|i| counts[dataset.label(i)] += 1);
    counts
}
