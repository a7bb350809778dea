//! Image files to 8-bit RGB, as PIL's `Image.open(path).convert("RGB")` gives them.
//!
//! - JPEG (baseline and progressive; grayscale, YCbCr, RGB, CMYK and YCCK) is decoded by
//!   `zune-jpeg` straight into RGB. A file that ends before its image does is an error
//!   ([`ImageProblem::Truncated`]), as in PIL (whose `LOAD_TRUNCATED_IMAGES` is off by
//!   default); other damage the decoder can step over (stray bytes between markers) is
//!   tolerated as libjpeg tolerates it.
//! - PNG (any bit depth; grayscale, palette, with or without alpha) goes through `image`'s
//!   decoder; alpha is dropped without compositing and 16-bit samples keep their high byte,
//!   which is what `convert("RGB")` does.
//! - EXIF orientation is ignored, as PIL and torchvision ignore it unless asked
//!   (`ImageOps.exif_transpose`): a rotated photo is decoded as stored, so training sees the
//!   same pixels as the authors' pipeline.
//! - Images over [`MAX_PIXELS`] are refused, PIL's decompression-bomb limit.
//! - [`decode_file_reduced`] decodes a JPEG at 1/2, 1/4 or 1/8 of its size in the DCT domain
//!   (scaled inverse transforms, as PIL's `draft` mode asks libjpeg to), when the caller's
//!   views allow it: a large photo then costs a fraction of its full decode and of the
//!   resampling after it. zune-jpeg has no scaled decoding, so this path goes through
//!   `jpeg-decoder`'s; any file it cannot take (CMYK, 16-bit, damage) is decoded in full
//!   instead, with the same errors as [`decode_file`].

use std::path::Path;

use image::RgbImage;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use crate::error::ImageProblem;

/// Largest image decoded, in pixels: PIL's `DecompressionBombError` threshold
/// (2 x `Image.MAX_IMAGE_PIXELS` = 178,956,970).
pub const MAX_PIXELS: u64 = 2 * 89_478_485;

/// The container formats we decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// JPEG / JFIF / EXIF.
    Jpeg,
    /// PNG.
    Png,
}

/// The format of an image from its first bytes, or `None` for anything else.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else {
        None
    }
}

/// Smallest image decoded at reduced scale, in pixels. `jpeg-decoder`'s entropy decoding
/// (the same work at any scale) is slower than zune-jpeg's, so the scaled decode pays only
/// where the inverse DCTs, colour conversion and resampling it saves are large: measured on
/// the three-view pipeline (BENCHMARKS.md, "DCT-domain reduced decoding"), 0.95x at
/// 800 x 600, 1.15x at 1500 x 1125, 1.5x at 3000 x 2250.
pub const REDUCED_DECODE_MIN_PIXELS: u64 = 1_000_000;

/// An image as decoded: `pixels` is the stored `full_size` (width, height) reduced by
/// `reduction` (1, 2, 4 or 8), each side `ceil(side / reduction)` pixels, so that pixel
/// `(x, y)` covers `[x r, (x + 1) r) x [y r, (y + 1) r)` of the stored image.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImage {
    /// The decoded pixels.
    pub pixels: RgbImage,
    /// The stored image's size `(width, height)`.
    pub full_size: (u32, u32),
    /// How much smaller `pixels` is than the stored image along each side.
    pub reduction: u32,
}

impl DecodedImage {
    /// An image decoded at its stored size.
    pub fn full(pixels: RgbImage) -> Self {
        Self { full_size: pixels.dimensions(), pixels, reduction: 1 }
    }
}

/// Reads the image file at `path` and decodes it at the reduction `choose(width, height)`
/// of its stored size asks for (rounded down to 1, 2, 4 or 8), where the file is a JPEG of at
/// least [`REDUCED_DECODE_MIN_PIXELS`] that the scaled decoder takes; otherwise in full. `choose` sees the stored size, read from the
/// headers before any decoding.
///
/// # Errors
/// As [`decode_file`].
pub fn decode_file_reduced(path: &Path, choose: &dyn Fn(u32, u32) -> u32) -> Result<DecodedImage, ImageProblem> {
    decode_bytes_reduced(&read_file(path)?, choose)
}

