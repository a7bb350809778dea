//! Colour-space conversions with Pillow's exact integer/float arithmetic: RGB to luma ("L"),
//! grayscale replicated to RGB, RGB <-> HSV, and torchvision's PIL-path hue shift.

use std::hint::select_unpredictable;

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
///
/// Per pixel this is [`rgb_to_hsv`] and [`hsv_to_rgb`] through look-up tables filled by that
/// same arithmetic (see [`HsvTables`]), without branches on the pixel, so it runs at a steady
/// rate whatever the colours; the results are the same bits (tested on every input).
pub fn adjust_hue(img: &RgbImage, factor: f64) -> RgbImage {
    let mut out = img.clone();
    adjust_hue_in_place(&mut out, factor);
    out
}

/// [`adjust_hue`] in place.
pub fn adjust_hue_in_place(out: &mut RgbImage, factor: f64) {
    let shift = hue_shift(factor);
    let tables = hsv_tables();
    let data: &mut [u8] = out;
    let done = adjust_hue_groups(data, shift, tables);
    for px in data[3 * done..].chunks_exact_mut(3) {
        let (maxc, h, s, p) = tables.hsv_p(px[0], px[1], px[2]);
        let hh = h.wrapping_add(shift);
        // In range by its type (bytes): no bounds checks in the loop.
        let x = round_byte(f64::from(maxc) * tables.multiplier[usize::from(s) << 8 | usize::from(hh)]);
        let packed = u32::from(maxc) | u32::from(p) << 8 | u32::from(x) << 16;
        let shift_of = tables.placement[usize::from(hh)];
        px[0] = (packed >> shift_of[0]) as u8;
        px[1] = (packed >> shift_of[1]) as u8;
        px[2] = (packed >> shift_of[2]) as u8;
    }
}

