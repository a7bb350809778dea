// An autograd node whose gradient was computed outside LibTorch (ProCo's host pass).
//
// Why C++: tch exposes no custom autograd function. Without one, a host-computed gradient G
// re-enters autograd as value + <z, G> - <z, G>.detach(): a dot product and two scalar
// operations forward, and backward a fresh tensor of G times the upstream gradient that
// autograd then stores as z.grad. This node hands G itself to autograd instead: forward
// creates one scalar, backward scales G in place (on the CPU not at all when the upstream
// gradient is 1) and returns it, so LibTorch's gradient accumulation can adopt it without a
// copy (for a contiguous leaf of G's dtype; otherwise autograd converts it as usual). A pass
// that keeps the graph (retain_graph) or builds one (create_graph) gets a new tensor instead.
//
// Called from Rust (crates/proco/src/host_autograd.rs) through a C ABI; every C++ exception
// is caught here and returned as a message.

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/csrc/autograd/graph_task.h>

#include <torch/headeronly/version.h>

#include "c_error.h"
#include <cstring>
#include <exception>
#include <mutex>
#include <c10/util/intrusive_ptr.h>
#include <string>
#include <utility>

namespace {

using torch::autograd::Node;
using torch::autograd::variable_list;

// d value / d features = grad_ (the features' shape; owned by this node alone).
class HostGradientBackward final : public Node {
 public:
  explicit HostGradientBackward(at::Tensor grad) : grad_(std::move(grad)) {}

  variable_list apply(variable_list&& grads) override {
    const at::Tensor& upstream = grads.at(0);
    if (!upstream.defined()) {
      return {at::Tensor()};
    }
    // A graph kept for another backward pass keeps G and hands out a new tensor (the caller
    // may change what it receives in place); otherwise G itself is handed over and scaled in
    // place. With create_graph the product stays differentiable in the upstream gradient.
    const bool keep = torch::autograd::get_current_graph_task_keep_graph();
    const bool differentiable = at::GradMode::is_enabled();
    std::lock_guard<std::mutex> lock(mutex_);
    TORCH_CHECK(grad_.defined(),
                "the ProCo loss's gradient was already handed to an earlier backward pass; "
                "run backward with retain_graph = true to differentiate the loss more than once");
    if (differentiable || !upstream.device().is_cpu()) {
      // On a device, reading the scale would synchronise it.
      at::Tensor g = keep ? grad_ : std::exchange(grad_, at::Tensor());
      return {differentiable || keep ? g.mul(upstream) : g.mul_(upstream)};
    }
    const double scale = upstream.item<double>();
    if (keep) {
      return {scale == 1.0 ? grad_.clone() : grad_.mul(scale)};
    }
    at::Tensor g = std::exchange(grad_, at::Tensor());
    if (scale != 1.0) {
      g.mul_(scale);
    }
    return {std::move(g)};
  }

  std::string name() const override { return "ProCoHostGradientBackward"; }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    grad_.reset();
  }

 private:
  std::mutex mutex_;
  at::Tensor grad_;
};

}  // namespace

// A 0-dimensional tensor holding `value` in the dtype and on the device of `*features`,
// whose gradient in `*features` is `*grad` (same shape; this takes a reference to it and
// may scale it in place during backward, so the caller must not use it afterwards). Without
// grad mode or when `*features` does not require grad, the tensor is a plain constant.
// Returns the new tensor (free it as tch frees tensors), or null with `message` filled in.
extern "C" at::Tensor* proco_attach_host_gradient(const at::Tensor* features, const at::Tensor* grad, double value,
                                                  char* message, size_t capacity) {
  return proco::guarded(
      [&]() -> at::Tensor* {
        TORCH_CHECK(features->sizes() == grad->sizes(), "the gradient's shape ", grad->sizes(),
                    " differs from the features' ", features->sizes());
        TORCH_CHECK(features->device() == grad->device(), "the gradient is on ", grad->device(),
                    " but the features on ", features->device());
        at::Tensor out = at::scalar_tensor(value, features->options().requires_grad(false));
        if (at::GradMode::is_enabled() && features->requires_grad()) {
          // LibTorch 2.13 holds autograd nodes in c10::intrusive_ptr, earlier releases in
          // std::shared_ptr (scripts/build-for-torch.sh builds against those).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 13)
          auto node = c10::make_intrusive<HostGradientBackward>(*grad);
#else
          auto node = std::make_shared<HostGradientBackward>(*grad);
#endif
          node->set_next_edges(torch::autograd::collect_next_edges(*features));
          torch::autograd::set_history(out, node);
        }
        return new at::Tensor(std::move(out));
      },
      static_cast<at::Tensor*>(nullptr), message, capacity);
}
