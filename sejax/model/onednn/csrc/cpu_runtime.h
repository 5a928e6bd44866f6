// Threading shared by the library's handlers (defined in onednn_conv.cc): every handler runs
// its OpenMP team with the thread count of XLA's intra-op pool (or the one set through
// OnednnConvSetNumThreads), one handler at a time unless OnednnConvSetSerialize(0).
#ifndef SEJAX_CPU_RUNTIME_H_
#define SEJAX_CPU_RUNTIME_H_

#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace sejax_cpu {

// The OpenMP thread count for a handler called with XLA's intra-op pool `pool`.
int ResolveNumThreads(xla::ffi::ThreadPool& pool);

// Held while a handler runs when serialisation is on (see onednn_conv.cc, "Threading").
std::mutex& ExecMutex();
bool Serialize();

// Runs fn() on `pool`'s thread count, under ExecMutex() when serialising.
template <typename Fn>
void RunSerialized(xla::ffi::ThreadPool& pool, Fn&& fn) {
  const int n = ResolveNumThreads(pool);
  if (Serialize()) {
    std::lock_guard<std::mutex> lock(ExecMutex());
    fn(n);
  } else {
    fn(n);
  }
}

}  // namespace sejax_cpu

#endif  // SEJAX_CPU_RUNTIME_H_
