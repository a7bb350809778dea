//! Our decoder against PIL's `Image.open(f).convert("RGB")` on the odd formats a real dataset
//! holds (fixtures and PIL's readings written by `scripts/fixtures/gen_images.py`): PNGs must
//! match exactly; JPEGs within the differences between two correct decoders (zune-jpeg here,
//! libjpeg-turbo in PIL: the IDCT and chroma upsampling round differently); files PIL refuses
//! must fail with the matching typed problem.

use std::path::{Path, PathBuf};

use image::RgbImage;
use proco::data::decode::{decode_bytes, decode_file};
use proco::error::ImageProblem;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images")
}

/// PIL's reading, stored losslessly.
fn expected(name: &str) -> RgbImage {
    image::open(dir().join("expected").join(name)).unwrap().into_rgb8()
}

/// (mean, max) absolute difference over every sample.
fn difference(a: &RgbImage, b: &RgbImage) -> (f64, u8) {
    assert_eq!(a.dimensions(), b.dimensions());
    let diffs: Vec<u8> = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).collect();
    (diffs.iter().map(|&d| f64::from(d)).sum::<f64>() / diffs.len() as f64, diffs.iter().copied().max().unwrap_or(0))
}

#[test]
fn decodes_as_pil_converts_to_rgb() {
    // (file, mean tolerance, max tolerance): 0 / 0 is bit-exact. Measured against Pillow
    // 13.0 / libjpeg-turbo: colour JPEGs 0.37-0.39 mean, 6-9 max (chroma upsampling at the
    // checkerboard's edges); grey and CMYK (no chroma) 0.01 mean, 1 max.
    let cases = [
        ("rgba.png", 0.0, 0),
        ("palette.png", 0.0, 0),
        ("gray_alpha.png", 0.0, 0),
        ("rgb.jpg", 0.5, 10),
        ("gray.jpg", 0.05, 1),
        ("cmyk.jpg", 0.05, 1),
        ("progressive.jpg", 0.5, 10),
        ("subsampled_420.jpg", 0.5, 10),
        ("exif_rotated.jpg", 0.5, 10),
        ("tiny_1x1.jpg", 0.05, 1),
    ];
    for (name, mean_tol, max_tol) in cases {
        let ours = decode_file(&dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let theirs = expected(&format!("{}.png", name.rsplit_once('.').unwrap().0));
        let (mean, max) = difference(&ours, &theirs);
        eprintln!("{name}: {:?}, mean |diff| {mean:.3}, max {max}", ours.dimensions());
        assert!(mean <= mean_tol && max <= max_tol, "{name}: mean {mean} (<= {mean_tol}), max {max} (<= {max_tol})");
    }
    // EXIF orientation is ignored, as PIL does on load: the stored 48 x 36, not 36 x 48.
    assert_eq!(decode_file(&dir().join("exif_rotated.jpg")).unwrap().dimensions(), (48, 36));
}

#[test]
fn a_large_photo_decodes_like_pil() {
    let ours = decode_file(&dir().join("large_2000x1500.jpg")).unwrap();
    assert_eq!(ours.dimensions(), (2000, 1500));
    let window = image::imageops::crop_imm(&ours, 968, 868, 64, 64).to_image();
    let (mean, max) = difference(&window, &expected("large_2000x1500_window.png"));
    eprintln!("large window: mean |diff| {mean:.3}, max {max}");
    assert!(mean <= 1.0 && max <= 12, "mean {mean}, max {max}");
    let text = std::fs::read_to_string(dir().join("expected/large_2000x1500_mean.txt")).unwrap();
    let pil: Vec<f64> = text.split_whitespace().map(|v| v.parse().unwrap()).collect();
    for c in 0..3 {
        let m = ours.pixels().map(|p| f64::from(p.0[c])).sum::<f64>() / (2000.0 * 1500.0);
        assert!((m - pil[c]).abs() < 0.25, "channel {c}: mean {m} vs PIL's {}", pil[c]);
    }
}

#[test]
fn files_pil_refuses_fail_with_the_matching_problem() {
    let cases = [
        ("truncated.jpg", ImageProblem::Truncated),
        ("no_end_marker.jpg", ImageProblem::Truncated),
        ("not_an_image.jpg", ImageProblem::NotAnImage),
        ("empty.jpg", ImageProblem::NotAnImage),
        ("absent.jpg", ImageProblem::Missing),
    ];
    for (name, problem) in cases {
        assert_eq!(decode_file(&dir().join(name)).err(), Some(problem), "{name}");
    }
    assert!(matches!(decode_file(&dir().join("truncated.png")), Err(ImageProblem::Truncated | ImageProblem::Corrupt(_))));
    // Every cut of a whole JPEG is refused, none panics.
    let whole = std::fs::read(dir().join("rgb.jpg")).unwrap();
    for cut in (0..whole.len()).step_by(37) {
        assert!(decode_bytes(&whole[..cut]).is_err(), "cut at {cut}");
    }
}
