//! torchvision `RandomResizedCrop`: sample a crop of random area and aspect ratio, then resize it
//! bilinearly (PIL antialiasing) to the output size.

use std::num::NonZeroU32;

use image::RgbImage;
use rand::Rng;

use super::resample::resize_window;
use crate::error::{ProcoError, Result};

/// A crop window in pixels: rows `top .. top + height`, columns `left .. left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: u32,
    /// First column.
    pub left: u32,
    /// Number of rows (at least 1 for a non-empty image).
    pub height: u32,
    /// Number of columns (at least 1 for a non-empty image).
    pub width: u32,
}

impl CropBox {
    /// The largest reduction `r` of 1, 2, 4 or 8 at which this box still spans at least
    /// `out_width` x `out_height` pixels (`width >= r * out_width`, likewise the height), so
    /// that its crop from an image reduced by `r` is still downscaled to the output.
    pub fn largest_reduction(&self, out_width: u32, out_height: u32) -> u32 {
        [8u32, 4, 2].into_iter().find(|&r| u64::from(self.width) >= u64::from(r) * u64::from(out_width) && u64::from(self.height) >= u64::from(r) * u64::from(out_height)).unwrap_or(1)
    }

    /// This box on the image reduced by `reduction`, whose size is `(width, height)`: each
    /// edge divided by `reduction` and rounded to the nearest pixel, at least one pixel wide
    /// and tall, inside the image. The crop from the reduced image then covers the same part
    /// of the picture to within half a reduced pixel.
    pub fn reduced(&self, reduction: u32, (width, height): (u32, u32)) -> CropBox {
        let r = f64::from(reduction.max(1));
        let edge = |v: u32, size: u32| ((f64::from(v) / r).round() as u32).min(size);
        let (left, top) = (edge(self.left, width).min(width.saturating_sub(1)), edge(self.top, height).min(height.saturating_sub(1)));
        let right = edge(self.left.saturating_add(self.width), width).max(left + 1).min(width.max(1));
        let bottom = edge(self.top.saturating_add(self.height), height).max(top + 1).min(height.max(1));
        CropBox { top, left, height: bottom - top, width: right - left }
    }
}

/// `F.resized_crop(img, top, left, height, width, [out_height, out_width], BILINEAR,
/// antialias=True)` on a PIL image: crop, then [`resize_bilinear`].
///
/// The window is intersected with the image first (torchvision's samplers never produce a window
/// outside it), so this never panics.
pub fn resized_crop(img: &RgbImage, b: CropBox, out_width: u32, out_height: u32) -> RgbImage {
    // The window clipped to the image, as `crop_imm` clips it.
    let left = b.left.min(img.width());
    let top = b.top.min(img.height());
    let width = b.width.min(img.width() - left);
    let height = b.height.min(img.height() - top);
    resize_window(img, (left, top, width, height), out_width, out_height)
}

/// Python's `int(round(x))` (round half to even).
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// Uniform draw in `[lo, hi)` that tolerates `lo == hi` (torch's `uniform_`).
fn uniform<R: Rng>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// `RandomResizedCrop(size, scale, ratio)` with bilinear interpolation and antialiasing.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomResizedCrop {
    out_width: u32,
    out_height: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
}

impl RandomResizedCrop {
    /// A crop producing `out_width` x `out_height` images, with area fraction drawn uniformly
    /// from `scale` and log aspect ratio (width/height) drawn uniformly from `ratio`.
    ///
    /// Fails when a size is 0, or `scale`/`ratio` bounds are not finite, positive and ordered
    /// (`lo <= hi`).
    pub fn new(
        out_width: u32,
        out_height: u32,
        scale: (f64, f64),
        ratio: (f64, f64),
    ) -> Result<Self> {
        let ordered =
            |(lo, hi): (f64, f64)| lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi;
        if out_width == 0 || out_height == 0 || !ordered(scale) || !ordered(ratio) {
            return Err(ProcoError::InvalidConfig {
                reason: format!(
                    "RandomResizedCrop needs a non-empty size and finite positive ordered scale and \
                     ratio bounds, got size {out_width}x{out_height}, scale {scale:?}, ratio {ratio:?}"
                ),
            });
        }
        Ok(Self {
            out_width,
            out_height,
            scale,
            ratio,
        })
    }

    /// torchvision's defaults for a square output: scale (0.08, 1), ratio (3/4, 4/3).
    pub fn square(size: NonZeroU32) -> Self {
        Self {
            out_width: size.get(),
            out_height: size.get(),
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
        }
    }

    /// Output size `(width, height)`.
    pub fn output_size(&self) -> (u32, u32) {
        (self.out_width, self.out_height)
    }

