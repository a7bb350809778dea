//! RandAugment as in the ProCo / PaCo ImageNet-LT code (`rand_augment_transform(
//! "rand-n2-m10-mstd0.5", {translate_const: 100, img_mean: (124, 116, 104)})`, a variant of
//! timm's): `n` ops drawn uniformly with replacement from 16; each op is skipped when a uniform
//! draw exceeds a second uniform draw from [0.2, 0.8]; its magnitude is drawn from
//! N(m, mstd) and clipped to [0, 15]; rotate, shear and translate negate with probability 1/2
//! and sample bilinearly or bicubically at random, filling with the ImageNet mean colour.
//!
//! Level-to-argument mapping (level l, `MAX_LEVEL` 10): rotate `30 l/10` degrees, posterize
//! `int(4 l/10)` bits kept, solarize threshold `int(256 l/10)`, solarize-add `int(110 l/10)`
//! below 128, colour/contrast/brightness/sharpness factor `1.8 l/10 + 0.1`, shear `0.3 l/10`,
//! translate `translate_const * l/10` pixels, cutout half-size `int(cutout_const * l/10)`.

use image::{Rgb, RgbImage};
use rand::Rng;

use super::enhance::{brightness, color, contrast, sharpness};
use super::geometry::{rotate, shear_x, shear_y, translate_x, translate_y, Resample};
use super::tone::{autocontrast, equalize, invert, posterize, solarize, solarize_add};
use crate::error::{ProcoError, Result};

/// The level that maps to the nominal maximum of each op's range.
const MAX_LEVEL: f64 = 10.0;
/// Magnitudes drawn with noise are clipped to [0, `CLIP_LEVEL`].
const CLIP_LEVEL: f64 = 15.0;

/// The 16 RandAugment operations, in the reference's list order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RandAugmentOp {
    /// Per-channel autocontrast.
    AutoContrast,
    /// Per-channel equalisation.
    Equalize,
    /// Inversion.
    Invert,
    /// Rotation by ±30 l/10 degrees.
    Rotate,
    /// Keep `int(4 l/10)` bits (8 or more: unchanged).
    Posterize,
    /// Invert samples at or above `int(256 l/10)`.
    Solarize,
    /// Add `int(110 l/10)` to samples below 128.
    SolarizeAdd,
    /// Saturation factor `1.8 l/10 + 0.1`.
    Color,
    /// Contrast factor `1.8 l/10 + 0.1`.
    Contrast,
    /// Brightness factor `1.8 l/10 + 0.1`.
    Brightness,
    /// Sharpness factor `1.8 l/10 + 0.1`.
    Sharpness,
    /// Horizontal shear ±0.3 l/10.
    ShearX,
    /// Vertical shear ±0.3 l/10.
    ShearY,
    /// Horizontal shift by ±translate_const l/10 pixels.
    TranslateX,
    /// Vertical shift by ±translate_const l/10 pixels.
    TranslateY,
    /// Fill a square of half-size `int(cutout_const l/10)` with the fill colour.
    Cutout,
}

/// All ops, in the order the reference draws from.
pub const RAND_AUGMENT_OPS: [RandAugmentOp; 16] = {
    use RandAugmentOp::*;
    [
        AutoContrast,
        Equalize,
        Invert,
        Rotate,
        Posterize,
        Solarize,
        SolarizeAdd,
        Color,
        Contrast,
        Brightness,
        Sharpness,
        ShearX,
        ShearY,
        TranslateX,
        TranslateY,
        Cutout,
    ]
};

/// Parsed `rand-...` configuration string.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandAugmentConfig {
    /// Ops applied per image (`n`, default 2).
    pub num_layers: usize,
    /// Mean magnitude level (`m`, default 10).
    pub magnitude: f64,
    /// Standard deviation of the magnitude noise (`mstd`, default 0: fixed magnitude).
    pub magnitude_std: f64,
}

impl Default for RandAugmentConfig {
    fn default() -> Self {
        Self {
            num_layers: 2,
            magnitude: MAX_LEVEL,
            magnitude_std: 0.0,
        }
    }
}

