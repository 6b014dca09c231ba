#!/usr/bin/env bash
# Builds the libFuzzer targets (cmake --preset fuzz: clang, ASan + UBSan) and runs each for
# --minutes (default 10), one after another, each with its seeds from fuzz/corpus/<target>
# and a working corpus under --out (default /tmp/moe-fuzz). Prints each target's executions
# and findings; a crash leaves its input as --out/<target>/crash-* and the script exits 1.
#
#   tools/fuzz/run.sh [--minutes 10 | --seconds 30] [--out /tmp/moe-fuzz] [target ...]
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
seconds=600 out=/tmp/moe-fuzz targets=()
while [[ $# -gt 0 ]]; do  # (0 seconds would mean no limit to libFuzzer: refused below)
  case "$1" in
    --minutes) seconds=$(($2 * 60)); shift 2 ;;
    --seconds) seconds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -*) echo "unknown flag: $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" -gt 0 ]] || { echo "the time per target must be at least a second" >&2; exit 2; }
command -v clang++ >/dev/null || apt-get install -y -q clang >&2
cd "$repo"
cmake --preset fuzz >/dev/null
all=(safetensors_header config_json tokenizer_json tokenizer_encode chat_template openai_body batch_line grpc_request)
[[ ${#targets[@]} -gt 0 ]] || targets=("${all[@]}")
cmake --build build-fuzz --target "${targets[@]/#/fuzz_}" >&2
failed=0
for t in "${targets[@]}"; do
  mkdir -p "$out/$t/corpus"
  seeds=()
  [[ -d "fuzz/corpus/$t" ]] && seeds=("fuzz/corpus/$t")
  log="$out/$t/log"
  set +e
  (cd "$out/$t" && MOE_SOURCE_DIR="$repo" "$repo/build-fuzz/bin/fuzz_$t" -max_total_time="$seconds" \
     -timeout=10 -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 corpus "${seeds[@]/#/$repo/}") >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  crashes=$(ls "$out/$t" | grep -c '^crash-\|^timeout-\|^oom-\|^leak-' || true)
  echo "$t: $runs executions in ${seconds} s, exit $rc, findings: $crashes (log: $log)"
  [[ $rc -eq 0 && $crashes -eq 0 ]] || failed=1
done
exit $failed
