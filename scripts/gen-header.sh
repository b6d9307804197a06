#!/usr/bin/env bash
# Regenerates include/dgq.h from crates/dgq-capi with cbindgen (the `dgq-capi-header` tool of that
# crate, built with its `header` feature). Commit the result; CI checks it with check-header.sh.
#
# Usage: scripts/gen-header.sh [OUTPUT]    (default OUTPUT: include/dgq.h)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-include/dgq.h}"
locked=()
if [[ -n "${CI:-}" ]]; then
  locked=(--locked)
fi
mkdir -p "$(dirname "$out")"
cargo run -q "${locked[@]}" -p dgq-capi --features header --bin dgq-capi-header -- "$out"
