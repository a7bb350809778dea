//! Calibration and confusion: the expected calibration error over equal-width confidence
//! bins (Guo et al. 2017, 15 bins in LT papers) and the confusion matrix.

use serde::{Deserialize, Serialize};

use crate::error::{ProcoError, Result};

/// One confidence bin (lower, upper] of a [`Calibration`] (the first bin also holds 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower edge of the bin, in [0, 1).
    pub lower: f64,
    /// Upper edge of the bin, in (0, 1].
    pub upper: f64,
    /// Predictions whose confidence falls in the bin.
    pub count: usize,
    /// Fraction of them that are right (0 for an empty bin).
    pub accuracy: f64,
    /// Their mean confidence (0 for an empty bin).
    pub confidence: f64,
}

/// Reliability of predicted confidences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Expected calibration error: sum over bins of count / N x |accuracy - confidence|, in
    /// [0, 1].
    pub ece: f64,
    /// The equal-width bins over [0, 1].
    pub bins: Vec<CalibrationBin>,
}

impl Calibration {
    /// The calibration of predictions with `confidence` (max softmax probability, in [0, 1])
    /// and whether each was `correct`, over `bins` equal-width bins.
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for lengths that disagree, no bins, or a confidence
    /// outside [0, 1] or NaN.
    pub fn from_predictions(confidence: &[f64], correct: &[bool], bins: usize) -> Result<Self> {
        if confidence.len() != correct.len() || bins == 0 {
            return Err(ProcoError::InvalidConfig { reason: format!("calibration needs one correctness per confidence ({} vs {}) and at least one bin", confidence.len(), correct.len()) });
        }
        if let Some(bad) = confidence.iter().find(|c| !(0.0..=1.0).contains(*c)) {
            return Err(ProcoError::InvalidConfig { reason: format!("a confidence of {bad} is not a probability in [0, 1]") });
        }
        let (mut count, mut hits, mut conf_sum) = (vec![0usize; bins], vec![0usize; bins], vec![0.0f64; bins]);
        for (&c, &ok) in confidence.iter().zip(correct) {
            // (lower, upper]: bin b holds b/B < c <= (b+1)/B.
            let b = ((c * bins as f64).ceil() as usize).saturating_sub(1).min(bins - 1);
            count[b] += 1;
            hits[b] += usize::from(ok);
            conf_sum[b] += c;
        }
        let n = confidence.len().max(1) as f64;
        let bins: Vec<CalibrationBin> = (0..bins)
            .map(|b| {
                let k = count[b];
                let (accuracy, confidence) = if k == 0 { (0.0, 0.0) } else { (hits[b] as f64 / k as f64, conf_sum[b] / k as f64) };
                CalibrationBin { lower: b as f64 / bins as f64, upper: (b + 1) as f64 / bins as f64, count: k, accuracy, confidence }
            })
            .collect();
        let ece = bins.iter().map(|b| b.count as f64 / n * (b.accuracy - b.confidence).abs()).sum();
        Ok(Self { ece, bins })
    }
}

/// Counts of (true class, predicted class), C x C row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Number of classes C.
    pub num_classes: usize,
    /// counts[t * C + p]: samples of class t predicted as p.
    pub counts: Vec<u64>,
}

impl ConfusionMatrix {
    /// The matrix of `predictions` against `labels`, both below `num_classes`.
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for lengths that disagree or a class out of range.
    pub fn new(predictions: &[usize], labels: &[usize], num_classes: usize) -> Result<Self> {
        if predictions.len() != labels.len() {
            return Err(ProcoError::InvalidConfig { reason: format!("{} predictions for {} labels", predictions.len(), labels.len()) });
        }
        let mut counts = vec![0u64; num_classes * num_classes];
        for (&p, &t) in predictions.iter().zip(labels) {
            if p >= num_classes || t >= num_classes {
                return Err(ProcoError::InvalidConfig { reason: format!("class {} is out of range for {num_classes} classes", p.max(t)) });
            }
            counts[t * num_classes + p] += 1;
        }
        Ok(Self { num_classes, counts })
    }

    /// The pairs (true, predicted, count) of the `k` most frequent confusions (off the
    /// diagonal), most frequent first.
    pub fn top_confusions(&self, k: usize) -> Vec<(usize, usize, u64)> {
        let c = self.num_classes;
        let mut off: Vec<(usize, usize, u64)> = (0..c * c).filter(|i| i / c != i % c && self.counts[*i] > 0).map(|i| (i / c, i % c, self.counts[i])).collect();
        off.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
        off.truncate(k);
        off
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ece_by_hand() {
        // 4 bins. Bin (0.5, 0.75]: 0.6 right, 0.7 wrong -> acc 0.5, conf 0.65;
        // bin (0.75, 1]: 0.8 right, 1.0 right -> acc 1, conf 0.9; 0.25 exactly is bin 0.
        let cal = Calibration::from_predictions(&[0.6, 0.7, 0.8, 1.0, 0.25], &[true, false, true, true, false], 4).unwrap();
        let counts: Vec<usize> = cal.bins.iter().map(|b| b.count).collect();
        assert_eq!(counts, [1, 0, 2, 2]);
        let want = (1.0 * 0.25 + 2.0 * 0.15 + 2.0 * 0.1) / 5.0;
        assert!((cal.ece - want).abs() < 1e-15, "{} vs {want}", cal.ece);
        assert!(Calibration::from_predictions(&[1.5], &[true], 15).is_err());
        assert!(Calibration::from_predictions(&[f64::NAN], &[true], 15).is_err());
        assert!(Calibration::from_predictions(&[0.5], &[], 15).is_err());
    }

    #[test]
    fn confusion_counts_and_top_pairs() {
        let m = ConfusionMatrix::new(&[0, 1, 1, 2, 1], &[0, 0, 1, 1, 0], 3).unwrap();
        assert_eq!(m.counts, [1, 2, 0, 0, 1, 1, 0, 0, 0]);
        assert_eq!(m.top_confusions(5), [(0, 1, 2), (1, 2, 1)]);
        assert!(ConfusionMatrix::new(&[3], &[0], 3).is_err());
    }

    proptest! {
        // ECE lies in [0, 1]; every prediction lands in one bin; a model whose confidence is
        // always 1 and always right is perfectly calibrated.
        #[test]
        fn ece_is_a_weighted_gap(conf in proptest::collection::vec(0.0f64..=1.0, 1..200), seed in any::<u64>(), bins in 1usize..30) {
            let correct: Vec<bool> = conf.iter().enumerate().map(|(i, _)| (seed >> (i % 64)) & 1 == 1).collect();
            let cal = Calibration::from_predictions(&conf, &correct, bins).unwrap();
            prop_assert!((0.0..=1.0).contains(&cal.ece));
            prop_assert_eq!(cal.bins.iter().map(|b| b.count).sum::<usize>(), conf.len());
            for b in &cal.bins {
                prop_assert!(b.count == 0 || (b.confidence > b.lower - 1e-12 || b.lower == 0.0) && b.confidence <= b.upper + 1e-12);
            }
            let ones = vec![1.0; conf.len()];
            prop_assert_eq!(Calibration::from_predictions(&ones, &vec![true; conf.len()], bins).unwrap().ece, 0.0);
        }
    }
}
