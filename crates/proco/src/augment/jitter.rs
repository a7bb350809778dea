//! torchvision `ColorJitter` (random order of brightness, contrast, saturation and hue) and
//! `RandomGrayscale`, on the PIL code path.

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::Rng;

use super::color::{adjust_hue_in_place, luma};
use super::enhance::{brightness_in_place, color_in_place, contrast_in_place};
use crate::error::{ProcoError, Result};

/// One of ColorJitter's four adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JitterOp {
    /// `adjust_brightness` (PIL `ImageEnhance.Brightness`).
    Brightness,
    /// `adjust_contrast` (PIL `ImageEnhance.Contrast`).
    Contrast,
    /// `adjust_saturation` (PIL `ImageEnhance.Color`).
    Saturation,
    /// `adjust_hue` (HSV hue-byte shift).
    Hue,
}

/// Parameters of one ColorJitter draw: the order of the ops and each op's factor (`None` when
/// that op is disabled). Applying is deterministic, so tests can fix these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JitterParams {
    /// Application order (a permutation of the four ops, like `torch.randperm(4)`).
    pub order: [JitterOp; 4],
    /// Brightness factor (1 = unchanged).
    pub brightness: Option<f64>,
    /// Contrast factor (1 = unchanged).
    pub contrast: Option<f64>,
    /// Saturation factor (1 = unchanged).
    pub saturation: Option<f64>,
    /// Hue factor in [-0.5, 0.5] (fraction of the hue circle).
    pub hue: Option<f64>,
}

impl JitterParams {
    /// Applies the enabled ops in `order`.
    pub fn apply(&self, img: &RgbImage) -> RgbImage {
        self.apply_owned(img.clone())
    }

    /// [`Self::apply`] on an image the caller gives up: every op works in place.
    pub fn apply_owned(&self, mut out: RgbImage) -> RgbImage {
        for op in self.order {
            match (op, self.brightness, self.contrast, self.saturation, self.hue) {
                (JitterOp::Brightness, Some(f), _, _, _) => brightness_in_place(&mut out, f),
                (JitterOp::Contrast, _, Some(f), _, _) => contrast_in_place(&mut out, f),
                (JitterOp::Saturation, _, _, Some(f), _) => color_in_place(&mut out, f),
                (JitterOp::Hue, _, _, _, Some(f)) => adjust_hue_in_place(&mut out, f),
                _ => {}
            }
        }
        out
    }
}

/// `ColorJitter(brightness, contrast, saturation, hue)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColorJitter {
    brightness: Option<(f64, f64)>,
    contrast: Option<(f64, f64)>,
    saturation: Option<(f64, f64)>,
    hue: Option<(f64, f64)>,
}

/// torchvision's `_check_input` for the multiplicative factors: `[max(0, 1 - v), 1 + v]`,
/// disabled when that is `[1, 1]`.
fn factor_range(name: &str, v: f64) -> Result<Option<(f64, f64)>> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(ProcoError::InvalidConfig {
            reason: format!("ColorJitter {name} must be a finite non-negative number, got {v}"),
        });
    }
    Ok((v > 0.0).then(|| ((1.0 - v).max(0.0), 1.0 + v)))
}

impl ColorJitter {
    /// Jitter with the torchvision meaning of each strength: brightness, contrast and saturation
    /// factors are drawn from `[max(0, 1 - v), 1 + v]`, the hue factor from `[-hue, hue]`; a
    /// strength of 0 disables that op.
    ///
    /// Fails for negative or non-finite strengths, or `hue > 0.5`.
    pub fn new(brightness: f64, contrast: f64, saturation: f64, hue: f64) -> Result<Self> {
        if !(hue.is_finite() && (0.0..=0.5).contains(&hue)) {
            return Err(ProcoError::InvalidConfig {
                reason: format!("ColorJitter hue must lie in [0, 0.5], got {hue}"),
            });
        }
        Ok(Self {
            brightness: factor_range("brightness", brightness)?,
            contrast: factor_range("contrast", contrast)?,
            saturation: factor_range("saturation", saturation)?,
            hue: (hue > 0.0).then_some((-hue, hue)),
        })
    }

    /// The strength used by ProCo's contrastive views (and SimCLR / MoCo v2):
    /// `ColorJitter(0.4, 0.4, 0.4, 0.1)`.
    pub fn proco() -> Self {
        // Written as torchvision derives it, so it equals `new(0.4, 0.4, 0.4, 0.1)` exactly.
        let factors = Some((1.0 - 0.4, 1.0 + 0.4));
        Self {
            brightness: factors,
            contrast: factors,
            saturation: factors,
            hue: Some((-0.1, 0.1)),
        }
    }

    /// The same jitter with the hue op disabled (`hue = 0`), as in ProCo's ImageNet-LT
    /// classification view `ColorJitter(0.4, 0.4, 0.4, 0.0)`.
    pub fn without_hue(self) -> Self {
        Self { hue: None, ..self }
    }

    /// Draws an op order and the factors (torchvision `ColorJitter.get_params`).
    pub fn sample<R: Rng>(&self, rng: &mut R) -> JitterParams {
        let mut order = [
            JitterOp::Brightness,
            JitterOp::Contrast,
            JitterOp::Saturation,
            JitterOp::Hue,
        ];
        order.shuffle(rng);
        let mut draw =
            |r: Option<(f64, f64)>| r.map(|(lo, hi)| lo + (hi - lo) * rng.random::<f64>());
        JitterParams {
            order,
            brightness: draw(self.brightness),
            contrast: draw(self.contrast),
            saturation: draw(self.saturation),
            hue: draw(self.hue),
        }
    }

    /// Draws parameters and applies them.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        self.sample(rng).apply(img)
    }

    /// [`Self::apply`] on an image the caller gives up (no copy).
    pub fn apply_owned<R: Rng>(&self, img: RgbImage, rng: &mut R) -> RgbImage {
        self.sample(rng).apply_owned(img)
    }
}

/// `RandomGrayscale(p)`: with probability `p`, the 3-channel luma image (in place).
pub fn random_grayscale<R: Rng>(mut img: RgbImage, p: f64, rng: &mut R) -> RgbImage {
    if rng.random::<f64>() < p {
        for px in img.chunks_exact_mut(3) {
            px.fill(luma(px[0], px[1], px[2]));
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn ranges_follow_torchvision() {
        let j = ColorJitter::new(0.4, 1.5, 0.0, 0.1).unwrap();
        assert_eq!(j.brightness, Some((1.0 - 0.4, 1.0 + 0.4)));
        assert_eq!(j.contrast, Some((0.0, 2.5)));
        assert_eq!(j.saturation, None);
        assert_eq!(j.hue, Some((-0.1, 0.1)));
        assert!(ColorJitter::new(0.4, 0.4, 0.4, 0.6).is_err());
        assert!(ColorJitter::new(-0.1, 0.4, 0.4, 0.1).is_err());
    }

    #[test]
    fn samples_stay_in_range() {
        let j = ColorJitter::new(0.4, 0.4, 0.4, 0.1).unwrap();
        assert_eq!(j, ColorJitter::proco());
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let p = j.sample(&mut rng);
            let mut sorted = p.order.map(|o| o as usize);
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
            assert!(p.brightness.is_some_and(|f| (0.6..1.4).contains(&f)));
            assert!(p.hue.is_some_and(|f| (-0.1..0.1).contains(&f)));
        }
    }
}
