// MoeModel: the MoE transformer (Qwen3-MoE, Mixtral, OLMoE, Qwen2-MoE) on the CPU backend,
// implementing runtime's Model.
//
//   ASSIGN_OR_RETURN(std::unique_ptr<MoeModel> model, MoeModel::Load("/models/olmoe"));
//   ASSIGN_OR_RETURN(Tensor logits, model->Forward(batch, kv));   // [S', V] f32
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "moe/config.h"
#include "moe/routing.h"
#include "moe/weights.h"
#include "runtime/model.h"

namespace moe {

class MoeModel final : public Model {
 public:
  static absl::StatusOr<std::unique_ptr<MoeModel>> Load(const std::string& model_dir);

  const ModelInfo& info() const override { return info_; }
  const MoeConfig& config() const { return config_; }

  // Per layer: RMSNorm -> attention -> residual -> RMSNorm -> MoE (or MLP) -> residual;
  // then the final RMSNorm and the LM head on the rows that need logits.
  absl::StatusOr<Tensor> Forward(const StepBatch& batch, KvCache& kv) override;
  std::vector<int64_t> RoutedTokensPerExpert() const override;

  // Called in every MoE layer of every Forward (tests and debugging).
  void set_router_observer(RouterObserver observer) { router_observer_ = std::move(observer); }

 private:
  MoeModel(MoeConfig config, ModelWeights weights);

  MoeConfig config_;
  ModelWeights weights_;
  ModelInfo info_;
  std::unique_ptr<std::atomic<int64_t>[]> routed_tokens_;  // [E], summed over layers
  RouterObserver router_observer_;
};

}  // namespace moe