impl RandAugmentConfig {
    /// Parses timm's config syntax: `rand` followed by dash-separated sections `n<int>`,
    /// `m<int>`, `mstd<float>`, `inc<int>` (accepted, no effect, as in the reference) or
    /// `w<int>` (rejected: weighted op choice is not implemented). Sections without a digit are
    /// ignored like the reference does. Example: `rand-n2-m10-mstd0.5`.
    ///
    /// Fails on a missing `rand` prefix, unknown keys, unparsable numbers, negative or
    /// non-finite magnitude/std, or `w`.
    pub fn parse(config: &str) -> Result<Self> {
        let bad = |reason: String| ProcoError::InvalidConfig {
            reason: format!("RandAugment config {config:?}: {reason}"),
        };
        let mut parts = config.split('-');
        if parts.next() != Some("rand") {
            return Err(bad("must start with \"rand\"".into()));
        }
        let mut cfg = Self::default();
        for part in parts {
            let Some(split) = part.find(|c: char| c.is_ascii_digit()) else {
                continue;
            };
            let (key, val) = part.split_at(split);
            let num = |what: &str| -> Result<f64> {
                val.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| {
                        bad(format!("{what} must be a non-negative number, got {val:?}"))
                    })
            };
            let int = |what: &str| -> Result<usize> {
                val.parse::<usize>().map_err(|_| {
                    bad(format!(
                        "{what} must be a non-negative integer, got {val:?}"
                    ))
                })
            };
            match key {
                "mstd" => cfg.magnitude_std = num("mstd")?,
                "m" => cfg.magnitude = int("m")? as f64,
                "n" => cfg.num_layers = int("n")?,
                "inc" => {
                    int("inc")?;
                }
                "w" => return Err(bad("weighted op choice (w) is not supported".into())),
                _ => return Err(bad(format!("unknown section {part:?}"))),
            }
        }
        Ok(cfg)
    }
}

/// One fully drawn op: everything random fixed, so [`RandAugment::apply_step`] is deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandAugmentStep {
    /// The operation.
    pub op: RandAugmentOp,
    /// Magnitude level after noise and clipping, in [0, 15].
    pub level: f64,
    /// Negate the signed argument (rotate, shear, translate).
    pub negate: bool,
    /// Interpolation of rotate, shear and translate.
    pub resample: Resample,
    /// Cutout centre draws in [0, 1): the reference's `np.random.uniform(w)` is a uniform draw
    /// between `w` and 1, evaluated as `w + (1 - w) u`.
    pub cutout_u: (f64, f64),
}

/// A RandAugment transform.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    config: RandAugmentConfig,
    translate_const: f64,
    cutout_const: f64,
    fill: [u8; 3],
}

impl RandAugment {
    /// RandAugment with `config`, translation range `translate_const` pixels at level 10,
    /// cutout half-size `cutout_const` at level 10 and geometric/cutout fill colour `fill`.
    ///
    /// Fails for negative or non-finite constants.
    pub fn new(
        config: RandAugmentConfig,
        translate_const: f64,
        cutout_const: f64,
        fill: [u8; 3],
    ) -> Result<Self> {
        if !(translate_const.is_finite()
            && translate_const >= 0.0
            && cutout_const.is_finite()
            && cutout_const >= 0.0)
        {
            return Err(ProcoError::InvalidConfig {
                reason: format!(
                    "RandAugment constants must be finite and non-negative, got translate {translate_const}, cutout {cutout_const}"
                ),
            });
        }
        Ok(Self {
            config,
            translate_const,
            cutout_const,
            fill,
        })
    }

    /// The ProCo ImageNet-LT recipe: `rand-n2-m10-mstd0.5`, translate_const `int(224 * 0.45)`
    /// = 100, fill = ImageNet mean (124, 116, 104), cutout_const 40 (timm's default; the
    /// reference's hyper-parameters omit it).
    pub fn imagenet_lt() -> Self {
        Self {
            config: RandAugmentConfig {
                num_layers: 2,
                magnitude: 10.0,
                magnitude_std: 0.5,
            },
            translate_const: 100.0,
            cutout_const: 40.0,
            fill: [124, 116, 104],
        }
    }

    /// The configuration.
    pub fn config(&self) -> RandAugmentConfig {
        self.config
    }

    /// Draws the steps for one image: `num_layers` ops with replacement, each kept with the
    /// reference's random probability in [0.2, 0.8] (skipped ops are absent from the result).
    pub fn sample<R: Rng>(&self, rng: &mut R) -> Vec<RandAugmentStep> {
        let mut steps = Vec::with_capacity(self.config.num_layers);
        for _ in 0..self.config.num_layers {
            let op = RAND_AUGMENT_OPS[rng.random_range(0..RAND_AUGMENT_OPS.len())];
            let threshold = 0.2 + 0.6 * rng.random::<f64>();
            if rng.random::<f64>() > threshold {
                continue;
            }
            let mut level = self.config.magnitude;
            if self.config.magnitude_std > 0.0 {
                level += self.config.magnitude_std * standard_normal(rng);
            }
            let level = level.clamp(0.0, CLIP_LEVEL);
            let negate = rng.random_bool(0.5);
            let resample = if rng.random_bool(0.5) {
                Resample::Bilinear
            } else {
                Resample::Bicubic
            };
            let cutout_u = (rng.random::<f64>(), rng.random::<f64>());
            steps.push(RandAugmentStep {
                op,
                level,
                negate,
                resample,
                cutout_u,
            });
        }
        steps
    }

