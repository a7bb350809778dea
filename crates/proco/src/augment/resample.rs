//! `Image.resize(size, BILINEAR)`: Pillow's two-pass separable convolution (`ImagingResample`),
//! which is what torchvision's `Resize` / `RandomResizedCrop` run on PIL images.
//!
//! For each output column (and row) the triangle filter is centred at the input coordinate
//! `(i + 0.5) * scale` and, when downscaling, widened by the scale factor (antialiasing). The
//! normalised weights are quantised to 22-bit fixed point; the first pass writes rounded 8-bit
//! samples that the second pass reads, in the pass order Pillow 13 chooses, so outputs match
//! bit for bit.

use image::RgbImage;

/// Fixed-point fraction bits of Pillow's 8-bit resampling weights.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bilinear (triangle) filter, support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Weights of one axis: for output index `i`, input samples `start[i] .. start[i] + len[i]`
/// with fixed-point weights `weights[i * ksize ..]`.
struct AxisCoeffs {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the full input range.
#[cfg(test)]
fn precompute(in_size: usize, out_size: usize) -> AxisCoeffs {
    precompute_range(in_size, out_size, 0, out_size)
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the full input range, of the
/// outputs `lo..hi` only (index 0 is output `lo`): each output's coefficients depend on its
/// own index alone.
fn precompute_range(in_size: usize, out_size: usize, lo: usize, hi: usize) -> AxisCoeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // triangle support (1) times filterscale
    let ksize = support.ceil() as usize * 2 + 1;
    let count = hi - lo;
    let mut coeffs = AxisCoeffs {
        ksize,
        start: Vec::with_capacity(count),
        len: Vec::with_capacity(count),
        weights: vec![0; count * ksize],
    };
    let ss = 1.0 / filterscale;
    let mut k = vec![0.0f64; ksize];
    for xx in lo..hi {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = triangle(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        let row = &mut coeffs.weights[(xx - lo) * ksize..(xx - lo + 1) * ksize];
        for (dst, &kx) in row.iter_mut().zip(k.iter()).take(n) {
            let kx = if ww != 0.0 { kx / ww } else { kx };
            let scaled = kx * f64::from(1u32 << PRECISION_BITS);
            *dst = if kx < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        coeffs.start.push(xmin);
        coeffs.len.push(n);
    }
    coeffs
}

/// Pillow's `clip8`: drop the fraction bits and clamp to 0..=255.
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// A window of an interleaved RGB buffer: rows of `width` pixels starting at column `left`
/// and row `top` of a buffer `stride` pixels wide.
#[derive(Clone, Copy)]
struct Region<'a> {
    data: &'a [u8],
    stride: usize,
    left: usize,
    top: usize,
    width: usize,
}

impl<'a> Region<'a> {
    /// A whole buffer `width` pixels wide.
    fn whole(data: &'a [u8], width: usize) -> Self {
        Region { data, stride: width, left: 0, top: 0, width }
    }

    /// Row `y` of the window (3 * width samples).
    #[inline(always)]
    fn row(&self, y: usize) -> &'a [u8] {
        let start = ((self.top + y) * self.stride + self.left) * 3;
        &self.data[start..start + self.width * 3]
    }
}

/// Horizontal pass over `rows` rows of a `width`-wide RGB buffer starting at row `first`:
/// the three channels of an output pixel accumulate together (Pillow's `ImagingResampleHorizontal_8bpc`).
fn horizontal(
    src: Region<'_>,
    first: usize,
    rows: usize,
    c: &AxisCoeffs,
    out_w: usize,
) -> Vec<u8> {
    match c.ksize {
        3 => horizontal_strips::<3>(src, first, rows, c, out_w),
        5 => horizontal_strips::<5>(src, first, rows, c, out_w),
        7 => horizontal_strips::<7>(src, first, rows, c, out_w),
        9 => horizontal_strips::<9>(src, first, rows, c, out_w),
        11 => horizontal_strips::<11>(src, first, rows, c, out_w),
        13 => horizontal_strips::<13>(src, first, rows, c, out_w),
        _ => horizontal_taps::<0>(src, first, rows, c, out_w),
    }
}

/// Rows filtered together by [`horizontal_strips`]: one i32 lane each.
const STRIP: usize = 8;

/// [`horizontal`] on strips of [`STRIP`] rows: the strip is transposed so that each input
/// sample holds its rows side by side (`[i32; STRIP]`), and every output sample of the strip
/// is then `K` multiply-adds of whole lanes (one vector instruction each), the same integer
/// sums as the per-row loop (the weights are shared by all rows). Rows past the last whole
/// strip go through [`horizontal_taps`]. The transposed strip is padded with `K` zero pixels,
/// so windows at the row's end sum `K` taps too (their weights past the window are zero).
fn horizontal_strips<const K: usize>(src: Region<'_>, first: usize, rows: usize, c: &AxisCoeffs, out_w: usize) -> Vec<u8> {
    let bias: i32 = 1 << (PRECISION_BITS - 1);
    let width = src.width;
    let strips = rows / STRIP;
    let mut out = vec![0u8; out_w * rows * 3];
    if strips * STRIP < rows {
        let tail = horizontal_taps::<K>(src, first + strips * STRIP, rows - strips * STRIP, c, out_w);
        out[strips * STRIP * out_w * 3..].copy_from_slice(&tail);
    }
    let mut lanes = vec![[0i32; STRIP]; (width + K) * 3];
    for strip in 0..strips {
        let y0 = strip * STRIP;
        for r in 0..STRIP {
            let row = src.row(first + y0 + r);
            for (lane, &v) in lanes.iter_mut().zip(row) {
                lane[r] = i32::from(v);
            }
        }
        let out_rows = &mut out[y0 * out_w * 3..(y0 + STRIP) * out_w * 3];
        for xx in 0..out_w {
            // K is the coefficients' ksize (the caller dispatches on it).
            let k = &c.weights[xx * c.ksize..][..K];
            let base = c.start[xx] * 3;
            let window = &lanes[base..base + 3 * K];
            let mut acc = [[bias; STRIP]; 3];
            for (i, &w) in k.iter().enumerate() {
                for (ch, acc) in acc.iter_mut().enumerate() {
                    let lane = &window[3 * i + ch];
                    for r in 0..STRIP {
                        acc[r] = acc[r].wrapping_add(lane[r].wrapping_mul(w));
                    }
                }
            }
            let clipped = acc.map(|lanes| lanes.map(clip8));
            for r in 0..STRIP {
                let at = r * out_w * 3 + xx * 3;
                out_rows[at..at + 3].copy_from_slice(&[clipped[0][r], clipped[1][r], clipped[2][r]]);
            }
        }
    }
    out
}

/// [`horizontal`] summing exactly `K` taps wherever the window fits in the row (the weights
/// are zero past each window's own length, so the sums are unchanged), a loop the compiler
/// unrolls; `K = 0` or a window at the row's end: the window's own length.
fn horizontal_taps<const K: usize>(src: Region<'_>, first: usize, rows: usize, c: &AxisCoeffs, out_w: usize) -> Vec<u8> {
    let bias: i32 = 1 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; out_w * rows * 3];
    // Windows that fit K taps: all but possibly the last few.
    let fits = (0..out_w).take_while(|&xx| K > 0 && c.start[xx] + K <= src.width).count();
    let fits = if K > 0 && (0..out_w).all(|xx| xx < fits || c.start[xx] + K > src.width) { fits } else { 0 };
    for (y, out_row) in out.chunks_exact_mut(out_w * 3).enumerate() {
        let row = src.row(y + first);
        for (xx, px_out) in out_row.chunks_exact_mut(3).enumerate() {
            let x0 = c.start[xx];
            let (mut r, mut g, mut b) = (bias, bias, bias);
            if xx < fits {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + K];
                let pixels = &row[x0 * 3..x0 * 3 + 3 * K];
                for i in 0..K {
                    let w = k[i];
                    r = r.wrapping_add(i32::from(pixels[3 * i]).wrapping_mul(w));
                    g = g.wrapping_add(i32::from(pixels[3 * i + 1]).wrapping_mul(w));
                    b = b.wrapping_add(i32::from(pixels[3 * i + 2]).wrapping_mul(w));
                }
            } else {
                let k = &c.weights[xx * c.ksize..xx * c.ksize + c.len[xx]];
                for (p, &w) in row[x0 * 3..(x0 + k.len()) * 3].chunks_exact(3).zip(k) {
                    r = r.wrapping_add(i32::from(p[0]).wrapping_mul(w));
                    g = g.wrapping_add(i32::from(p[1]).wrapping_mul(w));
                    b = b.wrapping_add(i32::from(p[2]).wrapping_mul(w));
                }
            }
            px_out.copy_from_slice(&[clip8(r), clip8(g), clip8(b)]);
        }
    }
    out
}

