//! CIFAR ResNet (He et al. 2016, section 4.2) as used by LDAM-DRW and ProCo: a 3x3 stem of 16
//! channels, three stages of n BasicBlocks (16, 32, 64 channels; stride 2 at stages 2 and 3)
//! with option-A shortcuts (subsample by 2, zero-pad the new channels), global average pooling
//! to a 64-d feature. ResNet-32 is n = 5. Convolutions use Kaiming-normal initialisation.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::error::{ProcoError, Result};

fn conv3x3(vs: nn::Path, c_in: i64, c_out: i64, stride: i64) -> nn::Conv2D {
    let config = nn::ConvConfig { stride, padding: 1, bias: false, ws_init: nn::init::DEFAULT_KAIMING_NORMAL, ..Default::default() };
    nn::conv2d(vs, c_in, c_out, 3, config)
}

/// Two 3x3 conv + BN layers with an identity or option-A shortcut.
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    /// Channels to zero-pad on each side when the block changes shape (option A).
    pad: Option<i64>,
}

impl BasicBlock {
    fn new(vs: nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        let pad = (stride != 1 || c_in != c_out).then_some((c_out - c_in) / 2);
        Self {
            conv1: conv3x3(&vs / "conv1", c_in, c_out, stride),
            bn1: nn::batch_norm2d(&vs / "bn1", c_out, Default::default()),
            conv2: conv3x3(&vs / "conv2", c_out, c_out, 1),
            bn2: nn::batch_norm2d(&vs / "bn2", c_out, Default::default()),
            pad,
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = x.apply(&self.conv1).apply_t(&self.bn1, train).relu().apply(&self.conv2).apply_t(&self.bn2, train);
        let shortcut = match self.pad {
            None => x.shallow_clone(),
            Some(p) => x.slice(2, 0, None, 2).slice(3, 0, None, 2).constant_pad_nd([0, 0, 0, 0, p, p]),
        };
        (out + shortcut).relu()
    }
}

/// The CIFAR ResNet backbone; `forward_t` maps [N, 3, H, W] images to [N, 64] features.
#[derive(Debug)]
pub struct ResNetCifar {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<BasicBlock>,
}

impl ResNetCifar {
    /// Width of the pooled feature.
    pub const FEATURE_DIM: i64 = 64;

    /// A CIFAR ResNet of depth 6n + 2 (32 for n = 5), with parameters under `vs`.
    pub fn new(vs: &nn::Path, depth: usize) -> Result<Self> {
        if depth < 8 || (depth - 2) % 6 != 0 {
            return Err(ProcoError::InvalidConfig { reason: format!("CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth}") });
        }
        let n = (depth - 2) / 6;
        let mut blocks = Vec::with_capacity(3 * n);
        let mut c_in = 16;
        for (stage, c_out) in [16i64, 32, 64].into_iter().enumerate() {
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                blocks.push(BasicBlock::new(vs / format!("layer{}", stage + 1) / b, c_in, c_out, stride));
                c_in = c_out;
            }
        }
        Ok(Self { conv1: conv3x3(vs / "conv1", 3, 16, 1), bn1: nn::batch_norm2d(vs / "bn1", 16, Default::default()), blocks })
    }

    /// ResNet-32, the CIFAR-LT backbone.
    pub fn resnet32(vs: &nn::Path) -> Self {
        // Depth 32 is valid by construction.
        Self::new(vs, 32).unwrap_or_else(|_| unreachable!("32 = 6 * 5 + 2"))
    }
}

impl ModuleT for ResNetCifar {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        for block in &self.blocks {
            h = block.forward_t(&h, train);
        }
        h.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}
