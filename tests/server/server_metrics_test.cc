// The Prometheus text the metrics port serves: counts print exactly, however large.
#include "server/metrics.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace moe::server {
namespace {

using ::testing::HasSubstr;

TEST(ServerMetricsTest, LargeCountsPrintEveryDigit) {
  Metrics metrics;
  const std::string text = metrics.Render(EngineStats{}, {3'000'000'001, 7}, 2);
  EXPECT_THAT(text, HasSubstr("moe_routed_tokens_total{expert=\"0\"} 3000000001\n"));
  EXPECT_THAT(text, HasSubstr("moe_routed_tokens_total{expert=\"1\"} 7\n"));
}

}  // namespace
}  // namespace moe::server
