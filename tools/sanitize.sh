#!/usr/bin/env bash
# Builds the CPU tests under a sanitizer (CMakePresets.json: asan = AddressSanitizer +
# UndefinedBehaviorSanitizer, tsan = ThreadSanitizer) and runs them with ctest. ASan runs
# every CPU test; TSan the engine and server tests (-R to choose others). Exits non-zero on
# any report.
#
#   tools/sanitize.sh asan            # build-asan/, all CPU tests
#   tools/sanitize.sh tsan            # build-tsan/, engine + server tests
#   tools/sanitize.sh tsan -R Engine  # extra arguments go to ctest
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
preset="${1:?usage: tools/sanitize.sh asan|tsan [ctest arguments]}"
shift
cd "$repo"
cmake --preset "$preset" >&2
cmake --build "build-$preset" -j "$(nproc)" >&2
# TSan must see every lock, and Debian's abseil is not built with it: absl::Mutex would look
# like no synchronization at all, and every guarded member like a race. So the same abseil
# source (Debian's, its version and patches) is built with -fsanitize=thread once, into
# build-tsan/abseil, and replaces the system's at run time (same sonames, same ABI): the
# preset links every program with that directory (and build-tsan/grpc, below) as its RPATH,
# which the libraries they load are found through too. Not LD_LIBRARY_PATH: a test's Python
# client would load the TSan libraries without the TSan runtime.
tsan_abseil() {
  local prefix="$repo/build-tsan/abseil" pkg version work
  [[ -f "$prefix/built" ]] && return 0
  pkg=$(dpkg-query -W -f='${Package}\n' 'libabsl2*' | head -1)
  version=$(dpkg-query -W -f='${source:Version}' "$pkg")
  work="$(mktemp -d)"
  echo "sanitize: building abseil $version with ThreadSanitizer into $prefix" >&2
  if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "sanitize: adding Debian's deb-src to apt (for apt-get source abseil)" >&2
    sed -e 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources >/etc/apt/sources.list.d/moe-src.sources
    apt-get update -qq
  fi
  command -v dpkg-source >/dev/null || apt-get install -y -qq dpkg-dev >/dev/null
  (cd "$work" && apt-get source -qq "abseil=$version" >/dev/null 2>&1)
  local src
  src=$(find "$work" -maxdepth 1 -mindepth 1 -type d | head -1)
  cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_CXX_STANDARD=17 -DBUILD_SHARED_LIBS=ON \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS=-fsanitize=thread \
      -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread -DCMAKE_INSTALL_PREFIX="$prefix" >&2
  cmake --build "$work/build" --target install >&2
  touch "$prefix/built"
  rm -rf "$work"
}
# gRPC likewise: it hands a call from the thread that starts it to the completion-queue
# thread that runs its reactions through its own atomics and locks, which TSan sees only in
# a build of libgrpc with it. Debian's gRPC source, built against the TSan abseil above with
# Debian's configuration (system c-ares, protobuf, re2, OpenSSL, zlib), into build-tsan/grpc;
# only the libraries our programs load are built.
tsan_grpc() {
  local prefix="$repo/build-tsan/grpc" version work src
  [[ -f "$prefix/built" ]] && return 0
  version=$(dpkg-query -W -f='${source:Version}' libgrpc29)
  work="$(mktemp -d)"
  echo "sanitize: building gRPC $version with ThreadSanitizer into $prefix (long: about 900 files)" >&2
  dpkg -s libprotoc-dev >/dev/null 2>&1 || apt-get install -y -qq libprotoc-dev >/dev/null
  (cd "$work" && apt-get source -qq "grpc=$version" >/dev/null 2>&1)
  src=$(find "$work" -maxdepth 1 -mindepth 1 -type d | head -1)
  local off=()
  for plugin in CSHARP NODE OBJECTIVE_C PHP RUBY PYTHON; do off+=("-DgRPC_BUILD_GRPC_${plugin}_PLUGIN=OFF"); done
  cmake -S "$src" -B "$work/build" -G Ninja -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_STANDARD=17 -DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_CXX_FLAGS=-fsanitize=thread \
      -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread \
      -DCMAKE_PREFIX_PATH="$repo/build-tsan/abseil" -DCMAKE_INSTALL_PREFIX="$prefix" \
      -DgRPC_ABSL_PROVIDER=package -DgRPC_CARES_PROVIDER=package -DgRPC_PROTOBUF_PROVIDER=package \
      -DgRPC_RE2_PROVIDER=package -DgRPC_SSL_PROVIDER=package -DgRPC_ZLIB_PROVIDER=package \
      -DgRPC_BACKWARDS_COMPATIBILITY_MODE=OFF -DgRPC_BUILD_TESTS=OFF -DgRPC_BUILD_CSHARP_EXT=OFF \
      -DgRPC_BUILD_GRPC_CPP_PLUGIN=ON -DCMAKE_SKIP_BUILD_RPATH=ON "${off[@]}" >&2
  cmake --build "$work/build" --target grpc++ grpc++_reflection >&2
  mkdir -p "$prefix/lib"
  cp -a "$work/build"/lib{grpc,gpr,upb,address_sorting}*.so* "$prefix/lib/"
  touch "$prefix/built"
  rm -rf "$work"
}
if [[ "$preset" == tsan ]]; then
  tsan_abseil
  tsan_grpc
  export TSAN_OPTIONS="suppressions=$repo/tools/tsan.supp:${TSAN_OPTIONS:-}"
  # One OpenMP thread: libgomp is not built with TSan either, so its barriers would look like
  # no synchronization and every parallel loop be reported. The engine's and the servers'
  # own threads are what this run checks.
  export OMP_NUM_THREADS=1
fi
# The OpenAI SDK tests' venv, in the sanitizer build (they run its moe-server).
MOE_BUILD="$repo/build-$preset" source "$repo/scripts/lib/setup.sh"
MOE_BUILD="$repo/build-$preset" moe_make_venv
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:${TSAN_OPTIONS:-}"
run() { ctest --test-dir "build-$preset" --output-on-failure -j "$(nproc)" "$@"; }
if [[ $# -gt 0 ]]; then
  run "$@"
  exit
fi
rc=0
case "$preset" in
  asan)
    run -LE "cuda_emu|ep" || rc=1
    # The tests under mpirun: OpenMPI keeps allocations of its own (and of the components
    # it loads and unloads) until exit, which LeakSanitizer reports with no frame of ours.
    # Everything else ASan and UBSan check still holds there.
    ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" run -L ep -LE cuda_emu || rc=1 ;;
  tsan) run -R "Engine|Server|Http|openai|batch" || rc=1 ;;
  *) echo "unknown preset: $preset (asan or tsan)" >&2; exit 2 ;;
esac
exit $rc
