//! Geometric operations with PIL semantics: `Image.transform(AFFINE)` with nearest, bilinear or
//! bicubic sampling and a fill colour, shear, translation, `Image.rotate`, horizontal flip, the
//! zero-padded crop of `RandomCrop(padding=...)` and Cutout.
//!
//! Affine coefficients `(a, b, c, d, e, f)` map an output pixel centre `(x + 0.5, y + 0.5)` to
//! the input point `(a x + b y + c, d x + e y + f)` (PIL's inverse mapping). Output pixels whose
//! source falls outside the input keep the fill colour. Nearest sampling follows Pillow's three
//! code paths (pure scaling, 16.16 fixed point, floating point) so pixel selection agrees
//! exactly, including at rounding boundaries.

use image::{imageops, Rgb, RgbImage};

/// Resampling filter of an affine transform (PIL's `Image.Resampling` subset that
/// `Image.transform` supports for augmentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    /// Nearest neighbour (PIL's default for `transform` and `rotate`).
    Nearest,
    /// Bilinear interpolation of the 2x2 neighbourhood, edge samples clamped.
    Bilinear,
    /// PIL's transform bicubic (cubic convolution with a = -1 over 4x4, edges clamped).
    Bicubic,
}

/// Pillow's `COORD`: -1 for negative coordinates, else truncation.
fn coord(v: f64) -> i64 {
    if v < 0.0 {
        -1
    } else {
        v as i64
    }
}

/// Copies pixel `(sx, sy)` of `src` to pixel `(dx, dy)` of `dst`.
fn copy_px(dst: &mut RgbImage, dx: usize, dy: usize, src: &RgbImage, sx: usize, sy: usize) {
    let (dw, sw) = (dst.width() as usize, src.width() as usize);
    let s = (sy * sw + sx) * 3;
    let d = (dy * dw + dx) * 3;
    let px = [src.as_raw()[s], src.as_raw()[s + 1], src.as_raw()[s + 2]];
    let buf: &mut [u8] = dst;
    buf[d..d + 3].copy_from_slice(&px);
}

/// `img.transform(img.size, Image.AFFINE, coeffs, resample, fillcolor=fill)`.
pub fn affine(img: &RgbImage, coeffs: [f64; 6], resample: Resample, fill: [u8; 3]) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = RgbImage::from_pixel(w, h, Rgb(fill));
    if w == 0 || h == 0 {
        return out;
    }
    match resample {
        Resample::Nearest => {
            let a = coeffs;
            if a[1] == 0.0 && a[3] == 0.0 {
                scale_affine(&mut out, img, &a);
            } else if [(0, 0), (w, h), (0, h), (w, 0)]
                .iter()
                .all(|&(x, y)| fits_fixed(&a, x, y))
            {
                fixed_affine(&mut out, img, &a);
            } else {
                float_affine(&mut out, img, &a);
            }
        }
        Resample::Bilinear | Resample::Bicubic => generic_affine(&mut out, img, &coeffs, resample),
    }
    out
}

/// Pillow's `check_fixed`: the mapped corner stays within 16.16 fixed-point range.
fn fits_fixed(a: &[f64; 6], x: u32, y: u32) -> bool {
    let (x, y) = (f64::from(x), f64::from(y));
    (x * a[0] + y * a[1] + a[2]).abs() < 32768.0 && (x * a[3] + y * a[4] + a[5]).abs() < 32768.0
}

/// Pillow's `ImagingScaleAffine` (nearest, no rotation/shear terms).
fn scale_affine(out: &mut RgbImage, img: &RgbImage, a: &[f64; 6]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let ow = out.width() as usize;
    let mut xintab = vec![0usize; ow];
    let (mut xmin, mut xmax) = (ow, 0usize);
    let mut xo = a[2] + a[0] * 0.5;
    for (x, slot) in xintab.iter_mut().enumerate() {
        let xin = coord(xo);
        if (0..w).contains(&xin) {
            xmax = x + 1;
            xmin = xmin.min(x);
            *slot = xin as usize;
        }
        xo += a[0];
    }
    let mut yo = a[5] + a[4] * 0.5;
    for y in 0..out.height() as usize {
        let yi = coord(yo);
        if (0..h).contains(&yi) {
            for (x, &sx) in xintab.iter().enumerate().take(xmax).skip(xmin) {
                copy_px(out, x, y, img, sx, yi as usize);
            }
        }
        yo += a[4];
    }
}

