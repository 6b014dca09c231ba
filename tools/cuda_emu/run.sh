#!/usr/bin/env bash
# Runs a CUDA test suite or benchmark of the CMake build on the CPU: the real host code and
# test over an emulated CUDA runtime, cuBLAS and device code (see README.md). No GPU needed.
#
#   tools/cuda_emu/run.sh [-m plain|race|asan] TARGET [ARGS...]
#
#   tools/cuda_emu/run.sh cuda_model_test --gtest_filter='Golden*'
#   tools/cuda_emu/run.sh -m asan cuda_ops_test
#   EMU_GEMM_MAX_FLOP=2e10 tools/cuda_emu/run.sh bench-model \
#       --config tests/data/models/qwen3_moe/config.json --batches 1,8 --prefill 64 --steps 2
#
# TARGET is a CMake target linked against moe_runtime_cuda (cuda_*_test, bench-model,
# bench-moe-layer); ARGS go to it. Builds the project first (scripts/lib/setup.sh), then the
# emulated objects under $MOE_BUILD/cuda_emu/MODE. Modes: plain; race (a GPU race detector
# over the kernels' shared and global memory accesses); asan (ASan and UBSan on the kernels).
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib/setup.sh"
here="$MOE_ROOT/tools/cuda_emu"

mode=plain
if [ "${1:-}" = -m ]; then mode=$2; shift 2; fi
[ $# -ge 1 ] || { sed -n 2,16p "$0"; exit 2; }
target=$1; shift
case $mode in
  plain) kflags="-O2"; eflags="-O2"; lflags="";;
  race) kflags="-O1 -g -fsanitize=thread"; eflags="-O1 -g -DEMU_RACE"; lflags="-no-pie";;
  asan) kflags="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
        eflags="-O1 -g -DEMU_ASAN"; lflags="-fsanitize=address,undefined";;
  *) echo "run.sh: mode is plain, race or asan, not '$mode'" >&2; exit 2;;
esac

moe_build
B=$MOE_BUILD
command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || { echo "run.sh: needs the CUDA toolkit's headers" >&2; exit 1; }
[ -d "$B/runtime/cuda/CMakeFiles/moe_runtime_cuda.dir" ] || { echo "run.sh: the build has no CUDA backend (nvcc not found at configure time?)" >&2; exit 1; }
out=$B/cuda_emu/$mode
mkdir -p "$out" "$B/cuda_emu/gen"

cxx=(nice g++ -std=c++20 -w -fno-fast-math -fopenmp -DEMU_REPO_ROOT="\"$MOE_ROOT\"")
inc=(-I"$here/shadow" -I"$here" -I"$MOE_ROOT" -isystem /usr/local/cuda/include)
headers=("$here"/emu.h "$here"/emu_wgmma.inc "$here"/shadow/*.h "$here"/shadow/*/cuda/*.cuh)
# compile SRC OBJ FLAGS...: when OBJ is older than SRC or an emulator header.
compile() {
  local src=$1 obj=$2; shift 2
  local stale=0 h
  [ -f "$obj" ] && [ "$obj" -nt "$src" ] || stale=1
  for h in "${headers[@]}"; do [ "$h" -nt "$obj" ] && stale=1; done
  [ $stale = 0 ] && return 0
  echo "cuda_emu: cc ${src#"$MOE_ROOT"/}" >&2
  "${cxx[@]}" "$@" "${inc[@]}" -c "$src" -o "$obj"
}

compile "$here/emu.cc" "$out/emu.o" $eflags -include "$here/emu.h"
compile "$here/emu_rt.cc" "$out/emu_rt.o" -O2 -g
# Every .cu of the backend, device code and host wrappers, as C++ over emu.h.
kernels=()
pids=()
for cu in "$MOE_ROOT"/runtime/cuda/*.cu "$MOE_ROOT"/moe/cuda/*.cu; do
  name=$(basename "$(dirname "$(dirname "$cu")")")_$(basename "$cu" .cu)
  python3 "$here/gen.py" "$cu" "$B/cuda_emu/gen/$name.cc" >/dev/null
  compile "$B/cuda_emu/gen/$name.cc" "$out/$name.o" $kflags -include "$here/emu.h" &
  pids+=($!)
  kernels+=("$out/$name.o")
  # two at a time
  if [ ${#pids[@]} -ge "$(nproc)" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

# The target's own objects and the host half of the CUDA libraries, as CMake built them.
target_objects=$(find "$B" -path "*/CMakeFiles/$target.dir/*.o" | sort)
[ -n "$target_objects" ] || { echo "run.sh: no objects of target '$target' in $B" >&2; exit 2; }
host_objects=$(find "$B/runtime/cuda/CMakeFiles/moe_runtime_cuda.dir" "$B/moe/cuda/CMakeFiles/moe_model_cuda.dir" -name "*.cc.o" | sort)
# The target's link libraries from build.ninja, less CUDA's (the emulator stands in for them).
libs=$(awk -v t="$target" '$0 ~ "^build bin/"t"[ :]" {f=1} f && /LINK_LIBRARIES/ {print; exit}' "$B/build.ninja" |
       sed 's/.*LINK_LIBRARIES = //' | tr ' ' '\n' | grep -v -e cuda -e '^$' -e '^-Wl,-rpath' |
       sed "s|^\([a-z].*\.a\)$|$B/\1|" | tr '\n' ' ')
# shellcheck disable=SC2086
"${cxx[@]}" $lflags -o "$out/$target" $target_objects $host_objects "${kernels[@]}" "$out/emu.o" "$out/emu_rt.o" \
  -Wl,--start-group $libs -Wl,--end-group
echo "cuda_emu: running $target ($mode)" >&2
cd "$MOE_ROOT"
EMU_DEFER=${EMU_DEFER:-1} ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0} exec "$out/$target" "$@"
