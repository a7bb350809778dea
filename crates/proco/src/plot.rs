//! Small raster charts written as PNG, with no font or plotting dependency: a built-in 5x7
//! bitmap font, log-scale bar charts (class histograms, per-class accuracy) and line charts
//! (training curves). Good enough to look at; not a plotting library.

use std::path::Path;

use image::{Rgb, RgbImage};

use crate::error::{ProcoError, Result};

/// 5x7 glyphs, one byte per row (low 5 bits, MSB = leftmost column).
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 10, 4, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        _ => [0; 7],
    }
}

/// Colours used by the charts.
pub const INK: Rgb<u8> = Rgb([30, 30, 30]);
/// Light grid lines.
pub const GRID: Rgb<u8> = Rgb([220, 220, 220]);
/// Series colours (many / medium / few, or curve 1, 2, 3...).
pub const PALETTE: [Rgb<u8>; 4] = [Rgb([31, 119, 180]), Rgb([255, 127, 14]), Rgb([214, 39, 40]), Rgb([44, 160, 44])];

/// Draws `text` with its top-left corner at (x, y), at `scale` pixels per font dot.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: i64, color: Rgb<u8>) {
    for (k, c) in text.chars().enumerate() {
        let rows = glyph(c);
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..5 {
                if bits & (16 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            put(img, x + (k as i64 * 6 + col) * scale + dx, y + r as i64 * scale + dy, color);
                        }
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: i64) -> i64 {
    text.chars().count() as i64 * 6 * scale
}

fn put(img: &mut RgbImage, x: i64, y: i64, color: Rgb<u8>) {
    if x >= 0 && y >= 0 && (x as u32) < img.width() && (y as u32) < img.height() {
        img.put_pixel(x as u32, y as u32, color);
    }
}

fn fill(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, color: Rgb<u8>) {
    for y in y0.min(y1)..y0.max(y1) {
        for x in x0.min(x1)..x0.max(x1) {
            put(img, x, y, color);
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), color: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as i64).max(1);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = ((x0 + t * (x1 - x0)).round() as i64, (y0 + t * (y1 - y0)).round() as i64);
        fill(img, x, y, x + 2, y + 2, color);
    }
}

fn save(img: &RgbImage, path: &Path) -> Result<()> {
    img.save(path).map_err(|e| ProcoError::Data { path: path.to_path_buf(), reason: format!("could not write the PNG: {e}") })
}

/// Plot-area margins in pixels (left, right, top, bottom) of every chart.
pub const MARGIN: (i64, i64, i64, i64) = (70, 20, 40, 40);
/// Width and height in pixels of every chart.
pub const SIZE: (i64, i64) = (900, 420);

/// The y axis of a bar chart.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Axis {
    /// log10, from 1 to the next power of ten above the largest value (class sizes).
    Log,
    /// Linear from 0 to the given maximum (accuracies in percent: 100).
    Linear(f64),
}

/// A bar per value on a log10 y axis (values <= 0 draw no bar), coloured by `group[i]` (an
/// index into [`PALETTE`]), with a title and a legend of group names. Writes a PNG.
pub fn log_bar_chart(path: &Path, title: &str, values: &[f64], group: &[usize], legend: &[&str]) -> Result<()> {
    bar_chart(path, title, values, group, legend, Axis::Log)
}

