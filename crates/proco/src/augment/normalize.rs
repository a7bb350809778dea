//! `ToTensor` + `Normalize`: 8-bit RGB to normalised `f32` in CHW layout, written into a
//! caller-provided slice so a loader can fill its batch buffer in place.

use image::RgbImage;

use crate::error::{ProcoError, Result};

/// Per-channel mean of CIFAR-10 training images (the ProCo / LDAM CIFAR recipe).
pub const CIFAR_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// Per-channel standard deviation used with [`CIFAR_MEAN`].
pub const CIFAR_STD: [f32; 3] = [0.2023, 0.1994, 0.2010];
/// Per-channel mean of ImageNet (the ProCo ImageNet-LT recipe).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel standard deviation used with [`IMAGENET_MEAN`].
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Writes `((v / 255) - mean[c]) / std[c]` for every sample into `out` in CHW order (channel
/// planes of `height * width` values, rows in order), all in `f32` as torchvision does, so the
/// values equal `Normalize(mean, std)(ToTensor()(img))` bit for bit.
///
/// Fails when `out.len() != 3 * width * height`, or a `std` entry is zero or non-finite, or a
/// `mean` entry is non-finite; `out` is then left untouched.
pub fn normalize_into(
    img: &RgbImage,
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut [f32],
) -> Result<()> {
    let plane = img.width() as usize * img.height() as usize;
    if out.len() != 3 * plane {
        return Err(ProcoError::InvalidConfig {
            reason: format!(
                "normalize_into: output slice holds {} values but a {}x{} RGB image needs {}",
                out.len(),
                img.width(),
                img.height(),
                3 * plane
            ),
        });
    }
    if !(mean.iter().all(|m| m.is_finite()) && std.iter().all(|s| s.is_finite() && *s != 0.0)) {
        return Err(ProcoError::InvalidConfig {
            reason: format!(
                "normalize_into: mean {mean:?} must be finite and std {std:?} finite and non-zero"
            ),
        });
    }
    // The value depends on the channel and the byte alone: three 256-entry tables of the
    // same f32 arithmetic.
    let mut table = [[0f32; 256]; 3];
    for (c, t) in table.iter_mut().enumerate() {
        for (v, x) in t.iter_mut().enumerate() {
            *x = (v as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for (((px, r), g), b) in img.chunks_exact(3).zip(r.iter_mut()).zip(g.iter_mut()).zip(b.iter_mut()) {
        *r = table[0][px[0] as usize];
        *g = table[1][px[1] as usize];
        *b = table[2][px[2] as usize];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_chw() {
        let img = RgbImage::from_fn(2, 1, |x, _| {
            image::Rgb([if x == 0 { 255 } else { 0 }, 0, 51])
        });
        let mut out = [0f32; 6];
        normalize_into(&img, [0.0; 3], [1.0; 3], &mut out).unwrap();
        assert_eq!(out, [1.0, 0.0, 0.0, 0.0, 0.2, 0.2]);
    }

    #[test]
    fn tables_give_the_direct_arithmetic() {
        let img = RgbImage::from_fn(256, 3, |x, y| image::Rgb([x as u8, (x as u8).wrapping_add(y as u8 * 85), 255 - x as u8]));
        let mut out = vec![0f32; 3 * 256 * 3];
        normalize_into(&img, IMAGENET_MEAN, IMAGENET_STD, &mut out).unwrap();
        for (i, px) in img.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let direct = (f32::from(px[c]) / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                assert_eq!(out[c * 768 + i].to_bits(), direct.to_bits());
            }
        }
    }

    #[test]
    fn rejects_wrong_length_and_zero_std() {
        let img = RgbImage::new(2, 2);
        let mut out = [0f32; 11];
        assert!(normalize_into(&img, CIFAR_MEAN, CIFAR_STD, &mut out).is_err());
        let mut out = [0f32; 12];
        assert!(normalize_into(&img, CIFAR_MEAN, [0.2, 0.0, 0.2], &mut out).is_err());
    }
}
