//! The CIFAR-10 AutoAugment policy as used by the ProCo / LDAM CIFAR code (`CIFAR10Policy` of
//! DeepVoltaire/AutoAugment): 25 sub-policies of two ops each, one sub-policy drawn uniformly
//! per image, each op applied with its own probability.
//!
//! Magnitudes come from ten-step tables indexed 0..=9. Shear, translate, colour, contrast,
//! sharpness and brightness take a random sign; rotate does not. Geometric ops fill with grey
//! (128, 128, 128): shear samples bicubically, translate and rotate take the nearest pixel
//! (rotate through an RGBA composite in the reference, which equals a nearest rotate with grey
//! fill).

use image::RgbImage;
use rand::Rng;

use super::enhance::{brightness, color, contrast, sharpness};
use super::geometry::{rotate, shear_x, shear_y, translate_x, translate_y, Resample};
use super::tone::{autocontrast, equalize, invert, posterize, solarize};

/// Fill colour of the geometric ops.
pub const FILL: [u8; 3] = [128, 128, 128];

/// An AutoAugment operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoAugmentOp {
    /// Horizontal shear by `±m`, m in linspace(0, 0.3, 10); bicubic.
    ShearX,
    /// Vertical shear by `±m`; bicubic.
    ShearY,
    /// Horizontal shift by `±m * width`, m in linspace(0, 150/331, 10); nearest.
    TranslateX,
    /// Vertical shift by `±m * height`; nearest.
    TranslateY,
    /// Counter-clockwise rotation by m degrees, m in linspace(0, 30, 10); nearest.
    Rotate,
    /// Saturation factor `1 ± m`, m in linspace(0, 0.9, 10).
    Color,
    /// Keep round(linspace(8, 4, 10)) bits.
    Posterize,
    /// Invert samples at or above linspace(256, 0, 10).
    Solarize,
    /// Contrast factor `1 ± m`.
    Contrast,
    /// Sharpness factor `1 ± m`.
    Sharpness,
    /// Brightness factor `1 ± m`.
    Brightness,
    /// Per-channel autocontrast.
    AutoContrast,
    /// Per-channel histogram equalisation.
    Equalize,
    /// Invert all samples.
    Invert,
}

/// `np.linspace(start, stop, 10)[idx]` with numpy's arithmetic (`idx * step + start`, the last
/// point exactly `stop`). Indices above 9 are treated as 9.
fn linspace10(start: f64, stop: f64, idx: usize) -> f64 {
    if idx >= 9 {
        stop
    } else {
        idx as f64 * ((stop - start) / 9.0) + start
    }
}

impl AutoAugmentOp {
    /// The magnitude at table index `idx` (0..=9; larger indices act as 9), before any sign.
    /// Ops without a magnitude return 0.
    pub fn magnitude(self, idx: usize) -> f64 {
        use AutoAugmentOp::*;
        match self {
            ShearX | ShearY => linspace10(0.0, 0.3, idx),
            TranslateX | TranslateY => linspace10(0.0, 150.0 / 331.0, idx),
            Rotate => linspace10(0.0, 30.0, idx),
            Color | Contrast | Sharpness | Brightness => linspace10(0.0, 0.9, idx),
            Posterize => linspace10(8.0, 4.0, idx).round_ties_even(),
            Solarize => linspace10(256.0, 0.0, idx),
            AutoContrast | Equalize | Invert => 0.0,
        }
    }

    /// Whether the reference draws a random sign for this op.
    pub fn signed(self) -> bool {
        use AutoAugmentOp::*;
        matches!(
            self,
            ShearX | ShearY | TranslateX | TranslateY | Color | Contrast | Sharpness | Brightness
        )
    }

    /// Applies the op with table index `idx`; `negative` flips the sign of signed ops and is
    /// ignored by the others. Deterministic: this is what the reference computes once its
    /// `random.choice([-1, 1])` is fixed.
    pub fn apply(self, img: &RgbImage, idx: usize, negative: bool) -> RgbImage {
        use AutoAugmentOp::*;
        let m = self.magnitude(idx);
        let s = if negative && self.signed() { -m } else { m };
        match self {
            ShearX => shear_x(img, s, Resample::Bicubic, FILL),
            ShearY => shear_y(img, s, Resample::Bicubic, FILL),
            TranslateX => translate_x(img, s * f64::from(img.width()), Resample::Nearest, FILL),
            TranslateY => translate_y(img, s * f64::from(img.height()), Resample::Nearest, FILL),
            Rotate => rotate(img, s, Resample::Nearest, FILL),
            Color => color(img, 1.0 + s),
            Posterize => posterize(img, m as u8),
            Solarize => solarize(img, m),
            Contrast => contrast(img, 1.0 + s),
            Sharpness => sharpness(img, 1.0 + s),
            Brightness => brightness(img, 1.0 + s),
            AutoContrast => autocontrast(img),
            Equalize => equalize(img),
            Invert => invert(img),
        }
    }
}

