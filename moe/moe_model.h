// MoeModel: the MoE transformer (Qwen3-MoE, Mixtral, OLMoE, Qwen2-MoE) on the CPU backend,
// implementing runtime's Model.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<MoeModel> model, MoeModel::Load("/models/olmoe"));
//   ASSIGN_OR_RETURN(Tensor logits, model->Forward(batch, kv));   // [S', V] f32
//
// With a communicator of R > 1 ranks (expert parallelism), each rank loads only its share of
// every layer's routed experts, and each MoE layer exchanges rows with the other ranks.
// Every rank must then run Forward or ForwardIdle in every step, together.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "moe/config.h"
#include "moe/expert_parallel.h"
#include "moe/routing.h"
#include "moe/weights.h"
#include "runtime/cpu/linear.h"
#include "runtime/model.h"

namespace moe {

struct MoeModelOptions {
  // Expert parallelism over these ranks; null (or one rank): every expert is here.
  dist::Communicator* comm = nullptr;
  // What the bf16 weights multiply: f32 activations (the reference) or bf16-rounded ones.
  cpu::GemmInputs gemm_inputs = cpu::GemmInputs::kF32;
};

class MoeModel final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<MoeModel>> Load(const std::string& model_dir,
                                                        const MoeModelOptions& options = {});

  const ModelInfo& info() const override { return info_; }
  const MoeConfig& config() const { return config_; }

  // Per layer: RMSNorm -> attention -> residual -> RMSNorm -> MoE (or MLP) -> residual;
  // then the final RMSNorm and the LM head on the rows that need logits.
  absl::StatusOr<Tensor> Forward(const StepBatch& batch, KvCache& kv) override;
  absl::Status ForwardIdle() override;
  // Under expert parallelism, summed over every rank's tokens.
  std::vector<int64_t> RoutedTokensPerExpert() const override;
  // The dtype the routed experts are kept in (bf16 or f32), for memory accounting.
  DType expert_dtype() const;
  ExpertTraffic expert_traffic() const override { return group_ ? group_->traffic() : ExpertTraffic{}; }

  // Called in every MoE layer of every Forward (tests and debugging).
  void set_router_observer(RouterObserver observer) { router_observer_ = std::move(observer); }

 private:
  MoeModel(MoeConfig config, ModelWeights weights, std::unique_ptr<ExpertGroup> group,
           cpu::GemmInputs gemm_inputs);
  // The MoE (or MLP) block of layer l on h [T, D] -> out [T, D].
  absl::Status FeedForwardLayer(int l, const Tensor& h, Tensor& out);

  MoeConfig config_;
  ModelWeights weights_;
  std::unique_ptr<ExpertGroup> group_;
  cpu::GemmInputs gemm_inputs_;
  ModelInfo info_;
  std::unique_ptr<std::atomic<int64_t>[]> routed_tokens_;  // [E], summed over layers
  RouterObserver router_observer_;
};

}  // namespace moe
