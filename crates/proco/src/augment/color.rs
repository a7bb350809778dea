//! Colour-space conversions with Pillow's exact integer/float arithmetic: RGB to luma ("L"),
//! grayscale replicated to RGB, RGB <-> HSV, and torchvision's PIL-path hue shift.

use image::RgbImage;

/// Pillow's `RGB -> L` luma: ITU-R 601-2 weights in 16.16 fixed point with rounding,
/// `(19595 R + 38470 G + 7471 B + 0x8000) >> 16`.
pub fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((u32::from(r) * 19595 + u32::from(g) * 38470 + u32::from(b) * 7471 + 0x8000) >> 16) as u8
}

/// `img.convert("L").convert("RGB")`: the luma replicated to three channels. This is
/// torchvision's `rgb_to_grayscale(img, num_output_channels=3)` on PIL images and the degenerate
/// image of `ImageEnhance.Color`.
pub fn grayscale(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for px in out.chunks_exact_mut(3) {
        let l = luma(px[0], px[1], px[2]);
        px.fill(l);
    }
    out
}

/// Pillow's `RGB -> HSV` for one pixel (each component scaled to 0..=255, truncated).
///
/// The arithmetic mirrors Pillow's C code (single-precision intermediates, double-precision
/// `fmod`), so round trips agree with PIL exactly.
pub fn rgb_to_hsv(px: [u8; 3]) -> [u8; 3] {
    let [r, g, b] = px;
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    if minc == maxc {
        return [0, 0, maxc];
    }
    let cr = f32::from(maxc - minc);
    let s = cr / f32::from(maxc);
    let rc = f32::from(maxc - r) / cr;
    let gc = f32::from(maxc - g) / cr;
    let bc = f32::from(maxc - b) / cr;
    let h: f32 = if r == maxc {
        bc - gc
    } else if g == maxc {
        (2.0 + f64::from(rc) - f64::from(bc)) as f32
    } else {
        (4.0 + f64::from(gc) - f64::from(rc)) as f32
    };
    let h = ((f64::from(h) / 6.0 + 1.0) % 1.0) as f32;
    let uh = ((f64::from(h) * 255.0) as i32).clamp(0, 255) as u8;
    let us = ((f64::from(s) * 255.0) as i32).clamp(0, 255) as u8;
    [uh, us, maxc]
}

/// Pillow's `HSV -> RGB` for one pixel, the inverse of [`rgb_to_hsv`] up to quantisation.
pub fn hsv_to_rgb(px: [u8; 3]) -> [u8; 3] {
    let [h, s, v] = px;
    if s == 0 {
        return [v, v, v];
    }
    let h6 = f64::from(h) * 6.0 / 255.0;
    let i = h6.floor() as i32;
    let f = (h6 - f64::from(i)) as f32;
    let fs = (f64::from(s) / 255.0) as f32;
    let vf = f64::from(v);
    let clip = |x: f64| (x.round() as i32).clamp(0, 255) as u8;
    let p = clip(vf * (1.0 - f64::from(fs)));
    let q = clip(vf * (1.0 - f64::from(fs * f)));
    let t = clip(vf * (1.0 - f64::from(fs) * (1.0 - f64::from(f))));
    match i % 6 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// The hue offset torchvision adds to PIL's 8-bit hue channel: `int32(factor * 255)` taken
/// modulo 256 (negative factors wrap around the hue circle).
pub fn hue_shift(factor: f64) -> u8 {
    ((factor * 255.0) as i32) as u8
}

/// torchvision `F.adjust_hue` on a PIL image: RGB -> HSV, add [`hue_shift`]`(factor)` to the hue
/// byte with wrap-around, HSV -> RGB.
///
/// torchvision accepts `factor` in [-0.5, 0.5] and raises otherwise; here larger values simply
/// wrap around the hue circle and NaN shifts by zero. Even `factor == 0` is not the identity:
/// the HSV round trip quantises, exactly as in torchvision.
pub fn adjust_hue(img: &RgbImage, factor: f64) -> RgbImage {
    let shift = hue_shift(factor);
    let mut out = img.clone();
    for px in out.chunks_exact_mut(3) {
        let [h, s, v] = rgb_to_hsv([px[0], px[1], px[2]]);
        px.copy_from_slice(&hsv_to_rgb([h.wrapping_add(shift), s, v]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luma_of_primaries() {
        assert_eq!(luma(255, 255, 255), 255);
        assert_eq!(luma(0, 0, 0), 0);
        assert_eq!(luma(255, 0, 0), 76);
        assert_eq!(luma(0, 255, 0), 150);
        assert_eq!(luma(0, 0, 255), 29);
    }

    #[test]
    fn hsv_round_trip_is_close() {
        for r in (0..=255).step_by(17) {
            for g in (0..=255).step_by(51) {
                for b in (0..=255).step_by(85) {
                    let back = hsv_to_rgb(rgb_to_hsv([r, g, b]));
                    for (x, y) in back.iter().zip([r, g, b]) {
                        assert!(x.abs_diff(y) <= 8, "{r} {g} {b} -> {back:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn hue_shift_wraps() {
        assert_eq!(hue_shift(0.1), 25);
        assert_eq!(hue_shift(-0.03), 249);
        assert_eq!(hue_shift(0.0), 0);
    }
}