/// [`adjust_hue_in_place`] on the whole groups of 8 pixels of `data` (interleaved RGB), with
/// AVX2 gathers doing the table look-ups of 8 pixels at once: the same entries of the same
/// tables, the same case selection and the same f64 product and rounding as the per-pixel
/// loop, so the same bits (tested on every colour). Returns the pixels done.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
fn adjust_hue_groups(data: &mut [u8], shift: u8, tables: &HsvTables) -> usize {
    use std::arch::x86_64::*;
    // hsv_to_rgb's placement of v, p and x by hue byte, the three bit offsets packed in one
    // word (one gather instead of three).
    let placement: [i32; 256] = std::array::from_fn(|h| {
        let p = tables.placement[h];
        (p[0] | p[1] << 8 | p[2] << 16) as i32
    });
    let groups = data.len() / 24;
    // SAFETY: AVX2 is enabled for the whole build (the cfg above), so the intrinsics exist on
    // the machine. Every gather reads inside its table: hue indices are case * 65536 + a * 256
    // + b with case <= 2 and bytes a, b, and each reads 4 bytes of the 4 * 65536-byte table
    // (at most index 196607 + 3); saturation_p indices are max * 256 + range <= 65535, each
    // reading the 4 bytes at 2 * index of a table of 2 * 65537 bytes; multiplier indices are
    // s * 256 + hue <= 65535 into 65536 doubles; placement indices are hue bytes into 256
    // words. Loads and stores go through the bounds-checked slice `px`.
    unsafe {
        let byte = _mm256_set1_epi32(0xFF);
        let shift = _mm256_set1_epi32(i32::from(shift));
        let (half, one) = (_mm256_set1_pd(0.5), _mm256_set1_pd(1.0));
        let hue_table = tables.hue.as_ptr() as *const i32;
        let sp_table = tables.saturation_p.as_ptr() as *const i32;
        let multiplier = tables.multiplier.as_ptr();
        for px in data.chunks_exact_mut(24).take(groups) {
            let (mut r, mut g, mut b) = ([0i32; 8], [0i32; 8], [0i32; 8]);
            for k in 0..8 {
                (r[k], g[k], b[k]) = (i32::from(px[3 * k]), i32::from(px[3 * k + 1]), i32::from(px[3 * k + 2]));
            }
            let load = |v: &[i32; 8]| _mm256_loadu_si256(v.as_ptr() as *const __m256i);
            let (r, g, b) = (load(&r), load(&g), load(&b));
            let maxc = _mm256_max_epi32(_mm256_max_epi32(r, g), b);
            let minc = _mm256_min_epi32(_mm256_min_epi32(r, g), b);
            let (dr, dg, db) = (_mm256_sub_epi32(maxc, r), _mm256_sub_epi32(maxc, g), _mm256_sub_epi32(maxc, b));
            let (red, green) = (_mm256_cmpeq_epi32(r, maxc), _mm256_cmpeq_epi32(g, maxc));
            // As in hsv_p: red largest first, then green, then blue.
            let first = _mm256_blendv_epi8(dr, db, red);
            let second = _mm256_blendv_epi8(_mm256_blendv_epi8(dg, db, green), dg, red);
            let case = _mm256_blendv_epi8(_mm256_blendv_epi8(_mm256_set1_epi32(2), _mm256_set1_epi32(1), green), _mm256_setzero_si256(), red);
            let hue_index = _mm256_or_si256(_mm256_slli_epi32::<16>(case), _mm256_or_si256(_mm256_slli_epi32::<8>(first), second));
            let h = _mm256_and_si256(_mm256_i32gather_epi32::<1>(hue_table, hue_index), byte);
            let sp_index = _mm256_or_si256(_mm256_slli_epi32::<8>(maxc), _mm256_sub_epi32(maxc, minc));
            let sp = _mm256_i32gather_epi32::<2>(sp_table, sp_index);
            let (s, p) = (_mm256_and_si256(sp, byte), _mm256_and_si256(_mm256_srli_epi32::<8>(sp), byte));
            let hh = _mm256_and_si256(_mm256_add_epi32(h, shift), byte);
            let m_index = _mm256_or_si256(_mm256_slli_epi32::<8>(s), hh);
            // round_byte(v * m), four lanes at a time in f64.
            let x_half = |index: __m128i, v: __m128i| {
                let product = _mm256_mul_pd(_mm256_cvtepi32_pd(v), _mm256_i32gather_pd::<8>(multiplier, index));
                let t = _mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(product);
                let up = _mm256_and_pd(_mm256_cmp_pd::<_CMP_GE_OQ>(_mm256_sub_pd(product, t), half), one);
                _mm256_cvttpd_epi32(_mm256_add_pd(t, up))
            };
            let x_lo = x_half(_mm256_castsi256_si128(m_index), _mm256_castsi256_si128(maxc));
            let x_hi = x_half(_mm256_extracti128_si256::<1>(m_index), _mm256_extracti128_si256::<1>(maxc));
            let x = _mm256_set_m128i(x_hi, x_lo);
            let packed = _mm256_or_si256(maxc, _mm256_or_si256(_mm256_slli_epi32::<8>(p), _mm256_slli_epi32::<16>(x)));
            let place = _mm256_i32gather_epi32::<4>(placement.as_ptr(), hh);
            let channel = |at: __m256i| {
                let mut v = [0i32; 8];
                _mm256_storeu_si256(v.as_mut_ptr() as *mut __m256i, _mm256_and_si256(_mm256_srlv_epi32(packed, _mm256_and_si256(at, byte)), byte));
                v
            };
            let (r, g, b) = (channel(place), channel(_mm256_srli_epi32::<8>(place)), channel(_mm256_srli_epi32::<16>(place)));
            for k in 0..8 {
                px[3 * k..3 * k + 3].copy_from_slice(&[r[k] as u8, g[k] as u8, b[k] as u8]);
            }
        }
    }
    8 * groups
}

/// Without AVX2 every pixel goes through the per-pixel loop.
#[cfg(not(all(target_arch = "x86_64", target_feature = "avx2")))]
fn adjust_hue_groups(_data: &mut [u8], _shift: u8, _tables: &HsvTables) -> usize {
    0
}

/// hsv_to_rgb's rounding (half away from zero) of a product `v * m` with `v <= 255` and `m`
/// in [0, 1] (every entry of [`HsvTables::multiplier`], checked when the table is built, and
/// `1 - s` in `p`), so in 0..=255: the same bits as `x.round() as i32` clamped, without the
/// saturating conversion's range and NaN checks, which are most of its cost.
#[inline(always)]
fn round_byte(x: f64) -> u8 {
    debug_assert!((0.0..=255.0).contains(&x));
    // SAFETY: x is finite and in [0, 255] (above), so it is representable as an i32.
    let t = unsafe { x.to_int_unchecked::<i32>() };
    (t + i32::from(x - f64::from(t) >= 0.5)) as u8
}

