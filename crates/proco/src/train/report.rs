//! The figures and numbers of one evaluation, written as a reader would want them: the
//! reliability diagram with the ECE, per-class accuracy against training count with class
//! names, the confusion matrix, and `evaluation.json` with every number behind them.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::calibration::{Calibration, ConfusionMatrix};
use crate::error::{ProcoError, Result};
use crate::figures::{class_accuracy_chart, confusion_matrix_chart, reliability_diagram};
use crate::train::{Evaluation, ShotAccuracy};

/// What `evaluation.json` holds.
#[derive(Debug, Serialize)]
struct EvaluationFile<'a> {
    split: &'a str,
    images: usize,
    accuracy: &'a ShotAccuracy,
    ce_loss: f64,
    /// Percent.
    ece: f64,
    calibration: &'a Calibration,
    class_names: &'a [String],
    train_counts: &'a [usize],
    /// (true, predicted, count), the most frequent first.
    top_confusions: Vec<(usize, usize, u64)>,
    /// The whole matrix, up to [`MAX_CONFUSION_CLASSES`] classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    confusion: Option<&'a ConfusionMatrix>,
}

/// Above this many classes the confusion matrix is neither drawn nor written whole (C^2
/// cells: 66 million for iNaturalist); the most frequent confusions still are.
pub const MAX_CONFUSION_CLASSES: usize = 200;

/// Class names of the data, or `class 0`, `class 1`, ... where it has none.
pub fn class_names_or_indices(names: Option<&[String]>, num_classes: usize) -> Vec<String> {
    match names {
        Some(n) if n.len() == num_classes => n.to_vec(),
        _ => (0..num_classes).map(|j| format!("class {j}")).collect(),
    }
}

/// Writes `reliability.svg`, `per_class_accuracy.svg`, `confusion_matrix.svg` (up to
/// [`MAX_CONFUSION_CLASSES`] classes) and `evaluation.json` of `evaluation` (of the split
/// `split`) into `dir`, returning their paths.
///
/// # Errors
/// [`ProcoError::InvalidConfig`] when the names or counts disagree with the evaluation;
/// [`ProcoError::Io`] / [`ProcoError::Data`] when a file cannot be written.
pub fn write_evaluation_report(dir: &Path, split: &str, evaluation: &Evaluation, train_counts: &[usize], class_names: &[String]) -> Result<Vec<PathBuf>> {
    let c = train_counts.len();
    if class_names.len() != c || evaluation.accuracy.per_class.len() != c {
        return Err(ProcoError::InvalidConfig { reason: format!("{} class names and {} per-class accuracies for {c} classes", class_names.len(), evaluation.accuracy.per_class.len()) });
    }
    std::fs::create_dir_all(dir).map_err(ProcoError::io_at(dir))?;
    let calibration = evaluation.calibration()?;
    let confusion = evaluation.confusion(c)?;
    let whole = c <= MAX_CONFUSION_CLASSES;
    let json = dir.join("evaluation.json");
    let mut paths = vec![dir.join("reliability.svg"), dir.join("per_class_accuracy.svg")];
    reliability_diagram(&paths[0], &format!("Reliability, {split}"), &calibration)?;
    class_accuracy_chart(&paths[1], &format!("Per-class {split} accuracy (top-1 {:.2}%)", evaluation.accuracy.top1), class_names, train_counts, &evaluation.accuracy.per_class)?;
    if whole {
        let path = dir.join("confusion_matrix.svg");
        confusion_matrix_chart(&path, &format!("Confusion matrix, {split} (% of each true class)"), class_names, &confusion.counts)?;
        paths.push(path);
    }
    let file = EvaluationFile {
        split,
        images: evaluation.labels.len(),
        accuracy: &evaluation.accuracy,
        ce_loss: evaluation.ce_loss,
        ece: 100.0 * calibration.ece,
        calibration: &calibration,
        class_names,
        train_counts,
        top_confusions: confusion.top_confusions(20),
        confusion: whole.then_some(&confusion),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| ProcoError::InvalidConfig { reason: e.to_string() })?;
    std::fs::write(&json, text).map_err(ProcoError::io_at(&json))?;
    paths.push(json);
    Ok(paths)
}