/// A bar per value on the given y axis, coloured by `group[i]`, with a title and a legend.
pub fn bar_chart(path: &Path, title: &str, values: &[f64], group: &[usize], legend: &[&str], axis: Axis) -> Result<()> {
    let (w, h) = SIZE;
    let mut img = RgbImage::from_pixel(w as u32, h as u32, Rgb([255, 255, 255]));
    let (l, r, t, b) = MARGIN;
    let (pw, ph) = (w - l - r, h - t - b);
    let top = values.iter().copied().fold(1.0f64, f64::max);
    let decades = top.log10().ceil().max(1.0);
    let y_of = |v: f64| match axis {
        Axis::Log => t as f64 + ph as f64 * (1.0 - (v.max(1.0).log10() / decades)),
        Axis::Linear(max) => t as f64 + ph as f64 * (1.0 - (v / max).clamp(0.0, 1.0)),
    };
    let ticks: Vec<(f64, String)> = match axis {
        Axis::Log => (0..=decades as u32).map(|d| (10f64.powi(d as i32), format!("{}", 10u64.pow(d)))).collect(),
        Axis::Linear(max) => (0..=4).map(|k| (max * k as f64 / 4.0, format!("{:.0}", max * k as f64 / 4.0))).collect(),
    };
    for (v, label) in ticks {
        let y = y_of(v) as i64;
        fill(&mut img, l, y, l + pw, y + 1, GRID);
        draw_text(&mut img, l - 8 - text_width(&label, 2), y - 7, &label, 2, INK);
    }
    let n = values.len().max(1) as i64;
    let slot = pw as f64 / n as f64;
    let baseline = match axis {
        Axis::Log => 1.0,
        Axis::Linear(_) => 0.0,
    };
    for (i, &v) in values.iter().enumerate() {
        if v > baseline {
            let x0 = l + (i as f64 * slot) as i64;
            let x1 = l + ((i as f64 + 0.85) * slot).max(i as f64 * slot + 1.0) as i64;
            let color = PALETTE[group.get(i).copied().unwrap_or(0) % PALETTE.len()];
            fill(&mut img, x0, y_of(v) as i64, x1.max(x0 + 1), t + ph, color);
        }
    }
    fill(&mut img, l, t + ph, l + pw, t + ph + 2, INK);
    draw_text(&mut img, l, 10, title, 2, INK);
    let mut x = l + pw;
    for (k, name) in legend.iter().enumerate().rev() {
        x -= text_width(name, 2) + 30;
        fill(&mut img, x, h - 28, x + 14, h - 14, PALETTE[k % PALETTE.len()]);
        draw_text(&mut img, x + 20, h - 28, name, 2, INK);
    }
    draw_text(&mut img, l, h - 28, "CLASS INDEX", 2, INK);
    save(&img, path)
}

