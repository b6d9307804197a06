#!/usr/bin/env bash
# Runs on the GPU machine from a folder made by scripts/gpu-bundle.sh: the GPU tests and the
# C-ABI GPU tests once per kernel variant, compute-sanitizer memcheck (quick sweep), then the
# benchmark with any arguments given. Logs and results go to $OUT (default: ./gpu-out).
#
# Usage: gpu-check.sh [dgq-gpu-bench args...]
# Env:   VARIANTS  space-separated variants to test, each a comma-separated list of VAR=VALUE
#                  environment settings ("-" for none). Default: "-". (The kernels' launch knobs
#                  are GemmConfig fields, which the tests set themselves.)
#        NO_BENCH  set to skip the benchmark.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
# Here a GPU test that finds no usable GPU (driver not loading, kernels not built) fails
# instead of passing with "skipping".
export DGQ_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.mem --format=csv > "$OUT/env.txt"
cat commit.txt "$OUT/env.txt" 2>/dev/null

for v in ${VARIANTS:--}; do
  envs=()
  [[ "$v" != "-" ]] && IFS=, read -r -a envs <<< "$v"
  tag=${v//[^A-Za-z0-9]/_}
  env "${envs[@]}" timeout 200 ./gpu-tests --test-threads=1 > "$OUT/tests-$tag.log" 2>&1
  echo "[$v] gpu-tests rc=$?: $(grep -E 'test result' "$OUT/tests-$tag.log" | tail -n 1)"
  grep -E "panicked|mismatch" "$OUT/tests-$tag.log" | head -n 3
  env "${envs[@]}" timeout 100 ./capi-cuda-tests --test-threads=1 > "$OUT/capi-$tag.log" 2>&1
  echo "[$v] capi rc=$?: $(grep -E 'test result' "$OUT/capi-$tag.log" | tail -n 1)"
  grep -E "panicked" "$OUT/capi-$tag.log" | head -n 3
  env "${envs[@]}" DGQ_GPU_TEST_QUICK=1 timeout 200 /usr/local/cuda/bin/compute-sanitizer --tool memcheck \
    --error-exitcode 7 ./gpu-tests --test-threads=1 > "$OUT/sanitizer-$tag.log" 2>&1
  echo "[$v] sanitizer rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer-$tag.log" | tail -n 1)"
done

if [[ -z "${NO_BENCH:-}" ]]; then
  mkdir -p "$OUT/bench"
  s=$SECONDS
  timeout 400 ./dgq-gpu-bench --out-dir "$OUT/bench" "$@" 2> "$OUT/bench/bench.err" > /dev/null
  echo "bench rc=$? ($((SECONDS - s)) s)"
  grep "^| [0-9]" "$OUT/bench/gpu-bench.md" | cut -d'|' -f2-7,11,13
fi
