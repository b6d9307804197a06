#!/usr/bin/env bash
# Prints the SASS (sm_90a machine code) of the kernels in crates/dgq-cuda/cuda/*.cu whose mangled name matches a
# pattern, compiled with build.rs's nvcc flags — for reading instruction order, loop length and
# register use without a GPU. cuobjdump and nvdisasm come from PyPI wheels, installed on first use
# into the toolchain cache (the 13.0 wheels do not exist; 13.2 reads sm_90a code).
#
# Usage: scripts/sass.sh PATTERN [FILE.cu] [--marks]
#   PATTERN  grep -E pattern on the mangled name, e.g. 'decode_kernelILi2ELi0ELi8E'
#   FILE.cu  default crates/dgq-cuda/cuda/decode.cu
#   --marks  only loads, stores, barriers, branches and MMAs (with their addresses)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ $# -ge 1 ]] || { sed -n '2,11p' "$0" >&2; exit 2; }
pattern=$1
src=crates/dgq-cuda/cuda/decode.cu
marks=0
for a in "${@:2}"; do
  case "$a" in
    --marks) marks=1 ;;
    *) src=$a ;;
  esac
done

CACHE="${DGQ_CACHE:-$HOME/.cache/dgq}"
# shellcheck disable=SC1091
source "$CACHE/toolchain/env.sh"
tools="$CACHE/toolchain/sass-tools"
bin="$tools/nvidia/cu13/bin"
if [[ ! -x "$bin/cuobjdump" || ! -x "$bin/nvdisasm" ]]; then
  echo "sass.sh: installing cuobjdump and nvdisasm 13.2 into $tools" >&2
  "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --upgrade --target "$tools" "nvidia-cuda-cuobjdump==13.2.51" "nvidia-cuda-nvdisasm==13.2.51"
  chmod +x "$bin"/*
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The same flags as crates/dgq-cuda/build.rs (NVCC_FLAGS), to a cubin instead of an object.
"$DGQ_NVCC" -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr \
  -Icrates/dgq-cuda/cuda/include -cubin "$src" -o "$tmp/k.cubin"
PATH="$bin:$PATH" "$bin/cuobjdump" -sass "$tmp/k.cubin" |
  awk -v k="$pattern" '/Function :/ { p = ($0 ~ k) } p' |
  if [[ $marks == 1 ]]; then
    grep -E "Function :|LDG|STG|LDS|STS|LDSM|LDGSTS|DEPBAR|BAR|BRA|EXIT|MMA|ATOM|RED|MEMBAR" |
      sed -E 's@ */\* 0x[0-9a-f]+ \*/@@; s/^ +//'
  else
    cat
  fi
