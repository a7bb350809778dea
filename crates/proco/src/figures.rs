//! Charts for readers, as SVG through `plotters`: axis ticks with values, axis titles, a
//! legend, class names. SVG text needs no font files, so the charts are drawn the same on
//! every machine. (The training curves under a run's `plots/` stay the dependency-free PNGs
//! of [`crate::plot`].)

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{ProcoError, Result};
use crate::calibration::Calibration;

/// Colours of successive series (colour-blind safe, Wong 2011).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

fn plot_error(path: &Path, e: impl std::fmt::Display) -> ProcoError {
    ProcoError::Data { path: path.to_path_buf(), reason: format!("cannot draw the chart ({e})") }
}

/// Writes `names[i]` below the x axis at the pixel column `x_of(i)`, rotated to run down
/// from the axis (plotters centres rotated tick labels on the tick, which puts half of each
/// name inside the plot).
fn rotated_names<DB: DrawingBackend>(root: &DrawingArea<DB, plotters::coord::Shift>, names: &[(i32, i32, String)]) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let style = ("sans-serif", 11).into_font().transform(FontTransform::Rotate90).into_text_style(root).pos(Pos::new(HPos::Left, VPos::Center));
    for (x, y, name) in names {
        root.draw(&Text::new(name.clone(), (*x, *y + 6), style.clone()))?;
    }
    Ok(())
}

/// One named line of a [`category_line_chart`]: a value per category, `None` where missing.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// One value per category of the chart.
    pub values: Vec<Option<f64>>,
}

/// A line chart over categories (e.g. batch sizes 32, 64, ... at equal spacing): one line with
/// markers per series, a legend, the categories as x tick labels. The y range covers the
/// values with a margin.
///
/// # Errors
/// [`ProcoError::InvalidConfig`] for no categories or a series of another length;
/// [`ProcoError::Data`] when the file cannot be written.
pub fn category_line_chart(path: &Path, title: &str, x_desc: &str, y_desc: &str, categories: &[String], series: &[Series]) -> Result<()> {
    if categories.is_empty() || series.iter().any(|s| s.values.len() != categories.len()) {
        return Err(ProcoError::InvalidConfig { reason: format!("a line chart needs categories and one value per category in each series ({} categories)", categories.len()) });
    }
    let values: Vec<f64> = series.iter().flat_map(|s| s.values.iter().flatten().copied()).filter(|v| v.is_finite()).collect();
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if values.is_empty() { (0.0, 1.0) } else { (lo, hi) };
    let pad = ((hi - lo) * 0.15).max(0.5);
    let root = SVGBackend::new(path, (760, 480)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let k = categories.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(64)
            // plotters maps a one-value range wrongly: at least two segments.
            .build_cartesian_2d((0..k.max(2) - 1).into_segmented(), (lo - pad)..(hi + pad))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(k)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => categories.get(*i).cloned().unwrap_or_default(),
                SegmentValue::Last => String::new(),
            })
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()?;
        for (s, colour) in series.iter().zip(PALETTE.iter().cycle()) {
            let points: Vec<(SegmentValue<usize>, f64)> = s.values.iter().enumerate().filter_map(|(i, v)| v.map(|v| (SegmentValue::CenterOf(i), v))).collect();
            let c = *colour;
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))?;
        }
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::LowerRight).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| plot_error(path, e))
}

/// A reliability diagram: per confidence bin, the accuracy as a bar next to the diagonal of
/// perfect calibration, the bin's mean confidence as a marker, and the ECE in the title.
///
/// # Errors
/// [`ProcoError::Data`] when the file cannot be written.
pub fn reliability_diagram(path: &Path, title: &str, calibration: &Calibration) -> Result<()> {
    let root = SVGBackend::new(path, (560, 560)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let caption = format!("{title} (ECE {:.2}%, {} bins)", 100.0 * calibration.ece, calibration.bins.len());
        let mut chart = ChartBuilder::on(&root).caption(caption, ("sans-serif", 18)).margin(16).x_label_area_size(48).y_label_area_size(56).build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart.configure_mesh().x_desc("confidence (max softmax probability)").y_desc("accuracy").x_labels(6).y_labels(6).x_label_formatter(&|v| format!("{v:.1}")).y_label_formatter(&|v| format!("{v:.1}")).draw()?;
        let bars = PALETTE[0];
        chart
            .draw_series(calibration.bins.iter().filter(|b| b.count > 0).map(|b| Rectangle::new([(b.lower, 0.0), (b.upper, b.accuracy)], bars.mix(0.7).filled())))?
            .label("accuracy of the bin")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], bars.mix(0.7).filled()));
        let gap = PALETTE[1];
        chart
            .draw_series(calibration.bins.iter().filter(|b| b.count > 0).map(|b| Circle::new(((b.lower + b.upper) / 2.0, b.confidence), 4, gap.filled())))?
            .label("mean confidence of the bin")
            .legend(move |(x, y)| Circle::new((x + 7, y), 4, gap.filled()));
        chart
            .draw_series(LineSeries::new(vec![(0.0, 0.0), (1.0, 1.0)], BLACK.stroke_width(1)))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::UpperLeft).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| plot_error(path, e))
}