    /// torchvision's `RandomResizedCrop.get_params` for a `width` x `height` image: up to 10
    /// attempts of (area, ratio) draws whose rounded box fits, then the centre crop clamped to
    /// the ratio range.
    pub fn sample_box<R: Rng>(&self, width: u32, height: u32, rng: &mut R) -> CropBox {
        let area = f64::from(width) * f64::from(height);
        let (log_lo, log_hi) = (self.ratio.0.ln(), self.ratio.1.ln());
        for _ in 0..10 {
            let target_area = area * uniform(rng, self.scale.0, self.scale.1);
            let aspect = uniform(rng, log_lo, log_hi).exp();
            let w = py_round((target_area * aspect).sqrt());
            let h = py_round((target_area / aspect).sqrt());
            if 0 < w && w <= i64::from(width) && 0 < h && h <= i64::from(height) {
                let (w, h) = (w as u32, h as u32);
                let top = rng.random_range(0..=height - h);
                let left = rng.random_range(0..=width - w);
                return CropBox {
                    top,
                    left,
                    height: h,
                    width: w,
                };
            }
        }
        self.fallback_box(width, height)
    }

    /// The centre crop used when all attempts fail.
    fn fallback_box(&self, width: u32, height: u32) -> CropBox {
        let in_ratio = f64::from(width) / f64::from(height);
        let (w, h) = if in_ratio < self.ratio.0 {
            (
                width,
                (py_round(f64::from(width) / self.ratio.0) as u32).min(height),
            )
        } else if in_ratio > self.ratio.1 {
            (
                (py_round(f64::from(height) * self.ratio.1) as u32).min(width),
                height,
            )
        } else {
            (width, height)
        };
        CropBox {
            top: (height - h) / 2,
            left: (width - w) / 2,
            height: h,
            width: w,
        }
    }

    /// Samples a box and returns the resized crop.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        self.apply_reduced(img, img.dimensions(), 1, rng)
    }

    /// [`RandomResizedCrop::apply`] of a `full` (width, height) image from `img`, its decoding
    /// at 1/`reduction` of that size: the box is drawn on the full size (the same draws as
    /// `apply` on the full image) and [`CropBox::reduced`] onto `img`.
    pub fn apply_reduced<R: Rng>(&self, img: &RgbImage, full: (u32, u32), reduction: u32, rng: &mut R) -> RgbImage {
        let b = self.sample_box(full.0, full.1, rng);
        let b = if reduction > 1 { b.reduced(reduction, img.dimensions()) } else { b };
        resized_crop(img, b, self.out_width, self.out_height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn fallback_for_extreme_aspect() {
        // scale (1, 1) on a 100x10 image never fits a box of ratio <= 4/3: centre crop 13x10.
        let rrc = RandomResizedCrop::new(8, 8, (1.0, 1.0), (3.0 / 4.0, 4.0 / 3.0)).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let b = rrc.sample_box(100, 10, &mut rng);
        assert_eq!(
            b,
            CropBox {
                top: 0,
                left: 43,
                height: 10,
                width: 13
            }
        );
    }

    #[test]
    fn rejects_bad_config() {
        assert!(RandomResizedCrop::new(0, 8, (0.08, 1.0), (0.75, 1.33)).is_err());
        assert!(RandomResizedCrop::new(8, 8, (1.0, 0.5), (0.75, 1.33)).is_err());
        assert!(RandomResizedCrop::new(8, 8, (0.08, 1.0), (f64::NAN, 1.33)).is_err());
    }

    proptest! {
        #[test]
        fn a_reduced_box_covers_the_same_part(w in 1u32..5000, h in 1u32..5000, r in prop::sample::select(vec![1u32, 2, 4, 8]), seed in any::<u64>()) {
            let rrc = RandomResizedCrop::square(NonZeroU32::MIN.saturating_add(223));
            let b = rrc.sample_box(w, h, &mut rand::rngs::StdRng::seed_from_u64(seed));
            let size = (w.div_ceil(r), h.div_ceil(r));
            let q = b.reduced(r, size);
            prop_assert!(q.width >= 1 && q.height >= 1 && q.left + q.width <= size.0 && q.top + q.height <= size.1, "{q:?} in {size:?}");
            // Each edge within half a reduced pixel of the exact edge (or clamped into the image).
            let near = |edge: u32, exact: u32, limit: u32| (f64::from(edge) - (f64::from(exact) / f64::from(r)).min(f64::from(limit))).abs() <= 1.0;
            prop_assert!(near(q.left, b.left, size.0) && near(q.left + q.width, b.left + b.width, size.0), "{b:?} -> {q:?}");
            prop_assert!(near(q.top, b.top, size.1) && near(q.top + q.height, b.top + b.height, size.1), "{b:?} -> {q:?}");
            let allowed = b.largest_reduction(224, 224);
            prop_assert!(b.width >= allowed * 224 || allowed == 1);
            prop_assert!(allowed == 8 || b.width < 2 * allowed * 224 || b.height < 2 * allowed * 224, "{b:?} allows more than {allowed}");
            if r == 1 {
                prop_assert_eq!(q, b);
            }
        }

        #[test]
        fn box_is_inside_image(w in 1u32..300, h in 1u32..300, seed in any::<u64>()) {
            let rrc = RandomResizedCrop::square(NonZeroU32::MIN.saturating_add(31));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let b = rrc.sample_box(w, h, &mut rng);
            prop_assert!(b.width >= 1 && b.height >= 1);
            prop_assert!(b.left + b.width <= w && b.top + b.height <= h);
        }
    }
}
