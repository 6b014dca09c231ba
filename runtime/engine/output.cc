#include "runtime/engine/output.h"

namespace moe {

const char* FinishReasonName(FinishReason reason) {
  switch (reason) {
    case FinishReason::kEos: return "eos";
    case FinishReason::kStopString: return "stop_string";
    case FinishReason::kStopToken: return "stop_token";
    case FinishReason::kLength: return "length";
    case FinishReason::kTimeLimit: return "time_limit";
    case FinishReason::kAborted: return "aborted";
    case FinishReason::kError: return "error";
  }
  return "?";
}

}  // namespace moe