/// Pillow's `affine_fixed` (nearest, 16.16 fixed-point stepping).
fn fixed_affine(out: &mut RgbImage, img: &RgbImage, a: &[f64; 6]) {
    let fix = |v: f64| (v * 65536.0 + 0.5).floor() as i32;
    let (w, h) = (img.width() as i32, img.height() as i32);
    let (a0, a1, a3, a4) = (fix(a[0]), fix(a[1]), fix(a[3]), fix(a[4]));
    let mut a2 = fix(a[2] + a[0] * 0.5 + a[1] * 0.5);
    let mut a5 = fix(a[5] + a[3] * 0.5 + a[4] * 0.5);
    for y in 0..out.height() as usize {
        let (mut xx, mut yy) = (a2, a5);
        for x in 0..out.width() as usize {
            let xin = xx >> 16;
            let yin = yy >> 16;
            if (0..w).contains(&xin) && (0..h).contains(&yin) {
                copy_px(out, x, y, img, xin as usize, yin as usize);
            }
            xx = xx.wrapping_add(a0);
            yy = yy.wrapping_add(a3);
        }
        a2 = a2.wrapping_add(a1);
        a5 = a5.wrapping_add(a4);
    }
}

/// Pillow's floating-point nearest affine loop (used when fixed point would overflow).
fn float_affine(out: &mut RgbImage, img: &RgbImage, a: &[f64; 6]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let mut xo = a[2] + a[1] * 0.5 + a[0] * 0.5;
    let mut yo = a[5] + a[4] * 0.5 + a[3] * 0.5;
    for y in 0..out.height() as usize {
        let (mut xx, mut yy) = (xo, yo);
        for x in 0..out.width() as usize {
            let (xin, yin) = (coord(xx), coord(yy));
            if (0..w).contains(&xin) && (0..h).contains(&yin) {
                copy_px(out, x, y, img, xin as usize, yin as usize);
            }
            xx += a[0];
            yy += a[3];
        }
        xo += a[1];
        yo += a[4];
    }
}

/// Pillow's `ImagingGenericTransform` with the bilinear or bicubic transform filter.
fn generic_affine(out: &mut RgbImage, img: &RgbImage, a: &[f64; 6], resample: Resample) {
    for y in 0..out.height() as usize {
        for x in 0..out.width() as usize {
            let (xin, yin) = (x as f64 + 0.5, y as f64 + 0.5);
            let xx = a[0] * xin + a[1] * yin + a[2];
            let yy = a[3] * xin + a[4] * yin + a[5];
            let px = match resample {
                Resample::Bicubic => bicubic_at(img, xx, yy),
                _ => bilinear_at(img, xx, yy),
            };
            if let Some(px) = px {
                let d = (y * out.width() as usize + x) * 3;
                let buf: &mut [u8] = out;
                buf[d..d + 3].copy_from_slice(&px);
            }
        }
    }
}

/// Sample `(c)` of pixel `(x, y)` with both coordinates clamped into the image.
fn clamped(img: &RgbImage, x: i64, y: i64, c: usize) -> f64 {
    let x = x.clamp(0, i64::from(img.width()) - 1) as usize;
    let y = y.clamp(0, i64::from(img.height()) - 1) as usize;
    f64::from(img.as_raw()[(y * img.width() as usize + x) * 3 + c])
}

/// The pixel-centre grid cell of an input point and the offsets inside it, as Pillow's
/// filters compute them; `None` when the point lies outside the image.
fn grid_cell(img: &RgbImage, xin: f64, yin: f64) -> Option<(i64, i64, f64, f64)> {
    let (w, h) = (f64::from(img.width()), f64::from(img.height()));
    if xin < 0.0 || xin >= w || yin < 0.0 || yin >= h {
        return None;
    }
    let (xin, yin) = (xin - 0.5, yin - 0.5);
    let (x, y) = (xin.floor() as i64, yin.floor() as i64);
    let (dx, dy) = (xin - x as f64, yin - y as f64);
    Some((x, y, dx, dy))
}

