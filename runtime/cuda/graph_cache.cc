#include "runtime/cuda/graph_cache.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/cuda/cuda_check.h"
#include "runtime/status_macros.h"

namespace moe::cuda {

struct GraphCache::Exec {
  cudaGraphExec_t exec = nullptr;
  ~Exec() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
  }
};

namespace {

absl::Status CountKernelNodes(cudaGraph_t graph, int64_t* count) {
  size_t num_nodes = 0;
  CUDA_RETURN_IF_ERROR(cudaGraphGetNodes(graph, nullptr, &num_nodes));
  std::vector<cudaGraphNode_t> nodes(num_nodes);
  CUDA_RETURN_IF_ERROR(cudaGraphGetNodes(graph, nodes.data(), &num_nodes));
  *count = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    CUDA_RETURN_IF_ERROR(cudaGraphNodeGetType(node, &type));
    if (type == cudaGraphNodeTypeKernel) ++*count;
  }
  return absl::OkStatus();
}

}  // namespace

GraphCache::GraphCache() = default;
GraphCache::~GraphCache() = default;
GraphCache::GraphCache(GraphCache&&) noexcept = default;
GraphCache& GraphCache::operator=(GraphCache&&) noexcept = default;

GraphCache::Exec* GraphCache::Find(const Key& key) {
  auto it = graphs_.find(key);
  return it == graphs_.end() ? nullptr : it->second.get();
}

absl::Status GraphCache::Capture(const Key& key, cudaStream_t stream, const std::function<absl::Status()>& enqueue) {
  CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed));
  (void)TakeCaptureLaunchError();  // what an earlier capture left
  const absl::Status enqueued = enqueue();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);  // always leave capture mode
  cudaGetLastError();  // a failed capture leaves an error that later launch checks must not see
  const absl::Status launched = TakeCaptureLaunchError();
  if (!enqueued.ok() || !launched.ok() || ended != cudaSuccess) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    RETURN_IF_ERROR(enqueued);
    RETURN_IF_ERROR(launched);
    return absl::InternalError(absl::StrCat("capturing a CUDA graph failed: ", cudaGetErrorString(ended)));
  }
  // The captured graph is only needed until it is instantiated.
  const std::unique_ptr<CUgraph_st, cudaError_t (*)(cudaGraph_t)> owned(graph, cudaGraphDestroy);
  if (!CountKernelNodes(graph, &last_kernel_nodes_).ok()) {  // only a statistic
    cudaGetLastError();
    last_kernel_nodes_ = -1;
  }
  auto exec = std::make_unique<Exec>();
  const cudaError_t made = cudaGraphInstantiate(&exec->exec, graph, 0);
  if (made != cudaSuccess) {
    cudaGetLastError();
    exec->exec = nullptr;
    return absl::InternalError(absl::StrCat("instantiating a CUDA graph failed: ", cudaGetErrorString(made)));
  }
  graphs_[key] = std::move(exec);
  return absl::OkStatus();
}

absl::Status GraphCache::Launch(Exec& exec, cudaStream_t stream) {
  CUDA_RETURN_IF_ERROR(cudaGraphLaunch(exec.exec, stream));
  return absl::OkStatus();
}

void GraphCache::Clear() { graphs_.clear(); }

}  // namespace moe::cuda