/// Per-class accuracy (bars, left axis, percent) against the class's training count (line,
/// right axis), classes ordered by training count, largest first, named on the x axis.
/// Above 60 classes only every k-th name is written, so that the names stay legible.
///
/// # Errors
/// [`ProcoError::InvalidConfig`] for lengths that disagree; [`ProcoError::Data`] when the
/// file cannot be written.
pub fn class_accuracy_chart(path: &Path, title: &str, names: &[String], train_counts: &[usize], accuracy: &[Option<f64>]) -> Result<()> {
    let c = names.len();
    if c == 0 || train_counts.len() != c || accuracy.len() != c {
        return Err(ProcoError::InvalidConfig { reason: format!("{c} class names, {} training counts and {} accuracies must agree", train_counts.len(), accuracy.len()) });
    }
    let mut order: Vec<usize> = (0..c).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(train_counts[j]));
    let max_count = train_counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let every = c.div_ceil(60).max(1);
    let width = (320 + 14 * c.min(120)) as u32;
    let root = SVGBackend::new(path, (width.max(640), 520)).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(110)
            .y_label_area_size(56)
            .right_y_label_area_size(64)
            .build_cartesian_2d((0..c.max(2) - 1).into_segmented(), 0f64..100f64)?
            .set_secondary_coord((0..c.max(2) - 1).into_segmented(), 0f64..max_count * 1.05);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("class (largest training set first)")
            .y_desc("test accuracy (%)")
            .x_labels(c)
            .axis_desc_style(("sans-serif", 14))
            .x_label_formatter(&|_| String::new())
            .draw()?;
        let labels: Vec<(i32, i32, String)> = order
            .iter()
            .enumerate()
            .filter(|(i, _)| i % every == 0)
            .map(|(i, &j)| {
                let (x, y) = chart.backend_coord(&(SegmentValue::CenterOf(i), 0.0));
                (x, y, names[j].clone())
            })
            .collect();
        rotated_names(&root, &labels)?;
        chart.configure_secondary_axes().y_desc("training images").axis_desc_style(("sans-serif", 14)).y_label_formatter(&|v| format!("{v:.0}")).draw()?;
        let bars = PALETTE[0];
        chart
            .draw_series(order.iter().enumerate().map(|(i, &j)| {
                let a = accuracy[j].unwrap_or(0.0);
                let mut bar = Rectangle::new([(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), a)], bars.mix(0.75).filled());
                bar.set_margin(0, 0, 1, 1);
                bar
            }))?
            .label("test accuracy")
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], bars.mix(0.75).filled()));
        let line = PALETTE[1];
        chart
            .draw_secondary_series(LineSeries::new(order.iter().enumerate().map(|(i, &j)| (SegmentValue::CenterOf(i), train_counts[j] as f64)), line.stroke_width(2)))?
            .label("training images")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], line.stroke_width(2)));
        chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).position(SeriesLabelPosition::UpperRight).draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| plot_error(path, e))
}

