//! A scalar whose gradient was computed on the host, handed to LibTorch's autograd as is.
//!
//! Why: tch has no custom autograd function. The ProCo loss computes its value and exact
//! gradient G in one host pass; the node in `csrc/host_gradient.cpp` makes that value a
//! differentiable scalar whose backward returns G itself (scaled in place by the upstream
//! gradient; on the CPU not at all when that is 1), which LibTorch then keeps as the gradient
//! of a contiguous leaf of G's dtype without copying. The alternative built from stock
//! operations, value + <z, G> - <z, G> detached, costs a dot product forward and a fresh
//! N x p product backward (measured: ~35 us of a ~165 us ProCo branch at batch 256 on two
//! cores).

use std::ffi::{c_char, CStr};

use tch::Tensor;
use torch_sys::C_tensor;

use crate::error::{ProcoError, Result};

extern "C" {
    fn proco_attach_host_gradient(features: *const C_tensor, grad: *const C_tensor, value: f64, message: *mut c_char, capacity: usize) -> *mut C_tensor;
}

/// A 0-dimensional tensor holding `value` (in the dtype and on the device of `features`)
/// whose gradient in `features` is `grad`: same shape and device, any floating dtype
/// (autograd casts it to the features' dtype). `grad` is consumed: backward may scale it in
/// place. A second backward pass through the result fails with a LibTorch error unless the
/// first kept the graph (`retain_graph`; each kept pass then hands out a copy of G). Without
/// grad mode, or for features that do not require grad, the result is a plain constant.
pub(crate) fn scalar_with_gradient(features: &Tensor, grad: Tensor, value: f64) -> Result<Tensor> {
    let mut message = [0 as c_char; 1024];
    // SAFETY: both pointers are live tch tensors (tch's C_tensor is a heap `at::Tensor*`);
    // the C++ side takes its own reference to `grad` and never keeps `features`' handle; it
    // returns a new heap `at::Tensor*` that `Tensor::from_ptr` takes ownership of, or null
    // with a NUL-terminated message in `message`. It catches every C++ exception.
    let out = unsafe { proco_attach_host_gradient(features.as_ptr(), grad.as_ptr(), value, message.as_mut_ptr(), message.len()) };
    drop(grad);
    if out.is_null() {
        // SAFETY: the C++ side wrote a NUL-terminated string within `message`.
        let text = unsafe { CStr::from_ptr(message.as_ptr()) }.to_string_lossy().into_owned();
        return Err(ProcoError::Torch(tch::TchError::Torch(text)));
    }
    // SAFETY: a non-null result is a fresh `at::Tensor*` owned by nobody else.
    Ok(unsafe { Tensor::from_ptr(out) })
}
