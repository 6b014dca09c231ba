#!/usr/bin/env bash
# A soak of moe-server under load with misbehaving clients, run by hand (not in CI):
#
#   tools/soak.sh [--minutes 30] [--model DIR] [--out /tmp/moe-soak]
#
# It serves --model (default: the demo model) with a small batch and KV cache, so that the
# queue stays non-empty and the cache holds less than a full batch, and runs two moe-bench clients at once
# for --minutes, one over gRPC and one over the OpenAI HTTP API, each with 30% of requests
# cancelled at a random token, 10% sent with a 100 ms deadline and 5% of clients that stop
# reading for 3 s. Every 10 s it records the server's resident memory and its /metrics
# gauges in --out/samples.csv. Then it waits for the server to go idle, reads the KV blocks
# still in use, sends a last burst of requests and a SIGTERM while they run (the drain
# must finish them), and prints a summary. Exits 1 when a check fails:
#   - RSS at the start of the load, at half time and at the end within 10% of each other;
#   - no request failed other than by its client's own cancel or deadline;
#   - zero KV blocks in use once idle;
#   - the server exited 0 after the SIGTERM, and the burst it drained completed.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
minutes=30 model="$repo/models/demo" out=/tmp/moe-soak build="${MOE_BUILD:-$repo/build}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (--minutes N, --model DIR, --out DIR)" >&2; exit 2 ;;
  esac