/// Pillow's `bilinear_filter32RGB`; `None` when the point lies outside the image.
///
/// The four neighbours' offsets are clamped once per point (not per channel and sample), then
/// each channel interpolates in Pillow's order: along x in the row, along x in the next row
/// (the first row's value again when that row lies outside the image), then along y.
fn bilinear_at(img: &RgbImage, xin: f64, yin: f64) -> Option<[u8; 3]> {
    let (x, y, dx, dy) = grid_cell(img, xin, yin)?;
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let column = |x: i64| x.clamp(0, w - 1) as usize * 3;
    let row = |y: i64| y.clamp(0, h - 1) as usize * w as usize * 3;
    let (x0, x1) = (column(x), column(x + 1));
    let first = row(y);
    // Pillow reads the next row only inside the image.
    let second = (y + 1 < h).then(|| row(y + 1));
    let data = img.as_raw();
    let lerp = |a: f64, b: f64, d: f64| a + (b - a) * d;
    let sample = |at: usize| f64::from(data[at]);
    let mut px = [0u8; 3];
    for (c, o) in px.iter_mut().enumerate() {
        let v1 = lerp(sample(first + x0 + c), sample(first + x1 + c), dx);
        let v2 = match second {
            Some(r) => lerp(sample(r + x0 + c), sample(r + x1 + c), dx),
            None => v1,
        };
        *o = lerp(v1, v2, dy) as u8;
    }
    Some(px)
}

/// Pillow's transform cubic: `p1 + d (p2 + d (p3 + d p4))` from four samples.
fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}

/// Pillow's `bicubic_filter32RGB`; `None` when the point lies outside the image.
fn bicubic_at(img: &RgbImage, xin: f64, yin: f64) -> Option<[u8; 3]> {
    let (x, y, dx, dy) = grid_cell(img, xin, yin)?;
    let (x, y) = (x - 1, y - 1);
    let row_valid = |r: i64| r >= 0 && r < i64::from(img.height());
    let mut px = [0u8; 3];
    for (c, o) in px.iter_mut().enumerate() {
        let row = |r: i64| {
            cubic(
                clamped(img, x, r, c),
                clamped(img, x + 1, r, c),
                clamped(img, x + 2, r, c),
                clamped(img, x + 3, r, c),
                dx,
            )
        };
        // The first row is clamped into the image; each further row outside it repeats the
        // previous row's value, as in Pillow.
        let v1 = row(y);
        let v2 = if row_valid(y + 1) { row(y + 1) } else { v1 };
        let v3 = if row_valid(y + 2) { row(y + 2) } else { v2 };
        let v4 = if row_valid(y + 3) { row(y + 3) } else { v3 };
        let v = cubic(v1, v2, v3, v4, dy);
        *o = if v <= 0.0 {
            0
        } else if v >= 255.0 {
            255
        } else {
            v as u8
        };
    }
    Some(px)
}

/// Horizontal shear `img.transform(size, AFFINE, (1, factor, 0, 0, 1, 0))`.
pub fn shear_x(img: &RgbImage, factor: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    affine(img, [1.0, factor, 0.0, 0.0, 1.0, 0.0], resample, fill)
}

/// Vertical shear `img.transform(size, AFFINE, (1, 0, 0, factor, 1, 0))`.
pub fn shear_y(img: &RgbImage, factor: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    affine(img, [1.0, 0.0, 0.0, factor, 1.0, 0.0], resample, fill)
}

/// Horizontal translation by `pixels` (positive moves content left, PIL's inverse mapping).
pub fn translate_x(img: &RgbImage, pixels: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    affine(img, [1.0, 0.0, pixels, 0.0, 1.0, 0.0], resample, fill)
}

/// Vertical translation by `pixels` (positive moves content up).
pub fn translate_y(img: &RgbImage, pixels: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    affine(img, [1.0, 0.0, 0.0, 0.0, 1.0, pixels], resample, fill)
}

/// Python's `round(x, 15)`: correctly rounded to 15 decimals via the shortest-exact decimal
/// formatter, as CPython does.
fn round15(x: f64) -> f64 {
    format!("{x:.15}").parse().unwrap_or(x)
}

