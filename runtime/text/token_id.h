// TokenIdOf: a token id as tokenizer.json writes one, checked. The loader's tables are as
// long as the largest id, so the bound also bounds what a tokenizer.json can make it allocate.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace moe::text {

// Far above any real vocabulary (Qwen3's is 151,936).
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

// `value` as an id: an integer in [0, kMaxTokenId]; else InvalidArgument naming `what`.
inline absl::StatusOr<int32_t> TokenIdOf(const nlohmann::json& value, std::string_view what) {
  const bool in_range = (value.is_number_unsigned() && value.get<uint64_t>() <= uint64_t(kMaxTokenId)) ||
                        (value.is_number_integer() && !value.is_number_unsigned() && value.get<int64_t>() >= 0 &&
                         value.get<int64_t>() <= kMaxTokenId);
  if (!in_range) {
    return absl::InvalidArgumentError(absl::StrCat(absl::string_view(what.data(), what.size()),
                                                   " must be a token id, an integer in [0, ", kMaxTokenId, "], got ",
                                                   value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
  }
  return static_cast<int32_t>(value.get<int64_t>());
}

}  // namespace moe::text
