#!/usr/bin/env bash
# Runs scripts/reference_logits.py in a venv (gguf, numpy, regex from PyPI) kept in the cache dir.
# Usage: scripts/reference_logits.sh [MODEL.gguf] [OUT.json]
# Defaults: the SmolLM2 GGUF from scripts/fetch-model.sh, and the fixture the dgq-model tests read.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${DGQ_CACHE:-$HOME/.cache/dgq}"
venv="$cache/venv-ref"
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet gguf numpy regex
fi
model="${1:-$("$here/fetch-model.sh")}"
out="${2:-$here/../crates/dgq-model/tests/data/smollm2_reference.json}"
mkdir -p "$(dirname "$out")"
"$venv/bin/python" "$here/reference_logits.py" "$model" --out "$out" \
    --prompt "The capital of France is Paris. In 2024, it had 2,102,650 residents, and" \
    --prompt "Hello world!" \
    --prompt " = Valkyria Chronicles III = " \
    --prompt "<|im_start|>user
What is 12+34?<|im_end|>" \
    --prompt "naïve café — über   spaces	tab's don't"