    /// Applies one drawn step.
    pub fn apply_step(&self, img: &RgbImage, step: &RandAugmentStep) -> RgbImage {
        use RandAugmentOp::*;
        let frac = step.level / MAX_LEVEL;
        let signed = |v: f64| if step.negate { -v } else { v };
        let factor = frac * 1.8 + 0.1;
        let (r, fill) = (step.resample, self.fill);
        match step.op {
            AutoContrast => autocontrast(img),
            Equalize => equalize(img),
            Invert => invert(img),
            Rotate => rotate(img, signed(frac * 30.0), r, fill),
            Posterize => posterize(img, (frac * 4.0) as u8),
            Solarize => solarize(img, f64::from((frac * 256.0) as u32)),
            SolarizeAdd => solarize_add(img, (frac * 110.0).min(255.0) as u8, 128.0),
            Color => color(img, factor),
            Contrast => contrast(img, factor),
            Brightness => brightness(img, factor),
            Sharpness => sharpness(img, factor),
            ShearX => shear_x(img, signed(frac * 0.3), r, fill),
            ShearY => shear_y(img, signed(frac * 0.3), r, fill),
            TranslateX => translate_x(img, signed(frac * self.translate_const), r, fill),
            TranslateY => translate_y(img, signed(frac * self.translate_const), r, fill),
            Cutout => self.cutout(img, (frac * self.cutout_const) as u32, step.cutout_u),
        }
    }

    /// The reference cutout: corner `int(max(0, c - pixels))` per axis with `c = dim + (1 - dim)
    /// u`, square of side `2 pixels` drawn inclusively (PIL `ImageDraw.rectangle`), clipped.
    fn cutout(&self, img: &RgbImage, pixels: u32, u: (f64, f64)) -> RgbImage {
        let mut out = img.clone();
        if img.width() == 0 || img.height() == 0 {
            return out;
        }
        let (w, h) = (f64::from(img.width()), f64::from(img.height()));
        let corner =
            |dim: f64, u: f64| ((dim + (1.0 - dim) * u) - f64::from(pixels)).max(0.0) as u32;
        let (x0, y0) = (corner(w, u.0), corner(h, u.1));
        // Inclusive far corner, clipped to the image (empty when the corner lies outside).
        let x1 = (x0 + 2 * pixels).min(img.width().saturating_sub(1));
        let y1 = (y0 + 2 * pixels).min(img.height().saturating_sub(1));
        for y in y0..=y1 {
            for x in x0..=x1 {
                out.put_pixel(x, y, Rgb(self.fill));
            }
        }
        out
    }

    /// Draws and applies the steps for one image.
    pub fn apply<R: Rng>(&self, img: &RgbImage, rng: &mut R) -> RgbImage {
        self.sample(rng)
            .iter()
            .fold(img.clone(), |acc, s| self.apply_step(&acc, s))
    }
}

/// A standard normal draw (Box-Muller), for the magnitude noise.
fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.random::<f64>(); // in (0, 1]: the log is finite
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn parses_proco_string() {
        let c = RandAugmentConfig::parse("rand-n2-m10-mstd0.5").unwrap();
        assert_eq!(
            c,
            RandAugmentConfig {
                num_layers: 2,
                magnitude: 10.0,
                magnitude_std: 0.5
            }
        );
        let c = RandAugmentConfig::parse("rand-mstd1-inc1").unwrap();
        assert_eq!(
            c,
            RandAugmentConfig {
                num_layers: 2,
                magnitude: 10.0,
                magnitude_std: 1.0
            }
        );
        for bad in [
            "",
            "rnd-n2",
            "rand-n2-x3",
            "rand-m-1",
            "rand-w0",
            "rand-mstd1e999",
        ] {
            assert!(RandAugmentConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn levels_are_clipped() {
        let ra = RandAugment::new(
            RandAugmentConfig {
                num_layers: 50,
                magnitude: 14.0,
                magnitude_std: 5.0,
            },
            100.0,
            40.0,
            [0, 0, 0],
        )
        .unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for s in ra.sample(&mut rng) {
            assert!((0.0..=CLIP_LEVEL).contains(&s.level));
        }
    }

    #[test]
    fn cutout_fills_inclusive_square() {
        let ra = RandAugment::imagenet_lt();
        let img = RgbImage::new(40, 30);
        // u = 1 puts the centre at 1: corner max(0, 1 - 4) = 0, square 0..=8.
        let out = ra.cutout(&img, 4, (1.0, 1.0));
        let filled = out.pixels().filter(|p| p.0 == [124, 116, 104]).count();
        assert_eq!(filled, 9 * 9);
    }

    proptest! {
        #[test]
        fn parse_round_trips(n in 0usize..20, m in 0usize..31, std in 0u32..40) {
            let s = format!("rand-m{m}-n{n}-mstd{}", f64::from(std) / 10.0);
            let c = RandAugmentConfig::parse(&s).unwrap();
            prop_assert_eq!(c.num_layers, n);
            prop_assert_eq!(c.magnitude, m as f64);
            prop_assert!((c.magnitude_std - f64::from(std) / 10.0).abs() < 1e-12);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,24}") {
            let _ = RandAugmentConfig::parse(&s);
        }
    }
}
