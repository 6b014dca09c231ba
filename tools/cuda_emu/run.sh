#!/usr/bin/env bash
# Runs a CUDA test suite or benchmark on the CPU: the real host code and test over an
# emulated CUDA runtime, cuBLAS and device code (see README.md). No GPU needed.
#
#   tools/cuda_emu/run.sh [-m plain|asan|race] TARGET [ARGS...]
#
#   tools/cuda_emu/run.sh cuda_model_test --gtest_filter='Golden*'
#   tools/cuda_emu/run.sh -m asan cuda_ops_test
#   EMU_GEMM_MAX_FLOP=2e10 tools/cuda_emu/run.sh bench-model \
#       --config tests/data/models/qwen3_moe/config.json --batches 1,8 --prefill 64 --steps 2
#
# TARGET is a CUDA test (cuda_*_test) or benchmark (bench-model, bench-moe-layer); ARGS go
# to it. It runs the CMake target TARGET_emu: plain from the project's build ($MOE_BUILD),
# asan and race (CMake's MOE_CUDA_EMU_MODE) from their own build directories beside it.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib/setup.sh"

mode=plain
if [ "${1:-}" = -m ]; then mode=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n 2,15p "$0"; exit 2; }
target=$1; shift
case $mode in
  plain) build=$MOE_BUILD;;
  asan | race) build=$MOE_BUILD-emu-$mode;;
  *) echo "run.sh: mode is plain, asan or race, not '$mode'" >&2; exit 2;;
esac

moe_install_packages
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$MOE_ROOT" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_CUDA_EMU_MODE=$mode >&2
fi
cmake --build "$build" -j "$(nproc)" --target "${target}_emu" >&2
cd "$MOE_ROOT"
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} exec "$build/bin/${target}_emu" "$@"
