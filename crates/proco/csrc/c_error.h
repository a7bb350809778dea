// How the C ABI shims of this crate (host_gradient.cpp, autocast.cpp) hand C++ exceptions to
// Rust: every exception is caught and its message copied, NUL-terminated, into a caller's
// buffer; the Rust side turns it into a typed error.
#pragma once

#include <c10/util/Exception.h>

#include <cstddef>
#include <cstring>
#include <exception>

namespace proco {

// Copies `what` into `message` (at most `capacity - 1` bytes and a NUL).
inline void copy_message(const char* what, char* message, size_t capacity) {
  if (capacity == 0) {
    return;
  }
  std::strncpy(message, what, capacity - 1);
  message[capacity - 1] = '\0';
}

// Runs `body`, returning its result, or `on_error` with the exception's message in `message`.
template <class F, class R>
R guarded(F&& body, R on_error, char* message, size_t capacity) {
  try {
    return body();
  } catch (const c10::Error& e) {
    copy_message(e.what_without_backtrace(), message, capacity);
  } catch (const std::exception& e) {
    copy_message(e.what(), message, capacity);
  } catch (...) {
    copy_message("unknown C++ exception", message, capacity);
  }
  return on_error;
}

}  // namespace proco