/// A confusion matrix as a heat map of row-normalised counts (each true class's row sums to
/// 1), true class down, predicted class across, with class names on both axes (every k-th
/// above 40 classes) and the percentage written in each cell up to 20 classes.
///
/// # Errors
/// [`ProcoError::InvalidConfig`] for a matrix that is not C x C; [`ProcoError::Data`] when
/// the file cannot be written.
pub fn confusion_matrix_chart(path: &Path, title: &str, names: &[String], counts: &[u64]) -> Result<()> {
    let c = names.len();
    if c == 0 || counts.len() != c * c {
        return Err(ProcoError::InvalidConfig { reason: format!("a confusion matrix of {c} classes needs {} counts, got {}", c * c, counts.len()) });
    }
    let every = c.div_ceil(40).max(1);
    let side = (240 + 24 * c.min(60)) as u32;
    let root = SVGBackend::new(path, (side.max(560) + 40, side.max(560))).into_drawing_area();
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(110)
            .y_label_area_size(110)
            .build_cartesian_2d((0..c.max(2) - 1).into_segmented(), (0..c.max(2) - 1).into_segmented())?;
        let name_at = |v: &SegmentValue<usize>| match v {
            // Row 0 at the top: the y axis counts down.
            SegmentValue::CenterOf(i) if i % every == 0 => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let flip = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < c => name_at(&SegmentValue::CenterOf(c - 1 - i)),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(c)
            .y_labels(c)
            .y_label_style(("sans-serif", 11))
            .axis_desc_style(("sans-serif", 14))
            .x_label_formatter(&|_| String::new())
            .y_label_formatter(&flip)
            .draw()?;
        let labels: Vec<(i32, i32, String)> = (0..c)
            .filter(|i| i % every == 0)
            .map(|i| {
                let (x, y) = chart.backend_coord(&(SegmentValue::CenterOf(i), SegmentValue::Exact(0)));
                (x, y, name_at(&SegmentValue::CenterOf(i)))
            })
            .collect();
        rotated_names(&root, &labels)?;
        let row_total: Vec<u64> = counts.chunks_exact(c).map(|r| r.iter().sum()).collect();
        let share = |t: usize, p: usize| if row_total[t] == 0 { 0.0 } else { counts[t * c + p] as f64 / row_total[t] as f64 };
        chart.draw_series((0..c).flat_map(|t| (0..c).map(move |p| (t, p))).map(|(t, p)| {
            let v = share(t, p);
            let shade = (255.0 * (1.0 - v)).round() as u8;
            let y = c - 1 - t;
            Rectangle::new([(SegmentValue::Exact(p), SegmentValue::Exact(y)), (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1))], RGBColor(shade, shade, 255).filled())
        }))?;
        if c <= 20 {
            chart.draw_series((0..c).flat_map(|t| (0..c).map(move |p| (t, p))).map(|(t, p)| {
                let v = share(t, p);
                let colour = if v > 0.5 { WHITE } else { BLACK };
                Text::new(format!("{:.0}", 100.0 * v), (SegmentValue::CenterOf(p), SegmentValue::CenterOf(c - 1 - t)), ("sans-serif", 11).into_font().color(&colour))
            }))?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| plot_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibration::Calibration;

    /// The text elements of an SVG, trimmed, in document order.
    fn texts(path: &Path) -> Vec<String> {
        let svg = std::fs::read_to_string(path).unwrap();
        svg.split("<text").skip(1).filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string())).collect()
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("proco-figures-{name}-{}.svg", std::process::id()))
    }

    #[test]
    fn line_chart_names_categories_series_and_axes() {
        let path = tmp("line");
        let cats: Vec<String> = ["32", "64", "128"].map(String::from).to_vec();
        let series = vec![Series { name: "proco".into(), values: vec![Some(40.0), Some(41.5), Some(42.0)] }, Series { name: "supcon".into(), values: vec![Some(30.0), None, Some(38.0)] }];
        category_line_chart(&path, "top-1 against batch size", "batch size", "top-1 (%)", &cats, &series).unwrap();
        let t = texts(&path);
        for text in ["top-1 against batch size", "batch size", "top-1 (%)", "32", "64", "128", "proco", "supcon"] {
            assert!(t.iter().any(|s| s == text), "{text} missing from the chart: {t:?}");
        }
        // y ticks carry values.
        assert!(t.iter().filter(|s| s.parse::<f64>().is_ok_and(|v| (28.0..45.0).contains(&v) && s.contains('.'))).count() >= 3, "y ticks: {t:?}");
        assert!(category_line_chart(&path, "t", "x", "y", &cats, &[Series { name: "short".into(), values: vec![Some(1.0)] }]).is_err());
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn reliability_class_and_confusion_charts_carry_their_labels() {
        let conf = [0.95, 0.9, 0.6, 0.55, 0.3];
        let correct = [true, true, false, true, false];
        let cal = Calibration::from_predictions(&conf, &correct, 15).unwrap();
        let path = tmp("reliability");
        reliability_diagram(&path, "reliability", &cal).unwrap();
        let t = texts(&path);
        assert!(t.iter().any(|s| s.contains(&format!("ECE {:.2}%", 100.0 * cal.ece))), "{t:?}");
        assert!(t.iter().any(|s| s == "perfect calibration") && t.iter().any(|s| s == "0.6"), "{t:?}");

        let names: Vec<String> = ["airplane", "cat", "truck"].map(String::from).to_vec();
        let path = tmp("classes");
        class_accuracy_chart(&path, "per class", &names, &[5000, 50, 500], &[Some(90.0), Some(10.0), None]).unwrap();
        let t = texts(&path);
        for text in ["airplane", "cat", "truck", "training images", "test accuracy (%)"] {
            assert!(t.iter().any(|s| s == text), "{text} missing: {t:?}");
        }
        // Largest class first: airplane, truck, cat along the axis.
        let at = |name: &str| t.iter().position(|s| s == name).unwrap();
        assert!(at("airplane") < at("truck") && at("truck") < at("cat"), "class order by training count: {t:?}");

        let path = tmp("confusion");
        confusion_matrix_chart(&path, "confusion", &names, &[8, 2, 0, 1, 1, 0, 0, 0, 0]).unwrap();
        let t = texts(&path);
        for text in ["predicted class", "true class", "airplane", "80", "20", "50"] {
            assert!(t.iter().any(|s| s == text), "{text} missing: {t:?}");
        }
        assert!(confusion_matrix_chart(&path, "c", &names, &[1, 2]).is_err());
        let _ = std::fs::remove_file(&path);
    }
}