/// [`rgb_to_hsv`] and [`hsv_to_rgb`] as look-ups, filled once by the arithmetic itself (each
/// entry is its exact result, tested on every colour).
///
/// - The hue byte depends only on which channel is the largest and on the other two
///   channels' distances below it (rgb_to_hsv's quotients are of those distances by their
///   maximum): three 64 Ki tables.
/// - The saturation byte, and hsv_to_rgb's `p = round(v (1 - s))`, depend only on the largest
///   value and the range.
/// - hsv_to_rgb's third value is `round(v * m)` with `m = 1 - s f` (q, odd sectors) or
///   `1 - s (1 - f)` (t, even sectors), where `f` and the sector come from the shifted hue
///   byte: `m` by (saturation, hue) bytes, 64 Ki doubles.
struct HsvTables {
    /// Hue byte by case (red, green, blue largest, in PIL's order of precedence) and the two
    /// other channels' distances below the largest, `case * 65536 + a * 256 + b`.
    hue: Box<[[u8; 65536]; 4]>,
    /// Saturation byte and p by `max * 256 + (max - min)`, and one unused entry after them,
    /// so that a 4-byte gather at the last entry stays inside the table.
    saturation_p: Box<[[u8; 2]; 65537]>,
    /// The multiplier `m` of hsv_to_rgb's q or t by `saturation * 256 + hue`.
    multiplier: Box<[f64; 65536]>,
    /// Where hsv_to_rgb puts v, p and x, by hue byte: the bit offsets (in `v | p << 8 |
    /// x << 16`) of the output's red, green and blue.
    placement: [[u32; 3]; 256],
}

impl HsvTables {
    fn new() -> Self {
        let mut hue = vec![[0u8; 65536]; 4].into_boxed_slice();
        let mut saturation_p = vec![[0u8; 2]; 65537].into_boxed_slice();
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                let k = usize::from(a) * 256 + usize::from(b);
                // Red largest: a = its distance to blue, b to green.
                hue[0][k] = rgb_to_hsv([255, 255 - b, 255 - a])[0];
                // Green largest (red below it): a to red, b to blue.
                hue[1][k] = rgb_to_hsv([255 - a.max(1), 255, 255 - b])[0];
                // Blue largest (red and green below it): a to red, b to green.
                hue[2][k] = rgb_to_hsv([255 - a.max(1), 255 - b.max(1), 255])[0];
                // Largest value a, range b (b <= a).
                if b <= a {
                    let s = rgb_to_hsv([a, a - b, a - b])[1];
                    saturation_p[k] = [s, p_of(s, a)];
                }
            }
        }
        let mut multiplier = vec![0f64; 65536].into_boxed_slice();
        // hsv_to_rgb's output by sector: [v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v],
        // [v, p, q]; as bit offsets into v | p << 8 | x << 16 (x = t in even sectors, q in odd).
        const SHIFT: [[u32; 3]; 6] = [[0, 16, 8], [16, 0, 8], [8, 0, 16], [8, 16, 0], [16, 8, 0], [0, 8, 16]];
        let mut placement = [[0u32; 3]; 256];
        for h in 0..256usize {
            let (i, f) = sector_fraction(h as u8);
            placement[h] = SHIFT[usize::from(i)];
            for s in 0..256usize {
                let fs = (s as f64 / 255.0) as f32;
                multiplier[s * 256 + h] = if i % 2 == 1 { 1.0 - f64::from(fs * f) } else { 1.0 - f64::from(fs) * (1.0 - f64::from(f)) };
            }
        }
        // round_byte relies on this: every product v * m lies in [0, 255].
        assert!(multiplier.iter().all(|m| (0.0..=1.0).contains(m)), "hsv_to_rgb multipliers outside [0, 1]");
        let (Ok(hue), Ok(saturation_p), Ok(multiplier)) = (hue.try_into(), saturation_p.try_into(), multiplier.try_into()) else {
            unreachable!("the tables are allocated at their sizes above")
        };
        Self { hue, saturation_p, multiplier, placement }
    }

    /// [`rgb_to_hsv`] of one pixel, `[h, s, v]` as `(v, h, s)`, and hsv_to_rgb's `p` of it.
    #[inline(always)]
    fn hsv_p(&self, r: u8, g: u8, b: u8) -> (u8, u8, u8, u8) {
        let maxc = r.max(g).max(b);
        let minc = r.min(g).min(b);
        let (dr, dg, db) = (usize::from(maxc - r), usize::from(maxc - g), usize::from(maxc - b));
        // rgb_to_hsv's case by PIL's precedence (red, then green, then blue largest); a grey
        // pixel falls in the red case at distances (0, 0), whose hue byte is 0. Selects, not
        // branches: the case is as unpredictable as the colours.
        let (red, green) = (r == maxc, g == maxc);
        let first = select_unpredictable(red, db, dr);
        let second = select_unpredictable(red, dg, select_unpredictable(green, db, dg));
        let case = select_unpredictable(red, 0, select_unpredictable(green, 1, 2));
        // Every index is in range by its type (bytes, and the case masked to 0..4): no
        // bounds checks.
        let h = self.hue[case & 3][first << 8 | second];
        let [s, p] = self.saturation_p[usize::from(maxc) << 8 | usize::from(maxc - minc)];
        (maxc, h, s, p)
    }
}

