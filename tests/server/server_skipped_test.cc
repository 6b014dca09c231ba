// Stands in for the server tests when the build has no gRPC (and so no moe-server).
#include "gtest/gtest.h"

TEST(ServerTest, SkippedWithoutGrpc) {
  GTEST_SKIP() << "moe-server was not built: gRPC, Protobuf or cpp-httplib is missing "
                  "(scripts/lib/setup.sh installs them)";
}
