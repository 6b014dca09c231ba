#!/usr/bin/env bash
# On the GPU machine: every check that needs the GPU, in one run, on the binaries that
# tools/device/bundle.sh packed into .device-bundle/. Each step's output goes to a log in
# $OUT (or ./gpu-logs), and a summary line per step to stdout.
#
#   tools/device/gpu-checks.sh [tests] [bench] [model] [sanitize] [profile]
#     tests:    the CUDA test binaries (kernels against the CPU reference, the whole model)
#     bench:    bench-moe-layer at Qwen3-30B-A3B and Mixtral shapes, every expert path
#     model:    bench-model, the 48-layer Qwen3-30B-A3B (decode batches, prefill 2k and 8k),
#               with the WMMA and then the wgmma prefill, and decode without programmatic
#               dependent launch (MOE_PDL=0) to measure what it gives; decode at batch 128
#               with logits copied back, greedy and top-p sampled on the device
#     sanitize: compute-sanitizer memcheck over the kernel tests, racecheck over the
#               shared-memory kernels (slow: minutes)
#     profile:  ncu's per-kernel summary of a 4-layer model's decode and prefill steps
#     ep:       expert parallelism on one GPU without mpirun (one rank): the NCCL
#               communicator, the whole CUDA path through NCCL against the plain model, and
#               bench-ep on a 4-layer Qwen3-30B-A3B (exchange and step time over NCCL)
#   No argument: tests, bench, model and ep.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-gpu-logs}
mkdir -p "$out"
bin=$PWD/.device-bundle/bin
export LD_LIBRARY_PATH=$PWD/.device-bundle/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export MOE_TEST_DATA_DIR=$PWD/tests/data
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests bench model ep)

run() {  # run NAME COMMAND...: log to $out/NAME.log, one summary line
  local name=$1; shift
  local start=$SECONDS
  "$@" >"$out/$name.log" 2>&1
  local rc=$?
  # gtest's totals if it is a test, else the last line
  local summary
  summary=$(grep -E '^\[ *(PASSED|FAILED|SKIPPED) *\] [0-9]+ tests?' "$out/$name.log" | tr '\n' ' ')
  [ -z "$summary" ] && summary=$(tail -n 1 "$out/$name.log")
  echo "$name: exit $rc in $((SECONDS - start)) s: $summary"
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv >"$out/gpu.txt" 2>&1 ||
  echo "no nvidia-smi" >"$out/gpu.txt"
cat "$out/gpu.txt"
for step in "${steps[@]}"; do
  case $step in
    tests)
      for t in cuda_ops_test cuda_attention_test cuda_moe_kernels_test cuda_model_test cuda_sampler_test; do
        run "$t" "$bin/$t" --gtest_brief=1
      done
      MOE_PDL=0 run cuda_model_test-no-pdl "$bin/cuda_model_test" --gtest_brief=1
      ;;
    ep)
      run nccl_communicator_test "$bin/nccl_communicator_test" --gtest_brief=1
      run ep_cuda_model_test "$bin/ep_cuda_model_test" --gtest_brief=1
      "$bin/moe-make-model" --config tests/data/configs/qwen3-30b-a3b.json --layers 4 --out /tmp/q4 >/dev/null &&
        run bench-ep "$bin/bench-ep" --model /tmp/q4 --backend cuda --batch 1,64,256 --steps 5
      ;;
    bench)
      run bench-moe-layer "$bin/bench-moe-layer" --paths auto,wmma,wgmma
      ;;
    model)
      run bench-model "$bin/bench-model"
      run bench-model-sampling "$bin/bench-model" --batches 128 --prefill= --sampling logits,greedy,top_p
      run bench-model-wgmma "$bin/bench-model" --batches 1 --wgmma_prefill
      MOE_PDL=0 run bench-model-no-pdl "$bin/bench-model" --batches 1,8 --prefill 2048
      ;;
    sanitize)
      for t in cuda_ops_test cuda_attention_test cuda_moe_kernels_test; do
        run "memcheck-$t" compute-sanitizer --tool memcheck --error-exitcode 1 "$bin/$t" \
          --gtest_brief=1 --gtest_filter=-*RealWidths*
      done
      run racecheck-moe compute-sanitizer --tool racecheck --error-exitcode 1 \
        "$bin/cuda_moe_kernels_test" --gtest_brief=1 --gtest_filter=*Prefill*:*Route*:*Dispatch*
      run racecheck-attention compute-sanitizer --tool racecheck --error-exitcode 1 \
        "$bin/cuda_attention_test" --gtest_brief=1 --gtest_filter=Prefill/*
      ;;
    profile)
      run ncu-decode ncu --clock-control none --print-summary per-kernel "$bin/bench-model" \
        --layers 4 --batches 1,32 --steps 3 --prefill 2048
      ;;
    *) echo "unknown step $step (tests, bench, model, sanitize, profile)"; exit 2 ;;
  esac
done