/// [`decode_file_reduced`] of an encoded image in memory.
///
/// # Errors
/// As [`decode_bytes`].
pub fn decode_bytes_reduced(bytes: &[u8], choose: &dyn Fn(u32, u32) -> u32) -> Result<DecodedImage, ImageProblem> {
    if sniff(bytes) == Some(ImageFormat::Jpeg) && ends_after_last_scan(bytes) {
        if let Some((width, height)) = jpeg_size(bytes) {
            check_size(width, height)?;
            let large = u64::from(width) * u64::from(height) >= REDUCED_DECODE_MIN_PIXELS;
            let reduction = match if large { choose(width, height) } else { 1 } {
                r if r >= 8 => 8,
                r if r >= 4 => 4,
                r if r >= 2 => 2,
                _ => 1,
            };
            if reduction > 1 {
                if let Some(pixels) = decode_jpeg_scaled(bytes, (width, height), reduction) {
                    return Ok(DecodedImage { pixels, full_size: (width, height), reduction });
                }
            }
        }
    }
    decode_bytes(bytes).map(DecodedImage::full)
}

/// The stored size of a JPEG, from its headers (no entropy decoding).
fn jpeg_size(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options(false));
    decoder.decode_headers().ok()?;
    decoder.dimensions().map(|(w, h)| (w as u32, h as u32))
}

/// A JPEG decoded by scaled inverse DCTs at `1 / reduction` of `full` (width, height) to
/// RGB, or `None` where the scaled decoder does not give exactly that (a colour model other
/// than grey or YCbCr/RGB, more than 8 bits, damage, or a panic inside it): the caller then
/// decodes in full.
fn decode_jpeg_scaled(bytes: &[u8], full: (u32, u32), reduction: u32) -> Option<RgbImage> {
    let want = (full.0.div_ceil(reduction), full.1.div_ceil(reduction));
    let decoded = std::panic::catch_unwind(|| -> Option<(jpeg_decoder::PixelFormat, Vec<u8>)> {
        let mut decoder = jpeg_decoder::Decoder::new(bytes);
        decoder.read_info().ok()?;
        let info = decoder.info()?;
        if (u32::from(info.width), u32::from(info.height)) != full {
            return None;
        }
        let got = decoder.scale(u16::try_from(want.0).ok()?, u16::try_from(want.1).ok()?).ok()?;
        if (u32::from(got.0), u32::from(got.1)) != want {
            return None;
        }
        Some((info.pixel_format, decoder.decode().ok()?))
    })
    .ok()??;
    match decoded {
        (jpeg_decoder::PixelFormat::RGB24, rgb) => RgbImage::from_raw(want.0, want.1, rgb),
        (jpeg_decoder::PixelFormat::L8, grey) if grey.len() as u64 == u64::from(want.0) * u64::from(want.1) => {
            Some(RgbImage::from_raw(want.0, want.1, grey.iter().flat_map(|&v| [v, v, v]).collect())?)
        }
        _ => None,
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, ImageProblem> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageProblem::Missing,
        _ => ImageProblem::Unreadable(e.to_string()),
    })
}

/// Reads and decodes the image file at `path`.
///
/// # Errors
/// [`ImageProblem::Missing`] or [`ImageProblem::Unreadable`] when it cannot be read, else as
/// [`decode_bytes`].
pub fn decode_file(path: &Path) -> Result<RgbImage, ImageProblem> {
    decode_bytes(&read_file(path)?)
}

/// Decodes an encoded image (JPEG or PNG, recognised by content, not by name) to RGB.
///
/// # Errors
/// [`ImageProblem::NotAnImage`] for an empty file or another format,
/// [`ImageProblem::Truncated`] for a file cut short, [`ImageProblem::TooLarge`] above
/// [`MAX_PIXELS`], and [`ImageProblem::Corrupt`] for data the decoder rejects.
pub fn decode_bytes(bytes: &[u8]) -> Result<RgbImage, ImageProblem> {
    match sniff(bytes) {
        Some(ImageFormat::Jpeg) => decode_jpeg(bytes),
        Some(ImageFormat::Png) => decode_png(bytes),
        None => Err(ImageProblem::NotAnImage),
    }
}

fn check_size(width: u32, height: u32) -> Result<(), ImageProblem> {
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ImageProblem::TooLarge { width, height, limit: (MAX_PIXELS / 1_000_000) as u32 });
    }
    if width == 0 || height == 0 {
        return Err(ImageProblem::Corrupt(format!("the header declares an empty {width} x {height} image")));
    }
    Ok(())
}

fn jpeg_options(strict: bool) -> DecoderOptions {
    DecoderOptions::default().set_strict_mode(strict).set_max_width(usize::MAX).set_max_height(usize::MAX).jpeg_set_out_colorspace(ColorSpace::RGB)
}

/// JPEG: strict first, so that a file cut short is reported rather than grey-filled; a strict
/// failure for any other reason is retried leniently (libjpeg warns and goes on there).
fn decode_jpeg(bytes: &[u8]) -> Result<RgbImage, ImageProblem> {
    if !ends_after_last_scan(bytes) {
        return Err(ImageProblem::Truncated);
    }
    match decode_jpeg_with(bytes, true) {
        Ok(img) => Ok(img),
        Err(JpegFailure::Problem(p)) => Err(p),
        Err(JpegFailure::Decoder(message)) if is_truncation(&message) => Err(ImageProblem::Truncated),
        Err(JpegFailure::Decoder(_)) => match decode_jpeg_with(bytes, false) {
            Ok(img) => Ok(img),
            Err(JpegFailure::Problem(p)) => Err(p),
            Err(JpegFailure::Decoder(message)) if is_truncation(&message) => Err(ImageProblem::Truncated),
            Err(JpegFailure::Decoder(message)) => Err(ImageProblem::Corrupt(message)),
        },
    }
}

/// Whether an end-of-image marker (FF D9) follows the start of the last scan (FF DA): PIL
/// reports a file without it as truncated even when only the marker is missing. Entropy-coded
/// data never holds FF D9 or FF DA (an FF there is followed by 00 or a restart marker), and an
/// EXIF thumbnail's end marker comes before the main image's scans, so neither confuses this.
fn ends_after_last_scan(bytes: &[u8]) -> bool {
    // Nearly every file simply ends with its end marker: nothing to search.
    if bytes.ends_with(&[0xFF, 0xD9]) {
        return true;
    }
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(s) => bytes[s..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => true, // no scan at all: the decoder reports what is missing
    }
}

/// Whether a decoder message says the data ran out.
fn is_truncation(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("premature") || m.contains("exhausted") || m.contains("eof") || m.contains("end of buffer") || m.contains("no more bytes") || m.contains("not enough")
}

enum JpegFailure {
    Problem(ImageProblem),
    Decoder(String),
}

fn decode_jpeg_with(bytes: &[u8], strict: bool) -> Result<RgbImage, JpegFailure> {
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), jpeg_options(strict));
    decoder.decode_headers().map_err(|e| JpegFailure::Decoder(e.to_string()))?;
    let (width, height) = decoder.dimensions().ok_or_else(|| JpegFailure::Decoder("no frame header".into()))?;
    let (width, height) = (width as u32, height as u32);
    check_size(width, height).map_err(JpegFailure::Problem)?;
    let pixels = decoder.decode().map_err(|e| JpegFailure::Decoder(e.to_string()))?;
    if decoder.output_colorspace() != Some(ColorSpace::RGB) {
        return Err(JpegFailure::Problem(ImageProblem::Corrupt(format!("colour space {:?} cannot be converted to RGB", decoder.input_colorspace()))));
    }
    RgbImage::from_raw(width, height, pixels).ok_or_else(|| JpegFailure::Problem(ImageProblem::Corrupt("the decoder returned fewer pixels than the header declares".into())))
}

fn decode_png(bytes: &[u8]) -> Result<RgbImage, ImageProblem> {
    use image::ImageDecoder;
    let corrupt = |e: image::ImageError| {
        let message = e.to_string();
        if is_truncation(&message) {
            ImageProblem::Truncated
        } else {
            ImageProblem::Corrupt(message)
        }
    };
    let decoder = image::codecs::png::PngDecoder::new(std::io::Cursor::new(bytes)).map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    check_size(width, height)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    Ok(to_rgb_like_pil(img))
}

