// ProcessGroupNCCL behind the C ABI of distributed.cpp; compiled only against a LibTorch with
// CUDA (build.rs defines PROCO_WITH_NCCL then). One GPU per rank: the caller makes `device`
// current before any collective.

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "c_error.h"
#include "distributed.h"

#include <chrono>
#include <string>

using proco::ProcoGroup;
using proco::ProcoStore;

// An NCCL process group of `world` ranks over `store` (keys under `prefix`), this rank on CUDA
// device `device`; collectives fail after `timeout_ms`.
extern "C" ProcoGroup* proco_group_new_nccl(ProcoStore* store, const char* prefix, int rank, int world, int device,
                                            int64_t timeout_ms, char* message, size_t capacity) {
  return proco::guarded(
      [&]() -> ProcoGroup* {
        const auto timeout = std::chrono::milliseconds(timeout_ms);
        auto opts = c10d::ProcessGroupNCCL::Options::create();
        opts->timeout = timeout;
        auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->store);
        auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world, opts);
        // Bind the communicator to this rank's GPU now (as init_process_group(device_id=...)):
        // a lazily created one would pick the current device at the first collective.
        nccl->eagerConnectSingleDevice(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(device)));
        c10::intrusive_ptr<c10d::Backend> backend = nccl;
        return new ProcoGroup{backend, timeout};
      },
      static_cast<ProcoGroup*>(nullptr), message, capacity);
}