/// Line chart of one or more series over a shared x (epochs), with a title and legend.
pub fn line_chart(path: &Path, title: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    let (w, h) = SIZE;
    let mut img = RgbImage::from_pixel(w as u32, h as u32, Rgb([255, 255, 255]));
    let (l, r, t, b) = MARGIN;
    let (pw, ph) = (w - l - r, h - t - b);
    let pts = series.iter().flat_map(|s| s.1.iter().copied()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        (x_min, x_max, y_min, y_max) = (x_min.min(x), x_max.max(x), y_min.min(y), y_max.max(y));
    }
    if x_min > x_max {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    if x_max == x_min {
        x_max = x_min + 1.0;
    }
    if y_max == y_min {
        // A flat series sits in the middle of the plot, not under the x axis.
        (y_min, y_max) = (y_min - 0.5, y_max + 0.5);
    }
    let px = |x: f64| l as f64 + pw as f64 * (x - x_min) / (x_max - x_min);
    let py = |y: f64| t as f64 + ph as f64 * (1.0 - (y - y_min) / (y_max - y_min));
    for k in 0..=4 {
        let v = y_min + (y_max - y_min) * k as f64 / 4.0;
        let y = py(v) as i64;
        fill(&mut img, l, y, l + pw, y + 1, GRID);
        let label = format!("{v:.1}");
        draw_text(&mut img, l - 8 - text_width(&label, 2), y - 7, &label, 2, INK);
    }
    for (k, (_, s)) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        for pair in s.windows(2) {
            line(&mut img, (px(pair[0].0), py(pair[0].1)), (px(pair[1].0), py(pair[1].1)), color);
        }
        if s.len() == 1 {
            line(&mut img, (px(s[0].0), py(s[0].1)), (px(s[0].0), py(s[0].1)), color);
        }
    }
    fill(&mut img, l, t + ph, l + pw, t + ph + 2, INK);
    draw_text(&mut img, l, 10, title, 2, INK);
    let mut x = l + pw;
    for (k, (name, _)) in series.iter().enumerate().rev() {
        x -= text_width(name, 2) + 30;
        fill(&mut img, x, h - 28, x + 14, h - 14, PALETTE[k % PALETTE.len()]);
        draw_text(&mut img, x + 20, h - 28, name, 2, INK);
    }
    draw_text(&mut img, l, h - 28, &format!("EPOCH {x_min:.0}-{x_max:.0}"), 2, INK);
    save(&img, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_chart_draws_bars_in_their_group_colour() {
        let path = std::env::temp_dir().join(format!("proco-plot-{}.png", std::process::id()));
        log_bar_chart(&path, "TEST 12 IMAGES", &[5000.0, 50.0, 5.0], &[0, 1, 2], &["MANY", "MEDIUM", "FEW"]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(img.dimensions(), (900, 420));
        // Just above the x axis, in the middle of each bar's slot.
        let (l, _, t, b) = MARGIN;
        let slot = (900 - l - MARGIN.1) as f64 / 3.0;
        for (i, colour) in PALETTE[..3].iter().enumerate() {
            let x = (l as f64 + (i as f64 + 0.4) * slot) as u32;
            assert_eq!(img.get_pixel(x, (420 - b - 3) as u32), colour, "bar {i}");
        }
        // The tallest bar (5000 of a 10^4 axis) reaches above the middle; the 5-image bar does not.
        let mid = (t + (420 - t - b) / 2) as u32;
        assert_eq!(img.get_pixel((l as f64 + 0.4 * slot) as u32, mid), &PALETTE[0]);
        assert_ne!(img.get_pixel((l as f64 + 2.4 * slot) as u32, mid), &PALETTE[2]);
    }

    /// The plot area's rows of column `x` holding `colour` (legend and title excluded), as
    /// their mean (None when absent).
    fn mean_row(img: &RgbImage, x: u32, colour: &Rgb<u8>) -> Option<f64> {
        let (_, _, t, b) = MARGIN;
        let rows: Vec<u32> = (t as u32..(SIZE.1 - b) as u32).filter(|&y| img.get_pixel(x, y) == colour).collect();
        (!rows.is_empty()).then(|| rows.iter().sum::<u32>() as f64 / rows.len() as f64)
    }

    #[test]
    fn line_chart_draws_each_series_through_its_points() {
        let path = std::env::temp_dir().join(format!("proco-line-{}.png", std::process::id()));
        // A rises 0 -> 10 over epochs 0..10, B falls 10 -> 0; the axes span exactly [0, 10].
        let rising: Vec<(f64, f64)> = (0..=10).map(|e| (e as f64, e as f64)).collect();
        let falling: Vec<(f64, f64)> = (0..=10).map(|e| (e as f64, 10.0 - e as f64)).collect();
        line_chart(&path, "TWO SERIES", &[("A", rising), ("B", falling)]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((img.width() as i64, img.height() as i64), SIZE);
        let (l, r, t, b) = MARGIN;
        let (pw, ph) = ((SIZE.0 - l - r) as f64, (SIZE.1 - t - b) as f64);
        for e in [1.5, 3.0, 7.0, 8.5] {
            let x = (l as f64 + pw * e / 10.0).round() as u32;
            for (k, want) in [(0, e), (1, 10.0 - e)] {
                let row = mean_row(&img, x, &PALETTE[k]).unwrap_or_else(|| panic!("series {k} absent at epoch {e}"));
                let expected = t as f64 + ph * (1.0 - want / 10.0);
                assert!((row - expected).abs() <= 2.0, "series {k} at epoch {e}: row {row}, expected {expected}");
            }
        }
    }

    #[test]
    fn line_chart_handles_empty_and_flat_series() {
        let path = std::env::temp_dir().join(format!("proco-line-flat-{}.png", std::process::id()));
        line_chart(&path, "EMPTY", &[("A", vec![])]).unwrap();
        let empty = image::open(&path).unwrap().to_rgb8();
        let (l, r, _, _) = MARGIN;
        assert!((l as u32..(SIZE.0 - r) as u32).all(|x| mean_row(&empty, x, &PALETTE[0]).is_none()), "an empty series draws nothing");
        line_chart(&path, "FLAT", &[("A", vec![(0.0, 1.0), (1.0, 1.0)]), ("B", vec![(0.5, f64::NAN)])]).unwrap();
        let flat = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_file(&path).unwrap();
        // A flat series is a horizontal line in the middle of the plot, not hidden under the axis.
        let rows: Vec<f64> = [0.1, 0.5, 0.9].iter().map(|f| mean_row(&flat, (l as f64 + (SIZE.0 - l - r) as f64 * f) as u32, &PALETTE[0]).expect("flat line")).collect();
        assert!(rows.windows(2).all(|w| (w[0] - w[1]).abs() < 1.0), "{rows:?}");
        let (_, _, t, b) = MARGIN;
        assert!((rows[0] - (t + (SIZE.1 - t - b) / 2) as f64).abs() <= 1.0, "{rows:?}");
    }
}
