//! The long-tail protocol of the LDAM-DRW code that every CIFAR-LT paper (ProCo included) uses:
//! per-class image counts from an imbalance profile, and the images kept per class chosen with
//! numpy's legacy `RandomState(0)` exactly as that code does, so our CIFAR-10-LT holds the very
//! same images as theirs (IF 100 keeps 12,406 CIFAR-10 training images).

use std::sync::Arc;

use crate::data::{Dataset, Subset};
use crate::error::{ProcoError, Result};

/// How class sizes decay from the largest (class 0) to the smallest (class C-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongTailProfile {
    /// n_c = int(n_max * (1/IF)^(c/(C-1))): the standard CIFAR-LT profile.
    Exponential,
    /// The first C/2 classes keep n_max, the rest int(n_max / IF).
    Step,
}

/// Number of training images kept per class, as LDAM-DRW's `get_img_num_per_cls` computes it.
///
/// `n_max` is the per-class size of the balanced set (as a float, `len(data) / C`; 5000 for
/// CIFAR-10), `imbalance_ratio` the ratio of the largest to the smallest class (100, 50, 10;
/// >= 1). The arithmetic is the reference's own (f64 power, then truncation), so the counts
/// match it bit for bit.
pub fn class_counts(profile: LongTailProfile, n_max: f64, num_classes: usize, imbalance_ratio: f64) -> Result<Vec<usize>> {
    if !(imbalance_ratio.is_finite() && imbalance_ratio >= 1.0) {
        return Err(ProcoError::InvalidConfig { reason: format!("imbalance ratio {imbalance_ratio} must be >= 1 (100 means 100:1)") });
    }
    if num_classes < 2 || !(n_max.is_finite() && n_max >= 1.0) {
        return Err(ProcoError::InvalidConfig { reason: format!("need at least 2 classes of at least 1 image (got {num_classes} x {n_max})") });
    }
    let imb_factor = 1.0 / imbalance_ratio;
    Ok(match profile {
        LongTailProfile::Exponential => (0..num_classes)
            .map(|c| (n_max * imb_factor.powf(c as f64 / (num_classes as f64 - 1.0))) as usize)
            .collect(),
        LongTailProfile::Step => {
            let half = num_classes / 2;
            (0..num_classes).map(|c| if c < half { n_max as usize } else { (n_max * imb_factor) as usize }).collect()
        }
    })
}

/// numpy's legacy `RandomState` generator (MT19937 with `init_genrand` seeding), enough of it
/// to reproduce `np.random.seed(s); np.random.shuffle(a)` on 1-D arrays bit for bit.
#[derive(Clone)]
pub struct NumpyLegacyRng {
    state: [u32; 624],
    pos: usize,
}

impl NumpyLegacyRng {
    /// `np.random.seed(seed)`.
    pub fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32.wrapping_mul(prev ^ (prev >> 30)).wrapping_add(i as u32);
        }
        Self { state, pos: 624 }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..624 {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % 624] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + 397) % 624] ^ (y >> 1) ^ mag;
        }
        self.pos = 0;
    }

    /// The next 32-bit output (MT19937 `genrand_int32`).
    pub fn next_u32(&mut self) -> u32 {
        if self.pos >= 624 {
            self.twist();
        }
        let mut y = self.state[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in 0..=max by masked rejection, numpy's legacy `random_interval`
    /// (32-bit draws; `max` below 2^32 is all the shuffle of an in-memory array needs).
    pub fn random_interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `np.random.shuffle(a)` for a 1-D array: Fisher-Yates from the end with `random_interval`.
    /// Slices longer than u32::MAX elements are refused by the caller's type (CIFAR-scale data only).
    pub fn shuffle<T>(&mut self, a: &mut [T]) {
        for i in (1..a.len()).rev() {
            let j = self.random_interval(i as u32) as usize;
            a.swap(i, j);
        }
    }
}

/// The images LDAM-DRW keeps: with `np.random.seed(seed)`, for each class in ascending order,
/// the indices of that class (ascending) are shuffled and the first `counts[c]` kept.
/// Returns the kept indices per class, in the reference's order.
pub fn ldam_selection(labels: &[u32], counts: &[usize], seed: u32) -> Result<Vec<Vec<usize>>> {
    if labels.len() > u32::MAX as usize {
        return Err(ProcoError::InvalidConfig { reason: "more than 2^32 samples".into() });
    }
    let num_classes = counts.len();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        let slot = by_class.get_mut(l as usize).ok_or_else(|| ProcoError::InvalidLabels {
            reason: format!("label {l} at index {i} is outside the {num_classes} classes of the long-tail profile"),
        })?;
        slot.push(i);
    }
    let mut rng = NumpyLegacyRng::new(seed);
    by_class
        .into_iter()
        .zip(counts)
        .enumerate()
        .map(|(c, (mut idx, &n))| {
            if n > idx.len() {
                return Err(ProcoError::InvalidConfig {
                    reason: format!("class {c} has {} images but the profile asks for {n}", idx.len()),
                });
            }
            // numpy's np.unique skips absent classes: an empty class draws nothing.
            rng.shuffle(&mut idx);
            idx.truncate(n);
            Ok(idx)
        })
        .collect()
}

