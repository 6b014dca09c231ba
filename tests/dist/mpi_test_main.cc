#include "tests/dist/mpi_test_main.h"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace moe::testing {
namespace {

std::unique_ptr<dist::Communicator> g_group;

// What the other ranks print: their failures, each naming the rank.
class FailurePrinter final : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
    std::fprintf(stderr, "rank %d: %s.%s: %s:%d: %s\n", rank_, test->test_suite_name(), test->name(),
                 result.file_name() ? result.file_name() : "?", result.line_number(), result.message());
  }

 private:
  int rank_;
};

}  // namespace

dist::Communicator& Group() { return *g_group; }

}  // namespace moe::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // A rank whose test returned early leaves the others waiting: they end within this.
  auto group = moe::dist::MakeCommunicator({.timeout = absl::Seconds(120)});
  if (!group.ok()) {
    std::fprintf(stderr, "%s\n", std::string(group.status().message()).c_str());
    return 1;
  }
  moe::testing::g_group = *std::move(group);
  const int rank = moe::testing::g_group->Rank();
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new moe::testing::FailurePrinter(rank));
  }
  const int failed = RUN_ALL_TESTS();
  std::vector<int64_t> any = {failed};
  (void)moe::testing::g_group->AllReduce(absl::MakeSpan(any), moe::dist::ReduceOp::kMax);
  if (any[0] != 0 && rank == 0) std::fprintf(stderr, "a test failed on some rank\n");
  const int code = any[0] != 0 ? 1 : 0;
  moe::testing::g_group.reset();  // MPI_Finalize before exit
  return code;
}