/// One op of a sub-policy: applied with probability `prob` at table index `magnitude_idx`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyStep {
    /// Probability of applying the op.
    pub prob: f64,
    /// The operation.
    pub op: AutoAugmentOp,
    /// Magnitude table index, 0..=9.
    pub magnitude_idx: usize,
}

/// Shorthand for the policy table.
const fn step(prob: f64, op: AutoAugmentOp, magnitude_idx: usize) -> PolicyStep {
    PolicyStep {
        prob,
        op,
        magnitude_idx,
    }
}

/// The 25 CIFAR-10 sub-policies, in the reference order.
pub const CIFAR10_POLICY: [[PolicyStep; 2]; 25] = {
    use AutoAugmentOp::*;
    [
        [step(0.1, Invert, 7), step(0.2, Contrast, 6)],
        [step(0.7, Rotate, 2), step(0.3, TranslateX, 9)],
        [step(0.8, Sharpness, 1), step(0.9, Sharpness, 3)],
        [step(0.5, ShearY, 8), step(0.7, TranslateY, 9)],
        [step(0.5, AutoContrast, 8), step(0.9, Equalize, 2)],
        [step(0.2, ShearY, 7), step(0.3, Posterize, 7)],
        [step(0.4, Color, 3), step(0.6, Brightness, 7)],
        [step(0.3, Sharpness, 9), step(0.7, Brightness, 9)],
        [step(0.6, Equalize, 5), step(0.5, Equalize, 1)],
        [step(0.6, Contrast, 7), step(0.6, Sharpness, 5)],
        [step(0.7, Color, 7), step(0.5, TranslateX, 8)],
        [step(0.3, Equalize, 7), step(0.4, AutoContrast, 8)],
        [step(0.4, TranslateY, 3), step(0.2, Sharpness, 6)],
        [step(0.9, Brightness, 6), step(0.2, Color, 8)],
        [step(0.5, Solarize, 2), step(0.0, Invert, 3)],
        [step(0.2, Equalize, 0), step(0.6, AutoContrast, 0)],
        [step(0.2, Equalize, 8), step(0.6, Equalize, 4)],
        [step(0.9, Color, 9), step(0.6, Equalize, 6)],
        [step(0.8, AutoContrast, 4), step(0.2, Solarize, 8)],
        [step(0.1, Brightness, 3), step(0.7, Color, 0)],
        [step(0.4, Solarize, 5), step(0.9, AutoContrast, 3)],
        [step(0.9, TranslateY, 9), step(0.7, TranslateY, 9)],
        [step(0.9, AutoContrast, 2), step(0.8, Solarize, 3)],
        [step(0.8, Equalize, 8), step(0.1, Invert, 3)],
        [step(0.7, TranslateY, 9), step(0.9, AutoContrast, 1)],
    ]
};

/// `CIFAR10Policy()`: draws one of [`CIFAR10_POLICY`] uniformly, then applies each of its two
/// steps when a uniform draw falls below the step's probability, drawing the sign of signed ops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cifar10Policy;

impl Cifar10Policy {
    /// Applies a random sub-policy to `img`.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        let policy = &CIFAR10_POLICY[rng.random_range(0..CIFAR10_POLICY.len())];
        let mut out = img.clone();
        for s in policy {
            if rng.random::<f64>() < s.prob {
                let negative = s.op.signed() && rng.random_bool(0.5);
                out = s.op.apply(&out, s.magnitude_idx, negative);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_tables() {
        assert_eq!(AutoAugmentOp::Posterize.magnitude(0), 8.0);
        assert_eq!(AutoAugmentOp::Posterize.magnitude(2), 7.0);
        assert_eq!(AutoAugmentOp::Posterize.magnitude(7), 5.0);
        assert_eq!(AutoAugmentOp::Posterize.magnitude(9), 4.0);
        assert_eq!(AutoAugmentOp::Solarize.magnitude(0), 256.0);
        assert_eq!(AutoAugmentOp::Solarize.magnitude(9), 0.0);
        assert!((AutoAugmentOp::Rotate.magnitude(2) - 20.0 / 3.0).abs() < 1e-12);
        assert!((AutoAugmentOp::TranslateX.magnitude(9) - 150.0 / 331.0).abs() < 1e-15);
    }

    #[test]
    fn index_zero_signed_ops_are_identity() {
        let img = RgbImage::from_fn(8, 8, |x, y| {
            image::Rgb([(x * 30) as u8, (y * 30) as u8, 77])
        });
        use AutoAugmentOp::*;
        for op in [
            ShearX, ShearY, TranslateX, TranslateY, Rotate, Color, Contrast, Sharpness, Brightness,
        ] {
            assert_eq!(op.apply(&img, 0, true), img, "{op:?}");
        }
    }
}
