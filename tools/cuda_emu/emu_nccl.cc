// CPU stand-in for the NCCL calls runtime/dist/nccl_communicator.cc makes, carried by MPI
// between the ranks' processes (each rank runs its own emulator; "device" memory is host
// memory). A group's sends and receives, or an all-gather, become one operation on the
// stream (emu_rt.cc), so they run in stream order at the host's next synchronization and
// can be captured in a graph like a kernel. Without MPI only one rank is possible.
//
// Limit: a real NCCL kernel progresses on its own; here it runs when its rank synchronizes,
// so every rank must synchronize its stream before it blocks in a host collective.
#include <nccl.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#ifdef EMU_HAVE_MPI
#include <mpi.h>
#endif

namespace emu {
void EnqueueKernel(cudaStream_t stream, const char* what, std::function<void()> run);
void Error(const char* fmt, ...);
}  // namespace emu

struct ncclComm {
  int rank = 0;
  int size = 1;
};

namespace {

constexpr int kTag = 7100;  // the host communicator's tags are 7001..7003

struct P2p {
  bool send;
  const void* send_buf;
  void* recv_buf;
  size_t bytes;
  int peer;
  ncclComm* comm;
};
int g_group_depth = 0;
std::vector<P2p> g_group;
cudaStream_t g_group_stream = nullptr;

size_t TypeBytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}

// Runs a group's point-to-point operations together, as NCCL does.
void RunP2p(const std::vector<P2p>& ops) {
#ifdef EMU_HAVE_MPI
  std::vector<MPI_Request> reqs;
  for (const P2p& op : ops) {
    if (op.bytes > 0x7fffffffu) emu::Error("EMU: an emulated NCCL message over 2 GiB");
    reqs.emplace_back();
    if (op.send) {
      MPI_Isend(op.send_buf, static_cast<int>(op.bytes), MPI_BYTE, op.peer, kTag, MPI_COMM_WORLD, &reqs.back());
    } else {
      MPI_Irecv(op.recv_buf, static_cast<int>(op.bytes), MPI_BYTE, op.peer, kTag, MPI_COMM_WORLD, &reqs.back());
    }
  }
  MPI_Waitall(static_cast<int>(reqs.size()), reqs.data(), MPI_STATUSES_IGNORE);
#else
  // One rank: its sends are its receives, in order.
  std::vector<const P2p*> sends, recvs;
  for (const P2p& op : ops) (op.send ? sends : recvs).push_back(&op);
  for (size_t i = 0; i < sends.size() && i < recvs.size(); ++i) {
    std::memcpy(recvs[i]->recv_buf, sends[i]->send_buf, sends[i]->bytes);
  }
#endif
}

ncclResult_t AddP2p(const P2p& op, cudaStream_t stream) {
  if (op.peer < 0 || op.peer >= op.comm->size) return ncclInvalidArgument;
  if (g_group_depth > 0) {
    if (!g_group.empty() && stream != g_group_stream) {
      emu::Error("EMU: one NCCL group on two streams (the emulation keeps one)");
    }
    g_group_stream = stream;
    g_group.push_back(op);
    return ncclSuccess;
  }
  emu::EnqueueKernel(stream, "nccl p2p", [op] { RunP2p({op}); });
  return ncclSuccess;
}

}  // namespace

extern "C" {

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess: return "no error (emulated)";
    case ncclInvalidArgument: return "invalid argument (emulated)";
    case ncclInvalidUsage: return "invalid usage (emulated)";
    default: return "error (emulated)";
  }
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
  std::memset(id, 0, sizeof(*id));
  std::snprintf(id->internal, sizeof(id->internal), "emulated nccl over MPI");
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId id, int rank) {
  if (std::strncmp(id.internal, "emulated nccl", 13) != 0) return ncclInvalidArgument;
  int world_rank = 0, world_size = 1;
#ifdef EMU_HAVE_MPI
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) {
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  }
#endif
  // The emulation carries the group over MPI_COMM_WORLD, rank for rank.
  if (nranks != world_size || rank != world_rank) return ncclInvalidUsage;
  *comm = new ncclComm{.rank = rank, .size = nranks};
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclCommAbort(ncclComm_t comm) {
  delete comm;
  return ncclSuccess;
}
ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  *count = comm->size;
  return ncclSuccess;
}
ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++g_group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (g_group_depth == 0) return ncclInvalidUsage;
  if (--g_group_depth > 0) return ncclSuccess;
  if (!g_group.empty()) {
    emu::EnqueueKernel(g_group_stream, "nccl group", [ops = std::move(g_group)] { RunP2p(ops); });
  }
  g_group.clear();
  return ncclSuccess;
}

ncclResult_t ncclSend(const void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return AddP2p({.send = true, .send_buf = buf, .recv_buf = nullptr, .bytes = count * TypeBytes(type),
                 .peer = peer, .comm = comm}, stream);
}

ncclResult_t ncclRecv(void* buf, size_t count, ncclDataType_t type, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  return AddP2p({.send = false, .send_buf = nullptr, .recv_buf = buf, .bytes = count * TypeBytes(type),
                 .peer = peer, .comm = comm}, stream);
}

ncclResult_t ncclAllGather(const void* send, void* recv, size_t count, ncclDataType_t type, ncclComm_t comm,
                           cudaStream_t stream) {
  const size_t bytes = count * TypeBytes(type);
  const int size = comm->size;
  emu::EnqueueKernel(stream, "nccl all-gather", [send, recv, bytes, size] {
#ifdef EMU_HAVE_MPI
    MPI_Allgather(send, static_cast<int>(bytes), MPI_BYTE, recv, static_cast<int>(bytes), MPI_BYTE, MPI_COMM_WORLD);
#else
    (void)size;
    std::memcpy(recv, send, bytes);
#endif
  });
  return ncclSuccess;
}

}  // extern "C"
