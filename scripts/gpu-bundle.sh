#!/usr/bin/env bash
# Builds the GPU test and benchmark executables here (nvcc + Rust) and gathers them, stripped,
# into one folder for a GPU machine that has the driver and cuBLAS but no Rust or CUTLASS; run
# them there with scripts/gpu-check.sh (copied into the same folder).
#
# Usage: scripts/gpu-bundle.sh [DIR]   (default DIR: .gpu, ignore it in .git/info/exclude)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir="${1:-.gpu}"
# shellcheck disable=SC1091
source "${DGQ_CACHE:-$HOME/.cache/dgq}/toolchain/env.sh"
mkdir -p "$dir"

# The test executables' paths come from cargo's JSON messages (their hashed names change).
exe_of() {  # package, test target name, extra cargo args...
  local pkg=$1 name=$2
  shift 2
  cargo test --release -p "$pkg" "$@" --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == name \
            and "test" in m["target"]["kind"]:
        print(m["executable"])
' "$name" | tail -n 1
}

gpu=$(exe_of dgq-cuda gpu)
capi=$(exe_of dgq-capi cuda --features cuda)
cargo build --release -p dgq-gpu-bench
[[ -n "$gpu" && -n "$capi" ]] || { echo "test executables not found" >&2; exit 1; }
cp "$gpu" "$dir/gpu-tests"
cp "$capi" "$dir/capi-cuda-tests"
cp target/release/dgq-gpu-bench "$dir/dgq-gpu-bench"
cp scripts/gpu-check.sh "$dir/"
strip "$dir/gpu-tests" "$dir/capi-cuda-tests" "$dir/dgq-gpu-bench"
git rev-parse --short HEAD > "$dir/commit.txt"
ls -la "$dir"
