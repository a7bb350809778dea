//! `PIL.ImageEnhance`: brightness, contrast, colour (saturation) and sharpness.
//!
//! Each enhancer blends the image with a "degenerate" image: `Image.blend(degenerate, img, f)`,
//! which Pillow evaluates per sample in single precision as `d + f * (i - d)`, clamps to
//! [0, 255] and truncates. Factor 1 returns the image, 0 the degenerate image, values above 1
//! extrapolate. Torchvision's `adjust_brightness/contrast/saturation` on PIL images call these.

use image::RgbImage;

use super::color::luma;

/// One sample of Pillow's `ImagingBlend`: `d + alpha * (i - d)` in `f32`, clamped, truncated.
#[inline(always)]
fn blend_sample(d: u8, i: u8, alpha: f32) -> u8 {
    // max then min clamps and maps NaN (from a NaN factor) to 0, as Pillow's clamp-and-truncate
    // does (f32::max returns the other operand), so the value is always in [0, 255]; written so
    // that a loop of it vectorises.
    let v = (f32::from(d) + alpha * (f32::from(i) - f32::from(d))).max(0.0).min(255.0);
    // SAFETY: v is finite and in [0, 255], representable as an i32.
    unsafe { v.to_int_unchecked::<i32>() as u8 }
}

/// `Image.blend(degenerate, img, factor)` for two images of the same size.
///
/// If the sizes differ, the extra samples of the larger image are ignored (callers in this
/// module always pass equal sizes).
fn blend(degenerate: &RgbImage, img: &RgbImage, factor: f64) -> RgbImage {
    let table = BlendTable::new(factor);
    let mut out = img.clone();
    for (o, d) in out.iter_mut().zip(degenerate.iter()) {
        *o = table.blend(*d, *o);
    }
    out
}

/// [`blend_sample`] at one factor for every pair of bytes (64 KiB): the blends of an image
/// then cost a look-up per sample instead of float arithmetic on interleaved samples the
/// compiler cannot vectorise, and the table itself fills with contiguous, vectorised
/// arithmetic (about a fifth of one 224 x 224 image's blend).
struct BlendTable(Box<[u8]>);

impl BlendTable {
    fn new(factor: f64) -> Self {
        let alpha = factor as f32;
        let mut table = vec![0u8; 65536].into_boxed_slice();
        for (d, row) in table.chunks_exact_mut(256).enumerate() {
            for (i, t) in row.iter_mut().enumerate() {
                *t = blend_sample(d as u8, i as u8, alpha);
            }
        }
        Self(table)
    }

    /// [`blend_sample`]`(d, i, factor)`.
    #[inline(always)]
    fn blend(&self, d: u8, i: u8) -> u8 {
        self.row(d)[usize::from(i)]
    }

    /// The blends of degenerate value `d` with every sample value.
    #[inline(always)]
    fn row(&self, d: u8) -> &[u8] {
        &self.0[usize::from(d) * 256..][..256]
    }
}

/// Blend with a constant grey level `d` (the degenerate image of brightness and contrast):
/// the result depends on the sample alone, so it is a 256-entry table of [`blend_sample`].
fn blend_constant_in_place(d: u8, img: &mut RgbImage, factor: f64) {
    let alpha = factor as f32;
    let mut table = [0u8; 256];
    for (i, t) in table.iter_mut().enumerate() {
        *t = blend_sample(d, i as u8, alpha);
    }
    for o in img.iter_mut() {
        *o = table[*o as usize];
    }
}

/// `ImageEnhance.Brightness(img).enhance(factor)`: blend with black. 0 gives black, 1 the
/// image; factors above 1 brighten with saturation at 255. Negative factors clamp to black.
pub fn brightness(img: &RgbImage, factor: f64) -> RgbImage {
    let mut out = img.clone();
    brightness_in_place(&mut out, factor);
    out
}

/// [`brightness`] in place.
pub fn brightness_in_place(img: &mut RgbImage, factor: f64) {
    blend_constant_in_place(0, img, factor)
}

/// `ImageEnhance.Contrast(img).enhance(factor)`: blend with the uniform grey whose level is the
/// rounded mean luma, `int(mean(L) + 0.5)`. 0 gives that grey, 1 the image.
pub fn contrast(img: &RgbImage, factor: f64) -> RgbImage {
    let mut out = img.clone();
    contrast_in_place(&mut out, factor);
    out
}

