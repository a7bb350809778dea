//! The per-sample transforms the loader runs: ProCo's three training views and the test-time
//! preprocessing, on CIFAR and at ImageNet scale, each writing normalised f32 CHW straight
//! into the batch buffer.

use std::num::NonZeroU32;

use image::RgbImage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::augment::resample::resize_window_part;
use crate::augment::{normalize_into, ClassificationView, ContrastiveView, RandAugment, RandAugmentView, RandomResizedCrop, CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD};
use crate::error::{ProcoError, Result};
use crate::data::decode::DecodedImage;
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

/// The `N` output views of a transform's `apply`, or an error naming the count received.
fn views_of<'a, 'b, const N: usize>(out: &'a mut [&'b mut [f32]]) -> Result<&'a mut [&'b mut [f32]; N]> {
    let received = out.len();
    out.try_into().map_err(|_| ProcoError::InvalidConfig { reason: format!("{received} output views for a {N}-view transform") })
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
        let [first, second, third] = views_of::<3>(out)?;
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
        let [only] = views_of::<1>(out)?;
        normalize_into(img, CIFAR_MEAN, CIFAR_STD, only)
    }
}

/// Checks a crop side for the ImageNet-scale views.
fn crop_side(size: u32) -> Result<NonZeroU32> {
    NonZeroU32::new(size).filter(|s| s.get() >= 8).ok_or_else(|| ProcoError::InvalidConfig { reason: format!("image size {size} is too small for the ImageNet-scale views (at least 8 pixels)") })
}

/// ProCo's ImageNet-LT / iNaturalist training views at side `size` (224 in the paper), any
/// input size: view 1 is [`RandAugmentView`] (RandomResizedCrop, flip, ColorJitter 0.4,
/// RandAugment n 2 m 10), views 2 and 3 the SimCLR-style [`ContrastiveView`]; all normalised
/// with the ImageNet statistics.
pub struct ImageNetTrainViews {
    size: u32,
    classification: RandAugmentView,
    contrastive: ContrastiveView,
}

impl ImageNetTrainViews {
    /// The views at side `size` pixels. RandAugment's translation range scales with the
    /// size (100 px at 224, timm's `0.45 * size`). Fails for a size below 8.
    pub fn new(size: u32) -> Result<Self> {
        let side = crop_side(size)?;
        let reference = RandAugment::imagenet_lt();
        let rand_augment = RandAugment::new(reference.config(), (f64::from(size) * 0.45).trunc(), 40.0 * f64::from(size) / 224.0, [124, 116, 104])?;
        Ok(Self { size, classification: RandAugmentView::new(RandomResizedCrop::square(side), rand_augment), contrastive: ContrastiveView::square(side) })
    }
}

impl ImageNetTrainViews {
    /// The views' own generators, seeded from the sample's: each view's crop box is then its
    /// generator's first draw, so that all three boxes are known from the stored image size
    /// before decoding ([`SampleTransform::reduction`]).
    fn view_rngs(rng: &mut StdRng) -> [StdRng; 3] {
        let seeds: [u64; 3] = rng.random();
        seeds.map(StdRng::seed_from_u64)
    }

    /// The three views of `img`, decoded from a `full` (width, height) image at `reduction`.
    fn views_into(&self, img: &RgbImage, full: (u32, u32), reduction: u32, rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
        let [first, second, third] = views_of::<3>(out)?;
        let [mut r1, mut r2, mut r3] = Self::view_rngs(rng);
        normalize_into(&self.classification.apply_reduced(img, full, reduction, &mut r1), IMAGENET_MEAN, IMAGENET_STD, first)?;
        normalize_into(&self.contrastive.apply_reduced(img, full, reduction, &mut r2), IMAGENET_MEAN, IMAGENET_STD, second)?;
        normalize_into(&self.contrastive.apply_reduced(img, full, reduction, &mut r3), IMAGENET_MEAN, IMAGENET_STD, third)?;
        Ok(())
    }
}

