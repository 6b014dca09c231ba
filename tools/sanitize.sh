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
