// LibTorch's autocast for one device type and dtype (tch exposes only the CUDA switch of
// older LibTorch): entered before a forward pass, left after it, as
// `torch.autocast(device_type, dtype)` does in Python.
//
// Called from Rust (crates/proco/src/model/autocast.rs) through a C ABI; every C++ exception
// is caught here and returned as a message.

#include <ATen/autocast_mode.h>

#include "c_error.h"

namespace {

at::DeviceType device_of(int device) { return device == 1 ? at::kCUDA : at::kCPU; }

}  // namespace

extern "C" {

// Enables autocast to bfloat16 on `device` (0 CPU, 1 CUDA). Writes the previous state to
// `was_enabled` and `previous_dtype` (a c10::ScalarType value) for `proco_autocast_leave`.
// Returns 0, or 1 with a NUL-terminated message in `message`.
int proco_autocast_enter(int device, int* was_enabled, int* previous_dtype, char* message, size_t capacity) {
  return proco::guarded(
      [&]() {
        auto type = device_of(device);
        *was_enabled = at::autocast::is_autocast_enabled(type) ? 1 : 0;
        *previous_dtype = static_cast<int>(at::autocast::get_autocast_dtype(type));
        at::autocast::set_autocast_dtype(type, at::kBFloat16);
        at::autocast::set_autocast_enabled(type, true);
        at::autocast::increment_nesting();
        return 0;
      },
      1, message, capacity);
}

// Restores the state saved by `proco_autocast_enter`; clears the cast cache when the
// outermost region ends. Returns 0, or 1 with a NUL-terminated message in `message`.
int proco_autocast_leave(int device, int was_enabled, int previous_dtype, char* message, size_t capacity) {
  return proco::guarded(
      [&]() {
        auto type = device_of(device);
        at::autocast::set_autocast_enabled(type, was_enabled != 0);
        at::autocast::set_autocast_dtype(type, static_cast<at::ScalarType>(previous_dtype));
        if (at::autocast::decrement_nesting() == 0) {
          at::autocast::clear_cache();
        }
        return 0;
      },
      1, message, capacity);
}

}  // extern "C"
