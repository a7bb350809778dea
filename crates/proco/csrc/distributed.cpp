// torch.distributed's c10d engine (TCPStore rendezvous, ProcessGroupGloo) behind a C ABI, for
// proco's data-parallel training (crates/proco/src/distributed/).
//
// Why C++: tch exposes none of c10d. Everything here is LibTorch's own code: this file only
// constructs its objects and forwards calls, catching every C++ exception as a message (see
// c_error.h). ProcessGroupNCCL lives in nccl.cpp, compiled only against a LibTorch with CUDA.
//
// Why the vendored gloo headers (third_party/gloo): the pip wheel ships ProcessGroupGloo.hpp
// but not the gloo headers it includes. LibTorch carries its own gloo build; we compile none
// of gloo's code, only the declarations ProcessGroupGloo.hpp needs (see third_party/README.md).

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>

#include "c_error.h"
#include "distributed.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

using proco::ProcoGroup;
using proco::ProcoStore;

namespace {

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      TORCH_CHECK(false, "unknown reduction ", op);
  }
}

// Waits for every started collective within one `timeout` for them all; the first failure
// is rethrown at once (the group is abandoned after a failure, so the rest need no wait).
void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& works, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (auto& w : works) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    w->wait(std::max(left, std::chrono::milliseconds(1)));
  }
}

}  // namespace

// A TCPStore client (or, with `is_server`, the server and a client of it) at host:port.
// `world` > 0 makes the server wait for that many clients before returning. Port 0 with
// `is_server` picks a free port (read it with proco_store_port).
extern "C" ProcoStore* proco_store_connect(const char* host, uint16_t port, int is_server, int64_t world,
                                           int64_t timeout_ms, char* message, size_t capacity) {
  return proco::guarded(
      [&]() -> ProcoStore* {
        c10d::TCPStoreOptions opts;
        opts.port = port;
        opts.isServer = is_server != 0;
        if (world > 0) {
          opts.numWorkers = static_cast<size_t>(world);
        }
        opts.waitWorkers = false;
        opts.timeout = std::chrono::milliseconds(timeout_ms);
        auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
        return new ProcoStore{store, store->getPort()};
      },
      static_cast<ProcoStore*>(nullptr), message, capacity);
}

extern "C" uint16_t proco_store_port(const ProcoStore* store) { return store->port; }

extern "C" int proco_store_set(ProcoStore* store, const char* key, const uint8_t* value, size_t len, char* message,
                               size_t capacity) {
  return proco::guarded(
      [&]() -> int {
        store->store->set(std::string(key), std::vector<uint8_t>(value, value + len));
        return 0;
      },
      -1, message, capacity);
}

// Adds `delta` to the integer counter `key` (created at 0) and returns the new value in *out.
extern "C" int proco_store_add(ProcoStore* store, const char* key, int64_t delta, int64_t* out, char* message,
                               size_t capacity) {
  return proco::guarded(
      [&]() -> int {
        *out = store->store->add(std::string(key), delta);
        return 0;
      },
      -1, message, capacity);
}

// 1 if `key` is set, 0 if not, -1 on failure.
extern "C" int proco_store_check(ProcoStore* store, const char* key, char* message, size_t capacity) {
  return proco::guarded([&]() -> int { return store->store->check({std::string(key)}) ? 1 : 0; }, -1, message,
                        capacity);
}

// Waits up to `timeout_ms` for `key` and copies at most `capacity_out` bytes of its value into
// `out`; returns the value's full length, or -1 with `message` filled in.
extern "C" int64_t proco_store_get(ProcoStore* store, const char* key, int64_t timeout_ms, uint8_t* out,
                                   size_t capacity_out, char* message, size_t capacity) {
  return proco::guarded(
      [&]() -> int64_t {
        store->store->wait({std::string(key)}, std::chrono::milliseconds(timeout_ms));
        std::vector<uint8_t> value = store->store->get(std::string(key));
        std::memcpy(out, value.data(), std::min(capacity_out, value.size()));
        return static_cast<int64_t>(value.size());
      },
      static_cast<int64_t>(-1), message, capacity);
}

