//! bf16 autocast regions: LibTorch's autocast (`torch.autocast(device, torch.bfloat16)`) for
//! the CPU or CUDA, switched on around a forward pass. Convolutions and matrix products run in
//! bfloat16; the weights stay f32, and ops on LibTorch's f32 list (reductions, softmax, the
//! losses) run in f32.
//!
//! Why our own shim (`csrc/autocast.cpp`): tch exposes only LibTorch's old CUDA-only
//! `set_enabled`, not the per-device switch and dtype.

use std::ffi::{c_char, c_int, CStr};

use tch::Device;

use crate::error::{ProcoError, Result};

extern "C" {
    fn proco_autocast_enter(device: c_int, was_enabled: *mut c_int, previous_dtype: *mut c_int, message: *mut c_char, capacity: usize) -> c_int;
    fn proco_autocast_leave(device: c_int, was_enabled: c_int, previous_dtype: c_int, message: *mut c_char, capacity: usize) -> c_int;
}

/// While alive, LibTorch autocasts to bfloat16 on one device type (for this thread); dropping
/// it restores the state before.
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastGuard {
    device: c_int,
    was_enabled: c_int,
    previous_dtype: c_int,
    /// LibTorch's autocast state is per thread: the guard must end on the thread it began on.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// LibTorch's device code of the shim: 0 CPU, 1 CUDA; other devices have no bf16 autocast here.
fn device_code(device: Device) -> Result<c_int> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        other => Err(ProcoError::InvalidConfig { reason: format!("bf16 autocast is available on the CPU and CUDA, not on {other:?}; use precision fp32 there") }),
    }
}

impl AutocastGuard {
    /// Starts bf16 autocast for `device`'s type (CPU, or CUDA for any `cuda:N`).
    ///
    /// # Errors
    /// [`ProcoError::InvalidConfig`] for a device other than the CPU or CUDA;
    /// [`ProcoError::Torch`] if LibTorch refuses (a build without that device's autocast).
    pub fn bf16(device: Device) -> Result<Self> {
        let mut message = [0 as c_char; 512];
        let (mut was_enabled, mut previous_dtype) = (0, 0);
        let code = device_code(device)?;
        // SAFETY: plain values and a buffer of the stated capacity; the C++ side catches
        // every exception and writes a NUL-terminated message on failure.
        let rc = unsafe { proco_autocast_enter(code, &mut was_enabled, &mut previous_dtype, message.as_mut_ptr(), message.len()) };
        if rc != 0 {
            // SAFETY: the C++ side wrote a NUL-terminated string within `message`.
            let text = unsafe { CStr::from_ptr(message.as_ptr()) }.to_string_lossy().into_owned();
            return Err(ProcoError::Torch(tch::TchError::Torch(text)));
        }
        Ok(Self { device: code, was_enabled, previous_dtype, _not_send: std::marker::PhantomData })
    }
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        let mut message = [0 as c_char; 512];
        // SAFETY: as in `bf16`; a failure to restore cannot be reported from drop, and the
        // C++ side only sets flags LibTorch itself provides.
        let _ = unsafe { proco_autocast_leave(self.device, self.was_enabled, self.previous_dtype, message.as_mut_ptr(), message.len()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn matrix_products_run_in_bf16_inside_the_region_only() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        {
            let _guard = AutocastGuard::bf16(Device::Cpu).unwrap();
            assert_eq!(a.matmul(&a).kind(), Kind::BFloat16);
        }
        assert_eq!(a.matmul(&a).kind(), Kind::Float);
    }
}