/// hsv_to_rgb's sector `i` (0..6) and fraction `f` of hue byte `h`.
fn sector_fraction(h: u8) -> (u8, f32) {
    let h6 = f64::from(h) * 6.0 / 255.0;
    let i = h6.floor() as i32;
    (i.rem_euclid(6) as u8, (h6 - f64::from(i)) as f32)
}

/// hsv_to_rgb's `p = round(v (1 - s / 255))`.
fn p_of(s: u8, v: u8) -> u8 {
    let fs = (f64::from(s) / 255.0) as f32;
    round_byte(f64::from(v) * (1.0 - f64::from(fs)))
}

/// The tables of [`HsvTables`], built on first use.
fn hsv_tables() -> &'static HsvTables {
    static TABLES: std::sync::OnceLock<HsvTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(HsvTables::new)
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
    fn hsv_tables_equal_the_arithmetic_on_every_colour() {
        let t = hsv_tables();
        for r in 0..=255u8 {
            for g in 0..=255u8 {
                for b in 0..=255u8 {
                    let [h, s, v] = rgb_to_hsv([r, g, b]);
                    let (tv, th, ts, _) = t.hsv_p(r, g, b);
                    assert_eq!((th, ts, tv), (h, s, v), "{r} {g} {b}");
                }
            }
        }
    }

    #[test]
    fn adjust_hue_equals_the_per_pixel_round_trip_on_every_colour() {
        let all = RgbImage::from_fn(4096, 4096, |x, y| {
            let k = y * 4096 + x;
            image::Rgb([(k >> 16) as u8, (k >> 8) as u8, k as u8])
        });
        for factor in [0.0, 0.1, -0.03, 0.5, -0.5, 0.37] {
            let shift = hue_shift(factor);
            let ours = adjust_hue(&all, factor);
            for (o, i) in ours.chunks_exact(3).zip(all.chunks_exact(3)) {
                let [h, s, v] = rgb_to_hsv([i[0], i[1], i[2]]);
                assert_eq!(o, hsv_to_rgb([h.wrapping_add(shift), s, v]), "{i:?} at factor {factor}");
            }
        }
    }

    #[test]
    fn adjust_hue_equals_the_round_trip_on_images_of_any_length() {
        // Lengths that leave 0..7 pixels after the groups of 8.
        for (w, h) in [(1, 1), (7, 1), (8, 1), (13, 7), (9, 3), (224, 224), (31, 5)] {
            let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 37 + y * 11) as u8, (x * 5 ^ y * 91) as u8, (x * y * 13 + 7) as u8]));
            for factor in [0.0, 0.2, -0.41] {
                let shift = hue_shift(factor);
                let ours = adjust_hue(&img, factor);
                for (o, i) in ours.chunks_exact(3).zip(img.chunks_exact(3)) {
                    let [hh, s, v] = rgb_to_hsv([i[0], i[1], i[2]]);
                    assert_eq!(o, hsv_to_rgb([hh.wrapping_add(shift), s, v]), "{w}x{h} {i:?} at {factor}");
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