/// Vertical pass over a `width`-wide RGB buffer; `c.start` indexes rows of `src`. Each output
/// row accumulates whole input rows (the same integer sums as Pillow's per-sample loop, in
/// an order the compiler vectorises: wrapping i32 addition is associative).
fn vertical(src: Region<'_>, c: &AxisCoeffs, out_h: usize) -> Vec<u8> {
    let bias: i32 = 1 << (PRECISION_BITS - 1);
    let stride = src.width * 3;
    let mut out = vec![0u8; stride * out_h];
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + c.len[yy]];
        let y0 = c.start[yy];
        acc.fill(bias);
        for (i, &w) in k.iter().enumerate() {
            let in_row = src.row(y0 + i);
            for (a, &v) in acc.iter_mut().zip(in_row) {
                *a = a.wrapping_add(i32::from(v).wrapping_mul(w));
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// `img.resize((out_width, out_height), Image.BILINEAR)` with Pillow's antialiasing.
///
/// Pass order follows Pillow 13 (PR 9549): the vertical pass runs first when the height
/// shrinks by more than twice as many pixels as the width does (`h - oh > 2 (w - ow)` with
/// `oh < h`), otherwise the horizontal pass runs first, reading only the rows the vertical pass
/// needs. Earlier Pillow always ran horizontally first; the two orders differ by at most 1 in
/// a few samples, through the intermediate 8-bit rounding.
///
/// Returns a copy when the size is unchanged and a black image when either output dimension,
/// or the input, is empty.
pub fn resize_bilinear(img: &RgbImage, out_width: u32, out_height: u32) -> RgbImage {
    resize_window(img, (0, 0, img.width(), img.height()), out_width, out_height)
}

/// [`resize_bilinear`] of the window `(left, top, width, height)` of `img` (already inside
/// it), without copying the window out first: `img.crop(box).resize(...)` in Pillow.
pub(crate) fn resize_window(img: &RgbImage, window: (u32, u32, u32, u32), out_width: u32, out_height: u32) -> RgbImage {
    resize_window_part(img, window, out_width, out_height, (0, 0, out_width, out_height))
}

/// The part `(x, y, width, height)` (inside the output) of [`resize_window`]'s output, computed
/// alone: each output sample depends only on its own coefficients and the input samples they
/// weight, and the passes run in the order the whole output's sizes choose, so the part equals
/// the same window of the whole output bit for bit, at the cost of the part. (A centre crop
/// of a resize of a very thin image then costs the crop, not a gigapixel intermediate.)
pub(crate) fn resize_window_part(img: &RgbImage, window: (u32, u32, u32, u32), out_width: u32, out_height: u32, part: (u32, u32, u32, u32)) -> RgbImage {
    let (left, top, w, h) = (window.0 as usize, window.1 as usize, window.2 as usize, window.3 as usize);
    let (ow, oh) = (out_width as usize, out_height as usize);
    let (px, py, pw, ph) = (part.0 as usize, part.1 as usize, part.2 as usize, part.3 as usize);
    if w == 0 || h == 0 || pw == 0 || ph == 0 || px + pw > ow || py + ph > oh {
        return RgbImage::new(part.2, part.3);
    }
    let src = Region { data: img.as_raw(), stride: img.width() as usize, left, top, width: w };
    if (w, h) == (ow, oh) {
        let part_src = Region { left: left + px, top: top + py, width: pw, ..src };
        let mut out = RgbImage::new(part.2, part.3);
        for (y, row) in out.chunks_exact_mut(pw * 3).enumerate() {
            row.copy_from_slice(part_src.row(y));
        }
        return out;
    }
    let vertical_first = oh < h && (h - oh) as i64 > 2 * (w as i64 - ow as i64);
    let data = if ow == w {
        let columns = Region { left: left + px, width: pw, ..src };
        vertical(columns, &precompute_range(h, oh, py, py + ph), ph)
    } else if oh == h {
        horizontal(src, py, ph, &precompute_range(w, ow, px, px + pw), pw)
    } else if vertical_first {
        let tmp = vertical(src, &precompute_range(h, oh, py, py + ph), ph);
        horizontal(Region::whole(&tmp, w), 0, ph, &precompute_range(w, ow, px, px + pw), pw)
    } else {
        // Only rows first..last of the input feed the vertical pass of these output rows.
        let mut vert = precompute_range(h, oh, py, py + ph);
        let first = vert.start[0];
        let last = vert.start[ph - 1] + vert.len[ph - 1];
        for s in vert.start.iter_mut() {
            *s -= first;
        }
        let tmp = horizontal(src, first, last - first, &precompute_range(w, ow, px, px + pw), pw);
        vertical(Region::whole(&tmp, pw), &vert, ph)
    };
    // The passes' buffer is the image (pw x ph x 3 samples by construction).
    RgbImage::from_raw(part.2, part.3, data).unwrap_or_else(|| RgbImage::new(part.2, part.3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one() {
        for (i, o) in [(32, 32), (17, 32), (40, 13), (224, 224), (500, 224)] {
            let c = precompute(i, o);
            for xx in 0..o {
                let s: i64 = c.weights[xx * c.ksize..xx * c.ksize + c.len[xx]]
                    .iter()
                    .map(|&k| i64::from(k))
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= c.ksize as i64,
                    "{i}->{o}: {s}"
                );
            }
        }
    }

    #[test]
    fn fixed_tap_loops_equal_the_per_window_loop() {
        // 21 rows: two whole strips of 8 and a remainder of 5 (and from row 3: 18 rows, a
        // remainder of 2); widths down by factors 1 to 6 (up to 13 taps) and up.
        let img = RgbImage::from_fn(333, 21, |x, y| image::Rgb([(x * 7 + y * 31) as u8, (x * 13 ^ y) as u8, (x * x + 3 * y) as u8]));
        for out_w in [333, 300, 224, 170, 120, 111, 64, 56, 37, 400, 1000] {
            let c = precompute(333, out_w);
            let src = Region::whole(img.as_raw(), 333);
            for (first, rows) in [(0, 21), (3, 18), (0, 8), (1, 3)] {
                assert_eq!(horizontal(src, first, rows, &c, out_w), horizontal_taps::<0>(src, first, rows, &c, out_w), "333 -> {out_w} (ksize {}), rows {first}..+{rows}", c.ksize);
            }
        }
    }

    #[test]
    fn a_part_equals_that_window_of_the_whole_output() {
        let img = RgbImage::from_fn(61, 47, |x, y| image::Rgb([(x * 7 + y) as u8, (x * 13 ^ y * 3) as u8, (x * x + 3 * y) as u8]));
        // Down and up in each axis, each pass order, and a window of the input.
        for (window, ow, oh) in [((0, 0, 61, 47), 40, 30), ((0, 0, 61, 47), 61, 20), ((0, 0, 61, 47), 20, 47), ((0, 0, 61, 47), 50, 10), ((0, 0, 61, 47), 90, 70), ((5, 3, 40, 30), 33, 64), ((0, 0, 61, 47), 61, 47)] {
            let whole = resize_window(&img, window, ow, oh);
            for part in [(0, 0, ow, oh), (3, 2, ow / 2, oh / 3), (ow - 5, oh - 4, 5, 4), (1, oh / 2, ow - 1, 1)] {
                let expected = image::imageops::crop_imm(&whole, part.0, part.1, part.2, part.3).to_image();
                assert_eq!(resize_window_part(&img, window, ow, oh, part), expected, "{window:?} -> {ow}x{oh}, part {part:?}");
            }
        }
    }

    #[test]
    fn empty_inputs_and_outputs_give_black_images() {
        assert_eq!(resize_bilinear(&RgbImage::new(0, 5), 0, 5).dimensions(), (0, 5));
        assert_eq!(resize_bilinear(&RgbImage::new(0, 5), 3, 2), RgbImage::new(3, 2));
        assert_eq!(resize_bilinear(&RgbImage::from_pixel(4, 4, image::Rgb([9, 9, 9])), 0, 2).dimensions(), (0, 2));
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        for (w, h) in [(32, 32), (5, 70), (224, 224)] {
            let out = resize_bilinear(&img, w, h);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
        }
    }
}
