// MOE_HOST_DEVICE marks a function that host code and CUDA kernels both call.
#pragma once

#ifdef __CUDACC__
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif
