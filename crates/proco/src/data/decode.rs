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

/// Reads and decodes the image file at `path`.
///
/// # Errors
/// [`ImageProblem::Missing`] or [`ImageProblem::Unreadable`] when it cannot be read, else as
/// [`decode_bytes`].
pub fn decode_file(path: &Path) -> Result<RgbImage, ImageProblem> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageProblem::Missing,
        _ => ImageProblem::Unreadable(e.to_string()),
    })?;
    decode_bytes(&bytes)
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
}
