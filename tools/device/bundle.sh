#!/usr/bin/env bash
# Builds the CUDA tests and benchmarks here (sm_90a) and packs them, with the non-CUDA
# shared libraries they need, into .device-bundle/ (ignored by git), for a GPU machine
# that has CUDA but not this project's other dependencies. There, run
# tools/device/gpu-checks.sh from the repository root.
#
#   tools/device/bundle.sh            # then carry .device-bundle to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/../.."
bins=(cuda_ops_test cuda_attention_test cuda_moe_kernels_test cuda_model_test cuda_sampler_test
      nccl_communicator_test ep_cuda_model_test bench-moe-layer bench-model bench-ep moe-make-model
      moe-generate)
cmake --build build --target "${bins[@]}"
rm -rf .device-bundle
mkdir -p .device-bundle/bin
for b in "${bins[@]}"; do cp build/bin/"$b" .device-bundle/bin/; done
../shared/device/bundle-libs .device-bundle "${bins[@]/#/build/bin/}"
du -sh .device-bundle