/// [`contrast`] in place.
pub fn contrast_in_place(img: &mut RgbImage, factor: f64) {
    let n = u64::from(img.width()) * u64::from(img.height());
    if n == 0 {
        return;
    }
    let sum: u64 = img
        .chunks_exact(3)
        .map(|p| u64::from(luma(p[0], p[1], p[2])))
        .sum();
    let mean = (sum as f64 / n as f64 + 0.5) as u8;
    blend_constant_in_place(mean, img, factor)
}

/// `ImageEnhance.Color(img).enhance(factor)` (torchvision's `adjust_saturation`): blend with the
/// grayscale image. 0 gives grayscale, 1 the image, above 1 over-saturates.
pub fn color(img: &RgbImage, factor: f64) -> RgbImage {
    let mut out = img.clone();
    color_in_place(&mut out, factor);
    out
}

/// [`color`] in place.
pub fn color_in_place(img: &mut RgbImage, factor: f64) {
    // `blend(&grayscale(img), img, factor)` in one pass, without the grey image.
    let table = BlendTable::new(factor);
    for px in img.chunks_exact_mut(3) {
        let row = table.row(luma(px[0], px[1], px[2]));
        for v in px.iter_mut() {
            *v = row[usize::from(*v)];
        }
    }
}

/// `img.filter(ImageFilter.SMOOTH)`: 3x3 kernel (1 1 1 / 1 5 1 / 1 1 1) / 13 with Pillow's
/// single-precision accumulation order and +0.5 rounding; the one-pixel border is copied.
pub fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = img.clone();
    if w < 3 || h < 3 {
        return out;
    }
    let k1 = 1.0f32 / 13.0;
    let k5 = 5.0f32 / 13.0;
    let src: &[u8] = img;
    let stride = w * 3;
    // Row by row over the interior samples (x = 1 .. w - 1, all three channels), each a run
    // of elementwise f32 arithmetic over three source rows, so the compiler vectorises it; the
    // sums keep Pillow's order exactly.
    let n = (w - 2) * 3;
    for (y, dst_row) in out.chunks_exact_mut(stride).enumerate().take(h - 1).skip(1) {
        let (above, row, below) = (&src[(y - 1) * stride..y * stride], &src[y * stride..(y + 1) * stride], &src[(y + 1) * stride..(y + 2) * stride]);
        let f = |r: &[u8], i: usize| f32::from(r[i]);
        for (j, d) in dst_row[3..3 + n].iter_mut().enumerate() {
            let (l, c, r) = (j, j + 3, j + 6);
            // Pillow sums the row below first, then the row itself, then the row above;
            // within a row left, centre, right.
            let mut ss = 0.5f32;
            ss += f(below, l) * k1 + f(below, c) * k1 + f(below, r) * k1;
            ss += f(row, l) * k1 + f(row, c) * k5 + f(row, r) * k1;
            ss += f(above, l) * k1 + f(above, c) * k1 + f(above, r) * k1;
            *d = ss.clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// `ImageEnhance.Sharpness(img).enhance(factor)`: blend with [`smooth`]`(img)`. 0 gives the
/// smoothed image, 1 the image, 2 a sharpened one. Border pixels never change (the smoothed
/// image keeps them).
pub fn sharpness(img: &RgbImage, factor: f64) -> RgbImage {
    blend(&smooth(img), img, factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_one_is_identity() {
        let img = RgbImage::from_fn(9, 7, |x, y| {
            image::Rgb([(x * 20) as u8, (y * 30) as u8, 99])
        });
        assert_eq!(brightness(&img, 1.0), img);
        assert_eq!(contrast(&img, 1.0), img);
        assert_eq!(color(&img, 1.0), img);
        assert_eq!(sharpness(&img, 1.0), img);
    }

    #[test]
    fn blend_clamps_extrapolation() {
        assert_eq!(blend_sample(0, 200, 1.9), 255);
        assert_eq!(blend_sample(200, 10, 1.9), 0);
        assert_eq!(blend_sample(0, 100, 0.55), 55);
    }

    #[test]
    fn blend_table_equals_pillows_blend_on_every_pair() {
        // Pillow's ImagingBlend as written there: clamp to [0, 255], truncate (NaN gives 0).
        let pillow = |d: u8, i: u8, alpha: f32| (f32::from(d) + alpha * (f32::from(i) - f32::from(d))).clamp(0.0, 255.0) as u8;
        for factor in [0.0, 0.6, 0.9999, 1.0, 1.37, 1.4, 2.0, -0.3, 40.0, f64::NAN, f64::INFINITY] {
            let table = BlendTable::new(factor);
            for d in 0..=255u8 {
                for i in 0..=255u8 {
                    assert_eq!(table.blend(d, i), pillow(d, i, factor as f32), "d {d} i {i} factor {factor}");
                }
            }
        }
    }
}
