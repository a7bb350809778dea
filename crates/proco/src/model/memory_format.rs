//! Channels-last (NHWC) memory format for convolution weights and image batches.
//!
//! Why: LibTorch's CPU convolutions (oneDNN) work in NHWC; an NCHW tensor is reordered into it
//! and back on every convolution, forward and backward. Keeping the weights and activations
//! channels-last removes those reorders: the same switch makes PyTorch's ResNet-32 training
//! step on this project's 2-core machine about 1.4x faster (`bench/channels_last_pytorch.py`,
//! BENCHMARKS.md). The values are the same up to the convolutions' rounding; only the strides
//! differ. tch has no memory-format argument, so the format is made the way PyTorch represents
//! it: an [N, H, W, C] contiguous buffer seen through a permutation as [N, C, H, W].

use tch::nn::VarStore;
use tch::Tensor;

use crate::error::Result;

/// Whether a 4-D tensor is laid out channels-last (strides [HWC, 1, WC, C] for [N, C, H, W]).
/// Tensors of other ranks are never channels-last.
pub fn is_channels_last(t: &Tensor) -> bool {
    let size = t.size();
    if size.len() != 4 {
        return false;
    }
    let (c, h, w) = (size[1], size[2], size[3]);
    let stride = t.stride();
    // Dimensions of extent 1 may carry any stride.
    let ok = |dim: usize, expected: i64| size[dim] == 1 || stride[dim] == expected;
    ok(1, 1) && ok(3, c) && ok(2, w * c) && ok(0, h * w * c)
}

/// The same values as `t` (a 4-D [N, C, H, W] tensor) in channels-last layout; a shallow copy
/// when it already is, `t` unchanged when it is not 4-D.
pub fn to_channels_last(t: &Tensor) -> Result<Tensor> {
    if t.dim() != 4 || is_channels_last(t) {
        return Ok(t.shallow_clone());
    }
    Ok(t.f_permute([0, 2, 3, 1])?.f_contiguous()?.f_permute([0, 3, 1, 2])?)
}

/// Converts every 4-D variable of `vs` (the convolution weights) to channels-last in place.
/// Modules hold shallow copies of the same tensors, so they see the new layout; values and
/// gradient tracking are unchanged.
pub fn convert_var_store(vs: &VarStore) -> Result<()> {
    tch::no_grad(|| -> Result<()> {
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 && !is_channels_last(&var) {
                let data = to_channels_last(&var.detach())?;
                var.f_set_data(&data)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn conversion_keeps_values_and_sets_strides() {
        let t = Tensor::arange(2 * 3 * 4 * 5, (Kind::Float, Device::Cpu)).view([2, 3, 4, 5]);
        assert!(!is_channels_last(&t));
        let cl = to_channels_last(&t).unwrap();
        assert!(is_channels_last(&cl));
        assert_eq!(cl.stride(), vec![60, 1, 15, 3]);
        assert_eq!(f64::try_from((&cl - &t).abs().max()).unwrap(), 0.0);
        assert!(!is_channels_last(&Tensor::zeros([3, 4], (Kind::Float, Device::Cpu))));
    }

    #[test]
    fn var_store_conversion_reaches_the_module() {
        let vs = VarStore::new(Device::Cpu);
        let conv = tch::nn::conv2d(vs.root(), 3, 8, 3, Default::default());
        let before = conv.ws.copy();
        convert_var_store(&vs).unwrap();
        assert!(is_channels_last(&conv.ws), "module weight strides {:?}", conv.ws.stride());
        assert!(conv.ws.requires_grad());
        assert_eq!(f64::try_from((&conv.ws - &before).abs().max()).unwrap(), 0.0);
    }
}
