//! ImageNet-style ResNet-50 and ResNeXt-50 (32x4d) backbones (He et al. 2016; Xie et al. 2017),
//! torchvision's layout: 7x7 stem, max-pool, four stages of bottleneck blocks [3, 4, 6, 3] with
//! the stride on the 3x3 convolution, projection shortcuts, global average pooling to 2048-d.
//! Used for ImageNet-LT and iNaturalist 2018.

use tch::nn::{self, ModuleT};
use tch::Tensor;

fn conv(vs: nn::Path, c_in: i64, c_out: i64, k: i64, stride: i64, groups: i64) -> nn::Conv2D {
    let config = nn::ConvConfig { stride, padding: k / 2, groups, bias: false, ws_init: nn::init::DEFAULT_KAIMING_NORMAL, ..Default::default() };
    nn::conv2d(vs, c_in, c_out, k, config)
}

fn bn(vs: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(vs, c, Default::default())
}

/// 1x1 reduce, 3x3 (grouped, strided), 1x1 expand by 4, with a projection shortcut when the
/// shape changes.
#[derive(Debug)]
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let out = x
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu()
            .apply(&self.conv2)
            .apply_t(&self.bn2, train)
            .relu()
            .apply(&self.conv3)
            .apply_t(&self.bn3, train);
        let short = match &self.shortcut {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (out + short).relu()
    }
}

/// A bottleneck ResNet / ResNeXt backbone; `forward_t` maps [N, 3, H, W] to [N, 2048].
#[derive(Debug)]
pub struct ResNetImageNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    blocks: Vec<Bottleneck>,
}

impl ResNetImageNet {
    /// Width of the pooled feature.
    pub const FEATURE_DIM: i64 = 2048;

    fn build(vs: &nn::Path, groups: i64, width_per_group: i64) -> Self {
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (stage, (n, planes)) in [(3, 64i64), (4, 128), (6, 256), (3, 512)].into_iter().enumerate() {
            let width = planes * width_per_group / 64 * groups;
            let c_out = planes * 4;
            for b in 0..n {
                let stride = if stage > 0 && b == 0 { 2 } else { 1 };
                let p = vs / format!("layer{}", stage + 1) / b;
                let shortcut = (stride != 1 || c_in != c_out).then(|| (conv(&p / "downsample" / 0, c_in, c_out, 1, stride, 1), bn(&p / "downsample" / 1, c_out)));
                blocks.push(Bottleneck {
                    conv1: conv(&p / "conv1", c_in, width, 1, 1, 1),
                    bn1: bn(&p / "bn1", width),
                    conv2: conv(&p / "conv2", width, width, 3, stride, groups),
                    bn2: bn(&p / "bn2", width),
                    conv3: conv(&p / "conv3", width, c_out, 1, 1, 1),
                    bn3: bn(&p / "bn3", c_out),
                    shortcut,
                });
                c_in = c_out;
            }
        }
        Self { conv1: conv(vs / "conv1", 3, 64, 7, 2, 1), bn1: bn(vs / "bn1", 64), blocks }
    }

    /// ResNet-50.
    pub fn resnet50(vs: &nn::Path) -> Self {
        Self::build(vs, 1, 64)
    }

    /// ResNeXt-50 32x4d.
    pub fn resnext50_32x4d(vs: &nn::Path) -> Self {
        Self::build(vs, 32, 4)
    }
}

impl ModuleT for ResNetImageNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.apply(&self.conv1).apply_t(&self.bn1, train).relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for b in &self.blocks {
            h = b.forward_t(&h, train);
        }
        h.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn params(vs: &nn::VarStore) -> i64 {
        vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    #[test]
    fn torchvision_parameter_counts_and_shapes() {
        // torchvision: resnet50 25,557,032 and resnext50_32x4d 25,028,904 parameters, of which
        // the 1000-way fc holds 2,049,000.
        let vs = nn::VarStore::new(Device::Cpu);
        let net = ResNetImageNet::resnet50(&vs.root());
        assert_eq!(params(&vs), 25_557_032 - 2_049_000);
        let x = Tensor::randn([2, 3, 64, 64], (Kind::Float, Device::Cpu));
        assert_eq!(net.forward_t(&x, false).size(), [2, 2048]);
        let vs = nn::VarStore::new(Device::Cpu);
        let _ = ResNetImageNet::resnext50_32x4d(&vs.root());
        assert_eq!(params(&vs), 25_028_904 - 2_049_000);
    }
}