/// The long-tailed training set of a balanced `dataset`: class counts from `profile` and
/// `imbalance_ratio` with n_max = len / C, images chosen by [`ldam_selection`] with `seed`
/// (the protocol uses 0), in the reference's order (class by class). Returns the subset and
/// the per-class counts.
pub fn long_tailed<D: Dataset>(dataset: Arc<D>, profile: LongTailProfile, imbalance_ratio: f64, seed: u32) -> Result<(Subset<D>, Vec<usize>)> {
    let c = dataset.num_classes();
    let counts = class_counts(profile, dataset.len() as f64 / c as f64, c, imbalance_ratio)?;
    let labels: Vec<u32> = (0..dataset.len()).map(|i| dataset.label(i) as u32).collect();
    let kept = ldam_selection(&labels, &counts, seed)?;
    let subset = Subset::new(dataset, kept.into_iter().flatten().collect())?;
    Ok((subset, counts))
}

/// Sizes of the usual evaluation groups: many-shot (> 100 training images), medium-shot
/// (20..=100) and few-shot (< 20) classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShotGroups {
    /// Classes with more than 100 training images.
    pub many: usize,
    /// Classes with 20 to 100 training images.
    pub medium: usize,
    /// Classes with fewer than 20 training images.
    pub few: usize,
}

/// Which group a class of `count` training images belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shot {
    /// More than 100 training images.
    Many,
    /// 20 to 100.
    Medium,
    /// Fewer than 20.
    Few,
}

impl Shot {
    /// The group of a class with `count` training images.
    pub fn of(count: usize) -> Self {
        if count > 100 {
            Shot::Many
        } else if count < 20 {
            Shot::Few
        } else {
            Shot::Medium
        }
    }

    /// 0, 1, 2 for many, medium, few: the group's position in tables and plots.
    pub fn index(self) -> usize {
        match self {
            Shot::Many => 0,
            Shot::Medium => 1,
            Shot::Few => 2,
        }
    }
}

impl ShotGroups {
    /// Counts the classes of each group.
    pub fn from_counts(counts: &[usize]) -> Self {
        let mut g = ShotGroups { many: 0, medium: 0, few: 0 };
        for &n in counts {
            match Shot::of(n) {
                Shot::Many => g.many += 1,
                Shot::Medium => g.medium += 1,
                Shot::Few => g.few += 1,
            }
        }
        g
    }

    /// Images of an evaluation split per group of the training histogram `train_counts`:
    /// each label of `labels` counts in the group of its class's training size. Labels
    /// outside `train_counts` are not counted.
    pub fn images_per_group(train_counts: &[usize], labels: impl IntoIterator<Item = usize>) -> ShotGroups {
        let mut g = ShotGroups { many: 0, medium: 0, few: 0 };
        for l in labels {
            match train_counts.get(l).map(|&n| Shot::of(n)) {
                Some(Shot::Many) => g.many += 1,
                Some(Shot::Medium) => g.medium += 1,
                Some(Shot::Few) => g.few += 1,
                None => {}
            }
        }
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_reference_outputs() {
        // First outputs of MT19937 seeded with init_genrand(5489) (the reference implementation's default).
        let mut r = NumpyLegacyRng::new(5489);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [3_499_211_612, 581_869_302, 3_890_346_734]);
        // numpy: struct.unpack('<3I', np.random.RandomState(0).bytes(12)).
        let mut r = NumpyLegacyRng::new(0);
        assert_eq!([r.next_u32(), r.next_u32(), r.next_u32()], [2_357_136_044, 2_546_248_239, 3_071_714_933]);
    }

    #[test]
    fn shuffle_matches_numpy() {
        // np.random.seed(0); a = np.arange(10); np.random.shuffle(a)
        let mut a: Vec<u32> = (0..10).collect();
        NumpyLegacyRng::new(0).shuffle(&mut a);
        assert_eq!(a, [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
    }

    #[test]
    fn counts_of_the_standard_profiles() {
        let c = class_counts(LongTailProfile::Exponential, 5000.0, 10, 100.0).unwrap();
        assert_eq!(c, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]);
        assert_eq!(c.iter().sum::<usize>(), 12_406);
        let s = class_counts(LongTailProfile::Step, 500.0, 100, 10.0).unwrap();
        assert_eq!((s[0], s[49], s[50], s[99]), (500, 500, 50, 50));
        assert!(class_counts(LongTailProfile::Exponential, 5000.0, 10, 0.5).is_err());
        assert_eq!(ShotGroups::from_counts(&c), ShotGroups { many: 8, medium: 2, few: 0 });
    }

    #[test]
    fn selection_refuses_impossible_requests() {
        assert!(ldam_selection(&[0, 1, 1], &[2, 1], 0).is_err());
        assert!(ldam_selection(&[0, 5], &[1, 1], 0).is_err());
        let kept = ldam_selection(&[0, 1, 0, 1, 0], &[2, 1], 0).unwrap();
        assert_eq!(kept[0].len(), 2);
        assert!(kept[0].iter().all(|&i| i % 2 == 0));
    }
}
