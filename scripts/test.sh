#!/usr/bin/env bash
# Everything CI checks, in one command: formatting, clippy (default and CUDA features), rustdoc,
# all tests (default and CUDA features), a brief run of every fuzz target.
#
# Installs what it needs by itself, idempotently, into ${DGQ_CACHE:-$HOME/.cache/dgq} (outside the
# repository, so fresh clones reuse it): the CUDA build toolchain (nvcc + CUTLASS headers from PyPI,
# libclang) so the `cuda` feature compiles even on machines without a GPU, the small test model
# (SmolLM2) so the model tests run, and cargo-fuzz (scripts/fuzz.sh). GPU tests skip with a printed
# reason when no GPU is present.
#
# Usage: scripts/test.sh
# Env:   DGQ_CACHE   cache folder (default: $HOME/.cache/dgq)
#        CI          when set (any value), cargo runs with --locked so a stale Cargo.lock fails
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DGQ_CACHE="${DGQ_CACHE:-$HOME/.cache/dgq}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

locked=()
if [[ -n "${CI:-}" ]]; then
  locked=(--locked)
fi

# Per-step timing, printed as each step ends and again as a summary on exit (also on failure, so a
# slow or failing step is easy to spot in a CI log).
STEP_NAMES=()
STEP_SECS=()
STEP_STATUS=()
T0=$SECONDS

summary() {
  local rc=$?
  echo
  echo "== test.sh summary =="
  local i
  for i in "${!STEP_NAMES[@]}"; do
    printf '  %-8s %5ds  %s\n' "${STEP_STATUS[$i]}" "${STEP_SECS[$i]}" "${STEP_NAMES[$i]}"
  done
  printf '  total    %5ds  (exit %d)\n' "$((SECONDS - T0))" "$rc"
}
trap summary EXIT

# step NAME CMD...: runs CMD, records its wall time and outcome; a failure stops the script.
step() {
  local name=$1
  shift
  echo
  echo "==> $name"
  echo "    \$ $*"
  local t=$SECONDS
  local rc=0
  "$@" || rc=$?
  STEP_NAMES+=("$name")
  STEP_SECS+=("$((SECONDS - t))")
  if [[ $rc -eq 0 ]]; then
    STEP_STATUS+=(ok)
    echo "<== $name: ok in $((SECONDS - t))s"
  else
    STEP_STATUS+=(FAILED)
    echo "<== $name: FAILED (exit $rc) after $((SECONDS - t))s"
    exit "$rc"
  fi
}

skip() {
  STEP_NAMES+=("$1 ($2)")
  STEP_SECS+=(0)
  STEP_STATUS+=(skipped)
  echo
  echo "==> $1: skipped: $2"
}

# --- Prerequisites and assets -----------------------------------------------------------------

# rustfmt and clippy are rustup components that minimal installs leave out.
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null; then
      step "rustup component add $comp" rustup component add "$comp"
    else
      echo "test.sh: error: cargo $comp is missing and rustup is not available to add it" >&2
      exit 1
    fi
  fi
done

cuda_toolchain=0
if [[ -f scripts/setup-toolchain.sh ]]; then
  step "CUDA toolchain (setup-toolchain.sh)" bash scripts/setup-toolchain.sh
  # shellcheck source=/dev/null
  source "$DGQ_CACHE/toolchain/env.sh"
fi
if [[ -n "${DGQ_NVCC:-}" && -x "${DGQ_NVCC}" ]]; then
  cuda_toolchain=1
fi

if [[ -f scripts/fetch-model.sh ]]; then
  step "test model (fetch-model.sh)" bash scripts/fetch-model.sh
else
  skip "test model" "scripts/fetch-model.sh not present"
fi

# --- Static checks ----------------------------------------------------------------------------

step "cargo fmt --check" cargo fmt --all -- --check
step "clippy (default features)" \
  cargo clippy "${locked[@]}" --workspace --all-targets -- -D warnings
if [[ $cuda_toolchain -eq 1 ]]; then
  # --all-features turns on `cuda` in every crate that has it (dgq, dgq-cuda, later dgq-capi).
  step "clippy (all features, CUDA)" \
    cargo clippy "${locked[@]}" --workspace --all-targets --all-features -- -D warnings
else
  skip "clippy (all features, CUDA)" "no CUDA toolchain (DGQ_NVCC unset)"
fi

# Broken intra-doc links and malformed doc comments fail here, as they would on docs.rs.
step "rustdoc (warnings are errors)" \
  env RUSTDOCFLAGS="-D warnings" cargo doc "${locked[@]}" --workspace --no-deps

# --- Tests ------------------------------------------------------------------------------------

step "cargo test (default features)" cargo test "${locked[@]}" --workspace
if [[ $cuda_toolchain -eq 1 ]]; then
  # The whole workspace again, not `-p dgq-cuda`: a narrower package selection resolves dependency
  # features differently and rebuilds half the graph; this way only the crates with a `cuda`
  # feature recompile. --nocapture so each GPU test's skip reason (no device) shows in the log.
  step "cargo test (all features, CUDA)" \
    cargo test "${locked[@]}" --workspace --all-features -- --nocapture
else
  skip "cargo test (all features, CUDA)" "no CUDA toolchain (DGQ_NVCC unset)"
fi

# --- Fuzzing ----------------------------------------------------------------------------------
# Every libFuzzer target (packed format, GGUF, HF directory, C ABI open) on the committed seeds
# and past crash inputs, then a few seconds of mutation each. The instrumented build is cached in
# $DGQ_CACHE/fuzz-target; the first one on a machine compiles every dependency (see fuzz.sh).
step "fuzz targets on the seeds, 8 s each (fuzz.sh)" bash scripts/fuzz.sh 8

# --- C API header -----------------------------------------------------------------------------
# HOOK: scripts/check-header.sh arrives with the C API (dgq-capi). It regenerates include/dgq.h
# with cbindgen and fails if the checked-in header differs; until then there is nothing to check.
if [[ -f scripts/check-header.sh ]]; then
  step "C header is up to date (check-header.sh)" bash scripts/check-header.sh
else
  skip "C header check" "scripts/check-header.sh not present yet"
fi
# Install libdgq into a temporary prefix; build and run the C/C++ consumers (shared and static),
# the bad-input test under valgrind, and the header in strict C99/C++17.
if [[ -f scripts/test-capi.sh ]]; then
  step "C API consumers (test-capi.sh)" bash scripts/test-capi.sh
else
  skip "C API consumers" "scripts/test-capi.sh not present yet"
fi

echo
echo "All checks passed."