/// `img.rotate(degrees, resample, fillcolor=fill)` (counter-clockwise about the centre, same
/// size, no expansion).
///
/// Angles that are multiples of 180 degrees, and of 90 on square images, become exact
/// transpositions as in PIL; other angles use the rounded rotation matrix PIL builds.
pub fn rotate(img: &RgbImage, degrees: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    let mut angle = degrees % 360.0;
    if angle != 0.0 && angle < 0.0 {
        angle += 360.0;
    }
    let (w, h) = img.dimensions();
    if angle == 0.0 {
        return img.clone();
    }
    if angle == 180.0 {
        return imageops::rotate180(img);
    }
    if w == h && angle == 90.0 {
        return imageops::rotate270(img);
    }
    if w == h && angle == 270.0 {
        return imageops::rotate90(img);
    }
    let (cx, cy) = (f64::from(w) / 2.0, f64::from(h) / 2.0);
    let rad = -angle.to_radians();
    let (cos, sin) = (round15(rad.cos()), round15(rad.sin()));
    let neg_sin = round15(-rad.sin());
    let mut m = [cos, sin, 0.0, neg_sin, cos, 0.0];
    m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
    m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
    affine(img, m, resample, fill)
}

/// Left-right mirror (`F.hflip`).
pub fn hflip(img: &RgbImage) -> RgbImage {
    imageops::flip_horizontal(img)
}

/// `F.crop(F.pad(img, padding, fill=0), top, left, size, size)`: a `size` x `size` window whose
/// top-left corner is `(left, top)` in the zero-padded image; samples outside the original
/// image are 0. `RandomCrop(size, padding)` draws `top, left` in `0..=2*padding + dim - size`.
pub fn padded_crop(img: &RgbImage, padding: u32, size: u32, top: u32, left: u32) -> RgbImage {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let mut out = RgbImage::new(size, size);
    for y in 0..size {
        let sy = i64::from(y) + i64::from(top) - i64::from(padding);
        if !(0..h).contains(&sy) {
            continue;
        }
        for x in 0..size {
            let sx = i64::from(x) + i64::from(left) - i64::from(padding);
            if (0..w).contains(&sx) {
                copy_px(
                    &mut out,
                    x as usize,
                    y as usize,
                    img,
                    sx as usize,
                    sy as usize,
                );
            }
        }
    }
    out
}

/// The reference `Cutout(n_holes=1, length)`: zeroes rows `clip(cy - length/2, 0, h) ..
/// clip(cy + length/2, 0, h)` and the same columns around `cx` (half-open, integer division).
///
/// The reference zeroes the `ToTensor` output before `Normalize`; zeroing the 8-bit image is
/// identical because `ToTensor` maps 0 to 0.0.
pub fn cutout(img: &mut RgbImage, center_y: u32, center_x: u32, length: u32) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let half = i64::from(length / 2);
    let (cy, cx) = (i64::from(center_y), i64::from(center_x));
    let (y1, y2) = ((cy - half).clamp(0, h), (cy + half).clamp(0, h));
    let (x1, x2) = ((cx - half).clamp(0, w), (cx + half).clamp(0, w));
    let buf: &mut [u8] = img;
    for y in y1..y2 {
        let row = (y * w) as usize * 3;
        buf[row + x1 as usize * 3..row + x2 as usize * 3].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RgbImage {
        RgbImage::from_fn(12, 9, |x, y| {
            Rgb([(x * 20) as u8, (y * 25) as u8, (x * y) as u8])
        })
    }

    #[test]
    fn identity_affine_is_identity() {
        let img = sample();
        for r in [Resample::Nearest, Resample::Bilinear, Resample::Bicubic] {
            assert_eq!(
                affine(&img, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], r, [1, 2, 3]),
                img,
                "{r:?}"
            );
        }
    }

    #[test]
    fn integer_translation_shifts_and_fills() {
        let img = sample();
        let out = translate_x(&img, 2.0, Resample::Nearest, [9, 9, 9]);
        assert_eq!(out.get_pixel(0, 3), img.get_pixel(2, 3));
        assert_eq!(out.get_pixel(11, 3), &Rgb([9, 9, 9]));
    }

    #[test]
    fn cutout_clips_at_borders() {
        let mut img = RgbImage::from_pixel(32, 32, Rgb([200, 200, 200]));
        cutout(&mut img, 0, 31, 16);
        // Rows 0..8 (clipped at the top), columns 23..32 (clipped at the right).
        let zeros = img.iter().filter(|&&v| v == 0).count();
        assert_eq!(zeros, 8 * 9 * 3);
        assert_eq!(img.get_pixel(23, 7), &Rgb([0, 0, 0]));
        assert_eq!(img.get_pixel(22, 7), &Rgb([200, 200, 200]));
    }
}
