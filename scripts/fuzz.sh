#!/usr/bin/env bash
# Builds and runs the libFuzzer targets of fuzz/ (cargo-fuzz) on stable Rust, each for SECONDS,
# starting from the committed seeds (fuzz/seeds/<target>, made by the tests: see fuzz/README.md)
# and the inputs of past crashes (fuzz/regressions/<target>). Prints the executions per target.
#
# Installs cargo-fuzz by itself, idempotently, from crates.io into
# ${DGQ_CACHE:-$HOME/.cache/dgq}/cargo-fuzz, and builds into ${DGQ_CACHE}/fuzz-target so the
# instrumented dependencies are compiled once per machine, not once per clone.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS  fuzzing time per target (default 60; 0 runs each seed once and stops)
#   TARGET   any of: format gguf hf_dir capi_open (default: all four)
# Env:   DGQ_CACHE          cache folder (default: $HOME/.cache/dgq)
#        DGQ_FUZZ_SANITIZER address (default) or none (faster, finds only panics and aborts)
#        DGQ_FUZZ_CORPUS    folder of the growing corpora (default: fuzz/corpus, git-ignored)
# A crash stops the script with exit 1; its input is under fuzz/artifacts/<target>/.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DGQ_CACHE="${DGQ_CACHE:-$HOME/.cache/dgq}"

secs="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(format gguf hf_dir capi_open)
fi
if ! [[ "$secs" =~ ^[0-9]+$ ]]; then
  echo "fuzz.sh: SECONDS must be a whole number, got '$secs'" >&2
  exit 2
fi

# cargo-fuzz passes nightly-only flags (-Zsanitizer, sancov passes): stable rustc accepts them
# with RUSTC_BOOTSTRAP=1, so no nightly toolchain is needed.
export RUSTC_BOOTSTRAP=1
fuzz_root="$DGQ_CACHE/cargo-fuzz"
cargo_fuzz="$fuzz_root/bin/cargo-fuzz"
if [[ ! -x "$cargo_fuzz" ]]; then
  echo "fuzz.sh: installing cargo-fuzz into $fuzz_root" >&2
  cargo install --quiet --locked --version '^0.13' --root "$fuzz_root" cargo-fuzz >&2
fi

sanitizer="${DGQ_FUZZ_SANITIZER:-address}"
target_dir="$DGQ_CACHE/fuzz-target"
corpus_root="${DGQ_FUZZ_CORPUS:-fuzz/corpus}"

# Seeds of each target (the C ABI opens the same packed files as the format reader).
seeds_of() {
  case "$1" in
    capi_open) echo fuzz/seeds/format ;;
    *) echo "fuzz/seeds/$1" ;;
  esac
}

t0=$SECONDS
build_log="$(mktemp)"
for t in "${targets[@]}"; do
  if ! "$cargo_fuzz" build --release --debug-assertions --sanitizer "$sanitizer" \
    --target-dir "$target_dir" "$t" >"$build_log" 2>&1; then
    tail -40 "$build_log" >&2
    echo "fuzz.sh: building $t failed" >&2
    exit 1
  fi
done
rm -f "$build_log"
build_secs=$((SECONDS - t0))
echo "fuzz.sh: build ${build_secs}s" >&2

declare -A execs
status=0
for t in "${targets[@]}"; do
  corpus="$corpus_root/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  dirs=("$corpus" "$(seeds_of "$t")")
  if [[ -d "fuzz/regressions/$t" ]]; then
    dirs+=("fuzz/regressions/$t")
  fi
  if [[ "$secs" -eq 0 ]]; then
    limit=(-runs=0)
  else
    limit=(-max_total_time="$secs")
  fi
  log="$(mktemp)"
  # max_len: the seeds are a few KB; malloc_limit: no input that small may allocate 512 MB at once.
  rc=0
  "$cargo_fuzz" run --release --debug-assertions --sanitizer "$sanitizer" \
    --target-dir "$target_dir" "$t" "${dirs[@]}" -- \
    "${limit[@]}" -max_len=16384 -malloc_limit_mb=512 -rss_limit_mb=2048 \
    -timeout=20 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" \
    >"$log" 2>&1 || rc=$?
  n="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
  execs[$t]="${n:-?}"
  if [[ $rc -ne 0 ]]; then
    tail -60 "$log" >&2
    echo "fuzz.sh: $t FAILED (exit $rc); input saved under fuzz/artifacts/$t/" >&2
    status=1
  fi
  rm -f "$log"
  echo "fuzz.sh: $t: ${execs[$t]} executions in ${secs}s (exit $rc)" >&2
done

echo
echo "== fuzz.sh summary (sanitizer $sanitizer, ${secs}s per target, build ${build_secs}s) =="
for t in "${targets[@]}"; do
  printf '  %-10s %12s executions\n' "$t" "${execs[$t]}"
done
exit "$status"
