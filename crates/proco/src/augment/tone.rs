//! Per-channel look-up-table operations with PIL `ImageOps` semantics: posterize, solarize,
//! solarize-add, invert, autocontrast and equalize.
//!
//! Each function builds the same 3 x 256 table as PIL and maps every sample through it, so the
//! output equals PIL's bit for bit.

use image::RgbImage;

/// One 256-entry table per channel (R, G, B).
type Lut = [[u8; 256]; 3];

/// Maps every sample of `img` through the per-channel table `lut`.
fn apply_lut(img: &RgbImage, lut: &Lut) -> RgbImage {
    let mut out = img.clone();
    for px in out.chunks_exact_mut(3) {
        for (c, v) in px.iter_mut().enumerate() {
            *v = lut[c][usize::from(*v)];
        }
    }
    out
}

/// The same table for all three channels, built from `f(i)` for i = 0..=255.
fn uniform_lut(f: impl Fn(u8) -> u8) -> Lut {
    let mut one = [0u8; 256];
    for (i, v) in (0u8..=255).zip(one.iter_mut()) {
        *v = f(i);
    }
    [one; 3]
}

/// Per-channel 256-bin histograms of `img` (PIL `Image.histogram` for RGB).
pub fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for px in img.chunks_exact(3) {
        for (c, v) in px.iter().enumerate() {
            h[c][usize::from(*v)] += 1;
        }
    }
    h
}

/// `ImageOps.posterize(img, bits)`: keeps the `bits` most significant bits of every sample.
///
/// `bits >= 8` returns the image unchanged. `bits == 0` yields black, as older PIL did (Pillow
/// 13 rejects 0; RandAugment can reach it only at magnitudes below 2.5).
pub fn posterize(img: &RgbImage, bits: u8) -> RgbImage {
    if bits >= 8 {
        return img.clone();
    }
    let mask = !((1u16 << (8 - bits)) - 1) as u8;
    apply_lut(img, &uniform_lut(|i| i & mask))
}

/// `ImageOps.solarize(img, threshold)`: inverts every sample `>= threshold`.
///
/// `threshold` is compared as a float, as PIL does (AutoAugment passes values such as 199.1);
/// 256 or more leaves the image unchanged, 0 or less inverts it fully.
pub fn solarize(img: &RgbImage, threshold: f64) -> RgbImage {
    apply_lut(
        img,
        &uniform_lut(|i| if f64::from(i) < threshold { i } else { 255 - i }),
    )
}

/// RandAugment's `solarize_add`: adds `add` (saturating at 255) to every sample `< threshold`.
pub fn solarize_add(img: &RgbImage, add: u8, threshold: f64) -> RgbImage {
    apply_lut(
        img,
        &uniform_lut(|i| {
            if f64::from(i) < threshold {
                i.saturating_add(add)
            } else {
                i
            }
        }),
    )
}

/// `ImageOps.invert(img)`: 255 minus every sample.
pub fn invert(img: &RgbImage) -> RgbImage {
    apply_lut(img, &uniform_lut(|i| 255 - i))
}

/// `ImageOps.autocontrast(img)` with cutoff 0: stretches each channel's [min, max] to [0, 255].
///
/// Per channel, with lo/hi its smallest/largest sample: a channel with `hi <= lo` is left
/// unchanged; otherwise `v -> clamp(trunc(v * 255/(hi-lo) - lo * 255/(hi-lo)), 0, 255)` in
/// double precision, PIL's table.
pub fn autocontrast(img: &RgbImage) -> RgbImage {
    let hist = histograms(img);
    let mut lut: Lut = [[0; 256]; 3];
    for (c, h) in hist.iter().enumerate() {
        let lo = h.iter().position(|&n| n != 0).unwrap_or(0);
        let hi = h.iter().rposition(|&n| n != 0).unwrap_or(0);
        for (ix, v) in lut[c].iter_mut().enumerate() {
            *v = if hi <= lo {
                ix as u8
            } else {
                let scale = 255.0 / (hi - lo) as f64;
                let offset = -(lo as f64) * scale;
                // Python int(): truncation toward zero, then the clamp.
                ((ix as f64 * scale + offset) as i64).clamp(0, 255) as u8
            };
        }
    }
    apply_lut(img, &lut)
}

/// `ImageOps.equalize(img)`: per-channel histogram equalisation with PIL's table.
///
/// Per channel: `step = (n - count of the last non-empty bin) / 255` (integer division); a
/// channel with at most one distinct value or `step == 0` is unchanged; otherwise
/// `lut[i] = (step/2 + sum_{j<i} h[j]) / step`, clamped to 255.
pub fn equalize(img: &RgbImage) -> RgbImage {
    let hist = histograms(img);
    let mut lut: Lut = [[0; 256]; 3];
    for (c, h) in hist.iter().enumerate() {
        let nonzero: Vec<u64> = h.iter().copied().filter(|&n| n != 0).collect();
        let step = match nonzero.last() {
            Some(last) if nonzero.len() > 1 => (nonzero.iter().sum::<u64>() - last) / 255,
            _ => 0,
        };
        if step == 0 {
            lut[c] = uniform_lut(|i| i)[0];
            continue;
        }
        let mut n = step / 2;
        for (i, v) in lut[c].iter_mut().enumerate() {
            *v = (n / step).min(255) as u8;
            n += h[i];
        }
    }
    apply_lut(img, &lut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp() -> RgbImage {
        RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16 + y) as u8, (255 - x * 16) as u8, 7])
        })
    }

    #[test]
    fn invert_twice_is_identity() {
        let img = ramp();
        assert_eq!(invert(&invert(&img)), img);
    }

    #[test]
    fn posterize_masks_low_bits() {
        let out = posterize(&ramp(), 3);
        assert!(out.iter().all(|v| v & 0b0001_1111 == 0));
        assert_eq!(posterize(&ramp(), 8), ramp());
        assert!(posterize(&ramp(), 0).iter().all(|&v| v == 0));
    }

    #[test]
    fn autocontrast_leaves_constant_channel() {
        let out = autocontrast(&ramp());
        assert!(out.pixels().all(|p| p[2] == 7));
        assert_eq!(out.iter().step_by(3).max(), Some(&255));
    }
}
