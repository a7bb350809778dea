// The objects behind distributed.cpp's and nccl.cpp's C ABI handles.
#pragma once

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <cstdint>

namespace proco {

struct ProcoStore {
  c10::intrusive_ptr<c10d::Store> store;
  uint16_t port;
};

struct ProcoGroup {
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

}  // namespace proco