/// `convert("RGB")` of a decoded PNG: grey replicated, alpha dropped (no compositing),
/// 16-bit samples reduced to their high byte (PIL reads 16-bit RGB PNGs as 8-bit `RGB`, and
/// `I;16` grey `convert("RGB")` clips, see the module notes).
fn to_rgb_like_pil(img: image::DynamicImage) -> RgbImage {
    use image::DynamicImage as D;
    match img {
        D::ImageRgb8(rgb) => rgb,
        D::ImageRgb16(_) | D::ImageRgba16(_) => {
            let (w, h) = (img.width(), img.height());
            let wide = img.into_rgb16();
            RgbImage::from_fn(w, h, |x, y| {
                let p = wide.get_pixel(x, y).0;
                image::Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            })
        }
        D::ImageLuma16(grey) => {
            // PIL opens 16-bit grey PNGs as mode I (32-bit) and convert("RGB") clips to 255.
            let (w, h) = grey.dimensions();
            RgbImage::from_fn(w, h, |x, y| {
                let v = grey.get_pixel(x, y).0[0].min(255) as u8;
                image::Rgb([v, v, v])
            })
        }
        D::ImageLumaA16(grey) => {
            let (w, h) = grey.dimensions();
            RgbImage::from_fn(w, h, |x, y| {
                let v = (grey.get_pixel(x, y).0[0] >> 8) as u8;
                image::Rgb([v, v, v])
            })
        }
        other => other.into_rgb8(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_formats_by_content() {
        assert_eq!(sniff(b"\xFF\xD8\xFF\xE0rest"), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some(ImageFormat::Png));
        assert_eq!(sniff(b"GIF89a"), None);
        assert_eq!(decode_bytes(b""), Err(ImageProblem::NotAnImage));
        assert_eq!(decode_bytes(b"hello, world"), Err(ImageProblem::NotAnImage));
    }

    #[test]
    fn a_jpeg_cut_short_is_truncated_and_a_whole_one_decodes() {
        let img = RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90).encode_image(&img).unwrap();
        let whole = decode_bytes(&bytes).unwrap();
        assert_eq!(whole.dimensions(), (64, 48));
        let diff = whole.as_raw().iter().zip(img.as_raw()).map(|(a, b)| a.abs_diff(*b) as u32).max().unwrap();
        assert!(diff < 16, "quality 90 decodes close to the source ({diff})");
        for cut in [bytes.len() / 2, bytes.len() - 2] {
            let strict = decode_jpeg_with(&bytes[..cut], true).err().map(|e| match e { JpegFailure::Decoder(m) => m, JpegFailure::Problem(p) => p.to_string() });
            assert_eq!(decode_bytes(&bytes[..cut]).map(|_| ()), Err(ImageProblem::Truncated), "cut at {cut} of {}: strict says {strict:?}", bytes.len());
        }
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        assert_eq!(decode_bytes(&png).unwrap(), img);
        assert!(decode_bytes(&png[..png.len() / 2]).is_err());
    }

    /// A smooth colour field (gradients and a few soft blobs), JPEG at quality 95.
    fn smooth_jpeg(width: u32, height: u32, grey: bool) -> Vec<u8> {
        let img = RgbImage::from_fn(width, height, |x, y| {
            let (u, v) = (x as f64 / width as f64, y as f64 / height as f64);
            let blob = (-((u - 0.3).powi(2) + (v - 0.6).powi(2)) * 20.0).exp();
            image::Rgb([(200.0 * u + 40.0 * blob) as u8, (180.0 * v + 60.0 * blob) as u8, (120.0 + 100.0 * (u * v)) as u8])
        });
        let mut bytes = Vec::new();
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
        if grey {
            encoder.encode_image(&image::DynamicImage::ImageRgb8(img).into_luma8()).unwrap();
        } else {
            encoder.encode_image(&img).unwrap();
        }
        bytes
    }

    /// Mean absolute difference of `reduced` from the `r` x `r` box averages of `full`.
    fn distance_from_box_average(full: &RgbImage, reduced: &RgbImage, r: u32) -> f64 {
        let mut total = 0.0;
        for (x, y, p) in reduced.enumerate_pixels() {
            for c in 0..3 {
                let (mut sum, mut n) = (0.0, 0.0);
                for yy in y * r..((y + 1) * r).min(full.height()) {
                    for xx in x * r..((x + 1) * r).min(full.width()) {
                        sum += f64::from(full.get_pixel(xx, yy)[c]);
                        n += 1.0;
                    }
                }
                total += (sum / n - f64::from(p[c])).abs();
            }
        }
        total / (3.0 * f64::from(reduced.width()) * f64::from(reduced.height()))
    }

    #[test]
    fn a_large_jpeg_decodes_at_the_reduction_asked_for_and_shows_the_same_picture() {
        // 1203 x 901: odd sides, so the reduced sides are rounded up (ceil(1203 / 8) = 151).
        for grey in [false, true] {
            let bytes = smooth_jpeg(1203, 901, grey);
            let full = decode_bytes(&bytes).unwrap();
            for (asked, r) in [(1, 1), (2, 2), (3, 2), (4, 4), (7, 4), (8, 8), (100, 8), (0, 1)] {
                let seen = std::cell::Cell::new((0, 0));
                let d = decode_bytes_reduced(&bytes, &|w, h| {
                    seen.set((w, h));
                    asked
                })
                .unwrap();
                assert_eq!(seen.get(), (1203, 901), "the choice sees the stored size");
                assert_eq!((d.reduction, d.full_size), (r, (1203, 901)), "asked {asked}");
                assert_eq!(d.pixels.dimensions(), (1203u32.div_ceil(r), 901u32.div_ceil(r)), "asked {asked}");
                if r == 1 {
                    assert_eq!(d.pixels, full, "no reduction is the full decode");
                } else {
                    let dist = distance_from_box_average(&full, &d.pixels, r);
                    assert!(dist < 2.0, "1/{r} (grey {grey}) is {dist:.2} from the full image's box averages");
                }
            }
        }
    }

    #[test]
    fn the_large_fixture_decodes_at_each_reduction() {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/images/large_2000x1500.jpg")).unwrap();
        let full = decode_bytes(&bytes).unwrap();
        for r in [2, 4, 8] {
            let d = decode_bytes_reduced(&bytes, &|_, _| r).unwrap();
            assert_eq!((d.reduction, d.pixels.dimensions()), (r, (2000 / r, 1500u32.div_ceil(r))));
            let dist = distance_from_box_average(&full, &d.pixels, r);
            assert!(dist < 6.0, "1/{r}: {dist:.2} from the full image's box averages");
        }
    }

    #[test]
    fn small_or_damaged_or_other_images_are_decoded_in_full() {
        let eight = |_: u32, _: u32| 8;
        // Below REDUCED_DECODE_MIN_PIXELS (999 x 1000): in full, whatever was asked.
        let small = smooth_jpeg(999, 1000, false);
        let d = decode_bytes_reduced(&small, &eight).unwrap();
        assert_eq!((d.reduction, d.pixels.dimensions()), (1, (999, 1000)));
        // Cut short: the same typed error as a full decode.
        let big = smooth_jpeg(1200, 900, false);
        assert_eq!(decode_bytes_reduced(&big[..big.len() / 2], &eight).map(|_| ()), Err(ImageProblem::Truncated));
        assert_eq!(decode_bytes_reduced(b"not an image", &eight).map(|_| ()), Err(ImageProblem::NotAnImage));
        // PNG: in full.
        let img = RgbImage::from_fn(1100, 1000, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        let d = decode_bytes_reduced(&png, &eight).unwrap();
        assert_eq!((d.reduction, &d.pixels), (1, &img));
        // A CMYK JPEG (the fixture) is one the scaled decoder does not convert: `None`, so the
        // caller decodes it in full.
        let cmyk = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/images/cmyk.jpg")).unwrap();
        let (w, h) = jpeg_size(&cmyk).unwrap();
        assert!(decode_jpeg_scaled(&cmyk, (w, h), 2).is_none());
        assert!(decode_jpeg_scaled(&big, (1200, 900), 2).is_some());
        assert!(decode_jpeg_scaled(&big, (1201, 900), 2).is_none(), "a size other than the stored one is refused");
    }
}