impl SampleTransform for ImageNetTrainViews {
    fn views(&self) -> usize {
        3
    }
    fn height(&self) -> usize {
        self.size as usize
    }
    fn width(&self) -> usize {
        self.size as usize
    }
    fn apply(&self, img: &RgbImage, rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
        self.views_into(img, img.dimensions(), 1, rng, out)
    }
    /// The reduction that keeps all three crop boxes at least the output size.
    fn reduction(&self, width: u32, height: u32, rng: &StdRng) -> u32 {
        let [mut r1, mut r2, mut r3] = Self::view_rngs(&mut rng.clone());
        [
            self.classification.crop().sample_box(width, height, &mut r1),
            self.contrastive.crop().sample_box(width, height, &mut r2),
            self.contrastive.crop().sample_box(width, height, &mut r3),
        ]
        .iter()
        .map(|b| b.largest_reduction(self.size, self.size))
        .min()
        .unwrap_or(1)
    }
    fn apply_decoded(&self, img: &DecodedImage, rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
        self.views_into(&img.pixels, img.full_size, img.reduction, rng, out)
    }
}

/// Test-time preprocessing at ImageNet scale: torchvision's `Resize(resize)` (shorter side to
/// `resize`, the longer one `int(resize * long / short)`, PIL bilinear with antialiasing),
/// `CenterCrop(crop)`, ToTensor, Normalize with the ImageNet statistics. The paper's is
/// resize 256, crop 224.
pub struct ImageNetTestView {
    resize: u32,
    crop: u32,
}

impl ImageNetTestView {
    /// Resize to `resize`, centre crop `crop` (crop <= resize). Fails otherwise, or for a crop
    /// below 8 pixels.
    pub fn new(resize: u32, crop: u32) -> Result<Self> {
        crop_side(crop)?;
        if resize < crop {
            return Err(ProcoError::InvalidConfig { reason: format!("the test view resizes to {resize} but crops {crop}; the crop must fit") });
        }
        Ok(Self { resize, crop })
    }

    /// The paper's proportions for crop side `size`: resize to `round(size * 8 / 7)` (256 for
    /// 224), then crop `size`.
    pub fn for_size(size: u32) -> Result<Self> {
        Self::new(((f64::from(size) * 8.0 / 7.0).round()) as u32, size)
    }

    /// The size `(width, height)` that `Resize(resize)` gives a `width` x `height` image, in
    /// u64 (a very thin image's long side can pass u32).
    pub fn resized_size(&self, width: u32, height: u32) -> (u64, u64) {
        let (w, h) = (u64::from(width.max(1)), u64::from(height.max(1)));
        let r = u64::from(self.resize);
        // torchvision: new_long = int(size * long / short), in floating point.
        let long = |long: u64, short: u64| ((r as f64 * long as f64 / short as f64) as u64).max(1);
        if w <= h {
            (r, long(h, w))
        } else {
            (long(w, h), r)
        }
    }

    /// Applies resize + centre crop, giving a `crop` x `crop` image: torchvision's
    /// `CenterCrop(crop)(Resize(resize)(img))` (top `int(round((h - crop) / 2))`, left
    /// likewise), computing only the cropped part of the resize (bit-identical to the whole
    /// resize cropped).
    ///
    /// # Errors
    /// [`ProcoError::InvalidImages`] when the resized long side would pass 2^32 - 1 pixels (an
    /// image thinner than 1 : 16 million).
    pub fn preprocess(&self, img: &RgbImage) -> Result<RgbImage> {
        self.preprocess_reduced(img, img.dimensions())
    }

