// GraphCache: CUDA graphs of captured steps, keyed by the sizes the step was launched
// with, replayed as one launch each.
//
//   if (GraphCache::Exec* g = graphs.Find(key)) { RETURN_IF_ERROR(graphs.Launch(*g, stream)); }
//   else RETURN_IF_ERROR(graphs.Capture(key, stream, [&] { return EnqueueStep(...); }));
//
// A captured graph keeps the device addresses it was captured with, so whatever it reads
// (step arrays, buffers, the KV cache) must stay where it was; Clear() when they move.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>

#include <cuda_runtime.h>

#include "absl/status/status.h"

namespace moe::cuda {

class GraphCache {
 public:
  using Key = std::pair<int32_t, int32_t>;  // e.g. (padded batch, context bucket)
  struct Exec;

  GraphCache();
  ~GraphCache();
  GraphCache(GraphCache&&) noexcept;
  GraphCache& operator=(GraphCache&&) noexcept;

  Exec* Find(const Key& key);
  // Captures what `enqueue` puts on `stream` (nothing runs while capturing) and keeps the
  // instantiated graph under `key`. On an error the stream is left out of capture mode.
  absl::Status Capture(const Key& key, cudaStream_t stream, const std::function<absl::Status()>& enqueue);
  absl::Status Launch(Exec& exec, cudaStream_t stream);
  void Clear();
  size_t size() const { return graphs_.size(); }
  // Kernel nodes of the graph captured last (0 before any capture, -1 if uncounted).
  int64_t last_kernel_nodes() const { return last_kernel_nodes_; }

 private:
  std::map<Key, std::unique_ptr<Exec>> graphs_;
  int64_t last_kernel_nodes_ = 0;
};

}  // namespace moe::cuda
