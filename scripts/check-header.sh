#!/usr/bin/env bash
# Fails when include/dgq.h differs from what cbindgen generates from crates/dgq-capi now, i.e.
# when someone changed the C API without running scripts/gen-header.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
bash scripts/gen-header.sh "$tmp/dgq.h"
if ! diff -u include/dgq.h "$tmp/dgq.h"; then
  echo "check-header.sh: include/dgq.h is stale: run scripts/gen-header.sh and commit the result" >&2
  exit 1
fi
echo "check-header.sh: include/dgq.h is up to date"
