//! What long-tail users read: top-1 over all test images, and the mean per-class accuracy of
//! the many-shot (> 100 training images), medium-shot (20..=100) and few-shot (< 20) classes.

use serde::{Deserialize, Serialize};

use crate::data::long_tail::Shot;

/// Accuracies of one evaluation, in percent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShotAccuracy {
    /// Correct predictions over all samples.
    pub top1: f64,
    /// Mean per-class accuracy of many-shot classes (None when there are none).
    pub many: Option<f64>,
    /// Mean per-class accuracy of medium-shot classes.
    pub medium: Option<f64>,
    /// Mean per-class accuracy of few-shot classes.
    pub few: Option<f64>,
    /// Accuracy of every class; `None` for a class with no test sample (written as `null`
    /// in JSON, and read back as `None`).
    pub per_class: Vec<Option<f64>>,
}

/// Computes [`ShotAccuracy`] from predictions and labels, grouping classes by their number of
/// training images `train_counts` (one per class). Labels must be < train_counts.len().
pub fn shot_accuracy(predictions: &[usize], labels: &[usize], train_counts: &[usize]) -> ShotAccuracy {
    let c = train_counts.len();
    let (mut hit, mut total) = (vec![0usize; c], vec![0usize; c]);
    for (&p, &y) in predictions.iter().zip(labels) {
        if y < c {
            total[y] += 1;
            hit[y] += usize::from(p == y);
        }
    }
    let per_class: Vec<Option<f64>> = hit.iter().zip(&total).map(|(&h, &t)| (t > 0).then(|| 100.0 * h as f64 / t as f64)).collect();
    let group = |shot: Shot| {
        let accs: Vec<f64> = (0..c).filter(|&j| Shot::of(train_counts[j]) == shot).filter_map(|j| per_class[j]).collect();
        (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64)
    };
    let n = labels.len().max(1);
    ShotAccuracy {
        top1: 100.0 * hit.iter().sum::<usize>() as f64 / n as f64,
        many: group(Shot::Many),
        medium: group(Shot::Medium),
        few: group(Shot::Few),
        per_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_training_count() {
        // Classes with 500 (many), 50 (medium) and 5 (few) training images.
        let counts = [500, 50, 5];
        let labels = [0, 0, 1, 1, 2, 2, 2, 2];
        let preds = [0, 1, 1, 1, 2, 0, 0, 0];
        let a = shot_accuracy(&preds, &labels, &counts);
        assert_eq!(a.top1, 100.0 * 4.0 / 8.0);
        assert_eq!((a.many, a.medium, a.few), (Some(50.0), Some(100.0), Some(25.0)));
        let none_few = shot_accuracy(&[0], &[0], &[500, 50]);
        assert_eq!(none_few.few, None);
        assert_eq!(none_few.per_class, [Some(100.0), None]);
        // A class without test samples survives a JSON round trip (NaN would not: serde_json
        // writes it as null and then refuses to read it as a number).
        let text = serde_json::to_string(&none_few).unwrap();
        assert!(!text.contains("NaN"), "{text}");
        assert_eq!(serde_json::from_str::<ShotAccuracy>(&text).unwrap(), none_few);
    }
}