    /// [`ImageNetTestView::preprocess`] of a `full` (width, height) image from `img`, its
    /// decoding at a reduced scale: the resize to the full image's resized size reads the
    /// reduced pixels (the same picture, to within the reduced decoding).
    fn preprocess_reduced(&self, img: &RgbImage, full: (u32, u32)) -> Result<RgbImage> {
        let (rw, rh) = self.resized_size(full.0, full.1);
        let (rw, rh) = match (u32::try_from(rw), u32::try_from(rh)) {
            (Ok(w), Ok(h)) => (w, h),
            _ => return Err(ProcoError::InvalidImages { reason: format!("a {} x {} image resized to a shorter side of {} would be {rw} x {rh} pixels", full.0, full.1, self.resize) }),
        };
        // Both resized sides are at least `resize` >= `crop`: the crop lies inside.
        let offset = |dim: u32| ((f64::from(dim) - f64::from(self.crop)) / 2.0).round_ties_even() as u32;
        let part = (offset(rw), offset(rh), self.crop, self.crop);
        Ok(resize_window_part(img, (0, 0, img.width(), img.height()), rw, rh, part))
    }
}

impl SampleTransform for ImageNetTestView {
    fn views(&self) -> usize {
        1
    }
    fn height(&self) -> usize {
        self.crop as usize
    }
    fn width(&self) -> usize {
        self.crop as usize
    }
    fn apply(&self, img: &RgbImage, _rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
        let [only] = views_of::<1>(out)?;
        normalize_into(&self.preprocess(img)?, IMAGENET_MEAN, IMAGENET_STD, only)
    }
    /// The reduction that keeps the shorter side at least `resize`.
    fn reduction(&self, width: u32, height: u32, _rng: &StdRng) -> u32 {
        let short = u64::from(width.min(height));
        [8u32, 4, 2].into_iter().find(|&r| short >= u64::from(r) * u64::from(self.resize)).unwrap_or(1)
    }
    fn apply_decoded(&self, img: &DecodedImage, _rng: &mut StdRng, out: &mut [&mut [f32]]) -> Result<()> {
        let [only] = views_of::<1>(out)?;
        normalize_into(&self.preprocess_reduced(&img.pixels, img.full_size)?, IMAGENET_MEAN, IMAGENET_STD, only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::resample::resize_bilinear;
    use rand::SeedableRng;

    /// The reference for [`ImageNetTestView::preprocess`]: torchvision's `CenterCrop(size)` on
    /// a PIL image, top `int(round((h - size) / 2))`, left likewise; along a side shorter than
    /// `size`, the image is first zero padded by `(size - dim) // 2` before (and the rest
    /// after) and the crop starts at 0.
    fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let offset = |dim: u32| if size > dim { -i64::from((size - dim) / 2) } else { ((f64::from(dim) - f64::from(size)) / 2.0).round_ties_even() as i64 };
    let (top, left) = (offset(img.height()), offset(img.width()));
    let mut out = RgbImage::new(size, size);
    for y in 0..size as i64 {
        let sy = y + top;
        if sy < 0 || sy >= i64::from(img.height()) {
            continue;
        }
        for x in 0..size as i64 {
            let sx = x + left;
            if sx >= 0 && sx < i64::from(img.width()) {
                out.put_pixel(x as u32, y as u32, *img.get_pixel(sx as u32, sy as u32));
            }
        }
    }
    out
}


    #[test]
    fn test_view_sizes_follow_torchvision() {
        let v = ImageNetTestView::for_size(224).unwrap();
        assert_eq!(v.resize, 256);
        assert_eq!(v.resized_size(500, 375), (341, 256));
        assert_eq!(v.resized_size(375, 500), (256, 341));
        assert_eq!(v.resized_size(1, 1), (256, 256));
        assert_eq!(v.resized_size(2000, 1), (512000, 256));
        // A 1 : 2000 strip: only the 224 x 224 crop of its 256 x 512000 resize is computed.
        let strip = RgbImage::from_fn(1, 2000, |_, y| image::Rgb([(y % 256) as u8, 7, 9]));
        assert_eq!(v.preprocess(&strip).unwrap().dimensions(), (224, 224));
        assert!(v.preprocess(&RgbImage::new(u32::MAX / 64, 1)).is_err(), "a resize past 2^32 pixels is an error, not a wrapped size");
        assert_eq!(ImageNetTestView::for_size(32).unwrap().resize, 37);
        assert!(ImageNetTestView::new(200, 224).is_err());
        assert!(ImageNetTrainViews::new(4).is_err());
    }

    #[test]
    fn preprocess_is_resize_then_centre_crop() {
        let v = ImageNetTestView::for_size(32).unwrap();
        for (w, h) in [(50, 40), (40, 50), (37, 37), (200, 31), (9, 300), (1, 1), (500, 375)] {
            let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 5 + y) as u8, (x ^ y) as u8, (x * y) as u8]));
            let (rw, rh) = v.resized_size(w, h);
            let expected = center_crop(&resize_bilinear(&img, rw as u32, rh as u32), 32);
            assert_eq!(v.preprocess(&img).unwrap(), expected, "{w}x{h}");
        }
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let c = center_crop(&img, 2);
        // top = round(1.0) = 1, left = round(1.5) = 2 (half to even).
        assert_eq!(c.get_pixel(0, 0).0, [2, 1, 0]);
        assert_eq!(c.get_pixel(1, 1).0, [3, 2, 0]);
        // Larger than the image: padded by (7 - 5) // 2 = 1 on the left, (7 - 4) // 2 = 1 on top.
        let c = center_crop(&img, 7);
        assert_eq!(c.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(c.get_pixel(1, 2).0, [0, 1, 0]);
        assert_eq!(c.get_pixel(5, 4).0, [4, 3, 0]);
        assert_eq!(c.get_pixel(6, 5).0, [0, 0, 0]);
    }

    #[test]
    fn imagenet_views_fill_every_value_for_any_input_size() {
        let views = ImageNetTrainViews::new(32).unwrap();
        let test = ImageNetTestView::for_size(32).unwrap();
        for (w, h) in [(1, 1), (500, 375), (17, 300), (64, 64)] {
            let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7 % 256) as u8, (y * 3 % 256) as u8, 200]));
            let mut rng = StdRng::seed_from_u64(u64::from(w));
            let mut bufs = vec![vec![f32::NAN; 3 * 32 * 32]; 3];
            let mut outs: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            views.apply(&img, &mut rng, &mut outs).unwrap();
            assert!(bufs.iter().flatten().all(|v| v.is_finite()), "{w}x{h}");
            let mut one = vec![f32::NAN; 3 * 32 * 32];
            test.apply(&img, &mut rng, &mut [one.as_mut_slice()]).unwrap();
            assert!(one.iter().all(|v| v.is_finite()), "{w}x{h}");
        }
    }

    /// A smooth 2401 x 1801 picture as a quality-95 JPEG.
    fn large_jpeg() -> Vec<u8> {
        let (w, h) = (2401u32, 1801u32);
        let img = RgbImage::from_fn(w, h, |x, y| {
            let (u, v) = (f64::from(x) / f64::from(w), f64::from(y) / f64::from(h));
            image::Rgb([(220.0 * u) as u8, (200.0 * v) as u8, (60.0 + 150.0 * (u * v).sqrt()) as u8])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95).encode_image(&img).unwrap();
        bytes
    }

    fn mean_abs(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum::<f64>() / a.len() as f64
    }

    #[test]
    fn train_views_from_a_reduced_decode_match_the_full_decode() {
        use crate::data::decode::{decode_bytes, decode_bytes_reduced, DecodedImage};
        let views = ImageNetTrainViews::new(64).unwrap();
        let bytes = large_jpeg();
        let full = decode_bytes(&bytes).unwrap();
        let mut reductions = std::collections::BTreeMap::new();
        let mut worst: f64 = 0.0;
        for seed in 0..24u64 {
            let rng = StdRng::seed_from_u64(seed);
            let reduced = decode_bytes_reduced(&bytes, &|w, h| views.reduction(w, h, &rng)).unwrap();
            *reductions.entry(reduced.reduction).or_insert(0) += 1;
            // Every box of this sample allows the reduction chosen.
            let [mut r1, mut r2, mut r3] = ImageNetTrainViews::view_rngs(&mut rng.clone());
            for (crop, r) in [(views.classification.crop(), &mut r1), (views.contrastive.crop(), &mut r2), (views.contrastive.crop(), &mut r3)] {
                let b = crop.sample_box(2401, 1801, r);
                assert!(b.width >= reduced.reduction * 64 && b.height >= reduced.reduction * 64, "seed {seed}: {b:?} at 1/{}", reduced.reduction);
            }
            let mut ours = vec![vec![0f32; 3 * 64 * 64]; 3];
            let mut theirs = ours.clone();
            let mut outs: Vec<&mut [f32]> = ours.iter_mut().map(|b| b.as_mut_slice()).collect();
            views.apply_decoded(&reduced, &mut rng.clone(), &mut outs).unwrap();
            let mut outs: Vec<&mut [f32]> = theirs.iter_mut().map(|b| b.as_mut_slice()).collect();
            views.apply_decoded(&DecodedImage::full(full.clone()), &mut rng.clone(), &mut outs).unwrap();
            for (v, (a, b)) in ours.iter().zip(&theirs).enumerate() {
                let d = mean_abs(a, b);
                worst = worst.max(d);
                // Normalised units: 0.1 is about 6 of 255 levels, far below what a crop of
                // another part of the picture gives.
                assert!(d < 0.1, "seed {seed}, view {v}, 1/{}: {d:.3}", reduced.reduction);
            }
        }
        assert!(reductions.keys().any(|&r| r >= 2), "some samples decode reduced: {reductions:?}");
        assert!(worst > 0.0, "the reduced decode is not the full one");
    }

    #[test]
    fn the_test_view_reduces_while_the_shorter_side_keeps_the_resize() {
        use crate::data::decode::{decode_bytes, decode_bytes_reduced, DecodedImage};
        let v = ImageNetTestView::for_size(224).unwrap();
        let rng = StdRng::seed_from_u64(0);
        assert_eq!(v.reduction(500, 375, &rng), 1);
        assert_eq!(v.reduction(1024, 512, &rng), 2);
        assert_eq!(v.reduction(1023, 2000, &rng), 2);
        assert_eq!(v.reduction(2401, 1801, &rng), 4);
        assert_eq!(v.reduction(5000, 4096, &rng), 8);
        let bytes = large_jpeg();
        let reduced = decode_bytes_reduced(&bytes, &|w, h| v.reduction(w, h, &rng)).unwrap();
        assert_eq!(reduced.reduction, 4);
        let (mut a, mut b) = (vec![0f32; 3 * 224 * 224], vec![0f32; 3 * 224 * 224]);
        v.apply_decoded(&reduced, &mut rng.clone(), &mut [a.as_mut_slice()]).unwrap();
        v.apply_decoded(&DecodedImage::full(decode_bytes(&bytes).unwrap()), &mut rng.clone(), &mut [b.as_mut_slice()]).unwrap();
        let d = mean_abs(&a, &b);
        assert!(d > 0.0 && d < 0.03, "{d}");
    }

    #[test]
    fn transforms_without_reduction_refuse_reduced_images() {
        use crate::data::decode::DecodedImage;
        let reduced = DecodedImage { pixels: RgbImage::new(40, 40), full_size: (80, 80), reduction: 2 };
        let mut one = vec![0f32; 3 * 32 * 32];
        assert!(CifarTestView.apply_decoded(&reduced, &mut StdRng::seed_from_u64(0), &mut [one.as_mut_slice()]).is_err());
    }
}