done
[[ "$minutes" =~ ^[0-9]+$ && "$minutes" -gt 0 ]] || { echo "--minutes must be a whole number > 0" >&2; exit 2; }
command -v curl >/dev/null || { echo "soak: needs curl" >&2; exit 2; }
cmake --build "$build" --target moe-server moe-bench >&2
mkdir -p "$out"
rm -f "$out"/*.csv "$out"/*.log "$out"/*.json

grpc_port=50091 http_port=8091 metrics_port=8092
vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$model/config.json")
"$build/bin/moe-server" --model "$model" --port "$grpc_port" --http_port "$http_port" \
    --metrics_port "$metrics_port" --max_seqs 16 --kv_blocks 96 --log_level warning \
    >"$out/server.log" 2>&1 &
server=$!
trap 'kill -9 "$server" 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  grep -q "serving" "$out/server.log" && break
  kill -0 "$server" 2>/dev/null || { echo "soak: the server did not start:" >&2; cat "$out/server.log" >&2; exit 1; }
  sleep 0.1
done

metric() {  # metric NAME: its value on /metrics, or empty
  curl -s --max-time 5 "http://127.0.0.1:$metrics_port/metrics" | awk -v n="$1" '$1 == n { print $2 }'
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server/status"; }

start=$(date +%s)
echo "seconds,rss_kib,running,waiting,kv_blocks_used,active_streams" >"$out/samples.csv"
sample() {
  echo "$(($(date +%s) - start)),$(rss_kib),$(metric moe_requests_running),$(metric moe_requests_waiting),$(metric moe_kv_cache_blocks_used),$(metric moe_active_streams)" >>"$out/samples.csv"
}
( while kill -0 "$server" 2>/dev/null; do sample; sleep 10; done ) &
sampler=$!

faults=(--cancel_fraction 0.3 --deadline_fraction 0.1 --deadline 100ms --stall_fraction 0.05 --stall 3s)
load=(--vocab "$vocab" --random_input_len 64 --random_output_len 64 --random_range_ratio 0.5
      --num_prompts 1000 --max_concurrency 24 --duration "${minutes}m" --save_result)
set +e
"$build/bin/moe-bench" --backend grpc --address "127.0.0.1:$grpc_port" --seed 1 "${load[@]}" "${faults[@]}" \
    --result_filename "$out/grpc.json" >"$out/grpc.log" 2>&1 &
bench_grpc=$!
"$build/bin/moe-bench" --backend openai --base_url "http://127.0.0.1:$http_port" --seed 2 "${load[@]}" "${faults[@]}" \
    --result_filename "$out/http.json" >"$out/http.log" 2>&1 &
bench_http=$!
wait "$bench_grpc"; rc_grpc=$?
wait "$bench_http"; rc_http=$?
set -e
sample

# Idle: every request ended, so every block should be back.
for _ in $(seq 300); do
  [[ "$(metric moe_requests_running)" == 0 && "$(metric moe_requests_waiting)" == 0 ]] && break
  sleep 0.1
done
blocks_used=$(metric moe_kv_cache_blocks_used)
rss_idle=$(rss_kib)

# A last burst, and a SIGTERM while it runs: the drain finishes what was accepted.
"$build/bin/moe-bench" --backend grpc --address "127.0.0.1:$grpc_port" --vocab "$vocab" --num_prompts 32 \
    --random_input_len 32 --random_output_len 128 >"$out/burst.log" 2>&1 &
burst=$!
sleep 1
kill -TERM "$server"
set +e
wait "$burst"; rc_burst=$?
wait "$server"; rc_server=$?
set -e
trap - EXIT
kill "$sampler" 2>/dev/null || true

# The summary, and the checks.
python3 - "$out" "$minutes" "$rc_grpc" "$rc_http" "$rc_burst" "$rc_server" "$blocks_used" "$rss_idle" <<'EOF'
import csv, json, sys
out, minutes, rc_grpc, rc_http, rc_burst, rc_server, blocks_used, rss_idle = sys.argv[1:]
rows = [r for r in csv.DictReader(open(f"{out}/samples.csv")) if r["rss_kib"]]
load = [r for r in rows if r["running"] != ""]
t = lambda r: int(r["seconds"])
def at(seconds):  # the sample nearest a time
    return min(load, key=lambda r: abs(t(r) - seconds))
end = int(minutes) * 60
points = {"start (60 s in)": at(60), f"half time ({end // 120} min)": at(end // 2), "end": at(end)}
rss = {k: int(r["rss_kib"]) / 1024 for k, r in points.items()}
spread = (max(rss.values()) - min(rss.values())) / min(rss.values())
busy = [r for r in load if 60 <= t(r) <= end]
queued = sum(1 for r in busy if int(r["waiting"] or 0) > 0)
results = {name: json.load(open(f"{out}/{name}.json")) for name in ("grpc", "http")}
done = sum(r["completed"] for r in results.values())
failed = sum(len(r["errors"]) for r in results.values())
print(f"soak over {minutes} min, samples in {out}/samples.csv")
for k, v in rss.items():
    print(f"  RSS {k:<22} {v:8.1f} MiB (at {t(points[k])} s)")
print(f"  RSS spread                 {100 * spread:8.1f} %  (limit 10 %); idle after the load {int(rss_idle) / 1024:.1f} MiB")
print(f"  queue non-empty in {queued} of {len(busy)} samples under load")
for name, r in results.items():
    print(f"  {name:>4}: {r['completed']} completed ({r['stalled_completed']} of them stalled readers), "
          f"{r['cancelled']} cancelled by the client, {r['deadline_exceeded']} past their deadline, "
          f"{len(r['errors'])} failed; {r['total_output_tokens']} tokens, {r['request_throughput']:.1f} req/s")
print(f"  requests done: {done}; failed: {failed}")
print(f"  KV blocks in use once idle: {blocks_used}")
print(f"  SIGTERM during a burst of 32: the burst exited {rc_burst}, the server {rc_server}")
checks = {
    "RSS flat within 10%": spread <= 0.10,
    "no unplanned failure": failed == 0 and rc_grpc == "0" and rc_http == "0",
    "zero KV blocks in use": blocks_used == "0",
    "clean exit after SIGTERM, burst drained": rc_server == "0" and rc_burst == "0",
}
for name, ok in checks.items():
    print(f"  {'PASS' if ok else 'FAIL'}  {name}")
sys.exit(0 if all(checks.values()) else 1)
EOF
