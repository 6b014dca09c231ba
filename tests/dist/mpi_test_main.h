// The tests that run under mpirun link mpi_test_main.cc for their main(): every rank runs
// every test, in the same order, so that collectives inside tests meet; rank 0 prints
// gtest's report and the other ranks print their failures; the run fails when any rank
// failed.
//
//   TEST(Exchange, Works) { dist::Communicator& comm = testing::Group(); ... }
#pragma once

#include "runtime/dist/communicator.h"

namespace moe::testing {

// The MPI world of this run (one local rank without mpirun).
dist::Communicator& Group();

}  // namespace moe::testing
