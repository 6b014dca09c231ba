// MakeCommunicator: MPI when an MPI launcher started this process, else one local rank.
#include <cstdlib>

#include "runtime/dist/communicator.h"

namespace moe::dist {

#ifdef MOE_HAVE_MPI
absl::StatusOr<std::unique_ptr<Communicator>> MakeMpiCommunicator(const CommunicatorOptions& options);
#endif

bool LaunchedByMpi() {
  // Open MPI's mpirun, PMIx launchers (srun --mpi=pmix, prterun) and PMI-1/2 ones (MPICH, Slurm).
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE"}) {
    if (std::getenv(var) != nullptr) return true;
  }
  return false;
}

absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(const CommunicatorOptions& options) {
  if (!LaunchedByMpi()) return MakeLocalCommunicator();
#ifdef MOE_HAVE_MPI
  return MakeMpiCommunicator(options);
#else
  return absl::FailedPreconditionError(
      "started by an MPI launcher, but this build has no MPI (install libopenmpi-dev and reconfigure)");
#endif
}

}  // namespace moe::dist