extern "C" void proco_store_free(ProcoStore* store) { delete store; }

// A Gloo process group of `world` ranks over `store` (its keys under `prefix`); collectives
// fail after `timeout_ms`. The network device follows torch.distributed: GLOO_SOCKET_IFNAME
// names an interface, else the address this host's name resolves to (else loopback).
extern "C" ProcoGroup* proco_group_new_gloo(ProcoStore* store, const char* prefix, int rank, int world,
                                            int64_t timeout_ms, char* message, size_t capacity) {
  return proco::guarded(
      [&]() -> ProcoGroup* {
        const auto timeout = std::chrono::milliseconds(timeout_ms);
        auto opts = c10d::ProcessGroupGloo::Options::create_default(timeout);
        if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname != '\0') {
          opts->devices = {c10d::ProcessGroupGloo::createDeviceForInterface(std::string(ifname))};
        }
        auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), store->store);
        c10::intrusive_ptr<c10d::Backend> backend =
            c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world, opts);
        return new ProcoGroup{backend, timeout};
      },
      static_cast<ProcoGroup*>(nullptr), message, capacity);
}

// All-reduces each of the `n` tensors (every rank passes the same shapes, in the same order):
// all collectives are started, then awaited, so that Gloo's threads pipeline them.
// `op`: 0 sum, 1 max, 2 min.
extern "C" int proco_group_all_reduce(ProcoGroup* group, at::Tensor* const* tensors, size_t n, int op,
                                      char* message, size_t capacity) {
  return proco::guarded(
      [&]() -> int {
        c10d::AllreduceOptions opts;
        opts.reduceOp = reduce_op(op);
        opts.timeout = group->timeout;
        std::vector<c10::intrusive_ptr<c10d::Work>> works;
        works.reserve(n);
        for (size_t i = 0; i < n; ++i) {
          std::vector<at::Tensor> one{*tensors[i]};
          works.push_back(group->backend->allreduce(one, opts));
        }
        wait_all(works, group->timeout);
        return 0;
      },
      -1, message, capacity);
}

// Overwrites each of the `n` tensors with rank `root`'s.
extern "C" int proco_group_broadcast(ProcoGroup* group, at::Tensor* const* tensors, size_t n, int root,
                                     char* message, size_t capacity) {
  return proco::guarded(
      [&]() -> int {
        c10d::BroadcastOptions opts;
        opts.rootRank = root;
        opts.timeout = group->timeout;
        std::vector<c10::intrusive_ptr<c10d::Work>> works;
        works.reserve(n);
        for (size_t i = 0; i < n; ++i) {
          std::vector<at::Tensor> one{*tensors[i]};
          works.push_back(group->backend->broadcast(one, opts));
        }
        wait_all(works, group->timeout);
        return 0;
      },
      -1, message, capacity);
}

extern "C" int proco_group_barrier(ProcoGroup* group, char* message, size_t capacity) {
  return proco::guarded(
      [&]() -> int {
        c10d::BarrierOptions opts;
        opts.timeout = group->timeout;
        auto work = group->backend->barrier(opts);
        std::vector<c10::intrusive_ptr<c10d::Work>> works{work};
        wait_all(works, group->timeout);
        return 0;
      },
      -1, message, capacity);
}

extern "C" void proco_group_free(ProcoGroup* group) { delete group; }

#ifndef PROCO_WITH_NCCL
extern "C" ProcoGroup* proco_group_new_nccl(ProcoStore*, const char*, int, int, int, int64_t, char* message,
                                            size_t capacity) {
  proco::copy_message(
      "this build of proco has no NCCL: it was built against a LibTorch without CUDA; rebuild it against one "
      "with CUDA (e.g. pip torch with CUDA) for NCCL, or use the Gloo backend",
      message, capacity);
  return nullptr;
}
#endif
