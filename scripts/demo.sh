#!/usr/bin/env bash
# The main job: quantize SmolLM2-135M to W4A8 with RTN, SmoothQuant and DGQ on the CPU and compare
# WikiText-2 test perplexity against the float model.
#
# Defaults are sized for < 10 minutes on 2 cores: calibration 8 windows × 512 tokens drawn from
# WikiText-2 *valid* (seed 0), evaluation on the first 10 windows × 512 tokens of WikiText-2 *test*,
# group size 64 (SmolLM2's d = 576 is not a multiple of 128). Override with the environment:
#   DEMO_CALIB_WINDOWS, DEMO_EVAL_WINDOWS, DEMO_GROUP_SIZE, DGQ_DATA (folder with wiki.*.tokens).
# The README results table uses 32 calibration and 40 evaluation windows (see the commands there).
# Without WikiText-2 it falls back to the repository's own text (numbers are then not comparable).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root="$PWD"
calib_windows="${DEMO_CALIB_WINDOWS:-8}"
eval_windows="${DEMO_EVAL_WINDOWS:-10}"
group="${DEMO_GROUP_SIZE:-64}"
cache="${DGQ_CACHE:-$HOME/.cache/dgq}"
work="$cache/demo"
mkdir -p "$work"

model="$(scripts/fetch-model.sh)"
data="${DGQ_DATA:-$root/../shared/data/wikitext-2}"
if [[ -f "$data/wiki.test.tokens" && -f "$data/wiki.valid.tokens" ]]; then
    test_text="$data/wiki.test.tokens"
    calib_text="$data/wiki.valid.tokens"
else
    echo "WikiText-2 not found under $data; using the repository's own text instead" >&2
    test_text="$work/fallback.txt"
    find "$root/crates" "$root/docs" "$root/README.md" -name '*.md' -o -name '*.rs' |
        sort | xargs cat >"$test_text"
    calib_text="$test_text"
fi

cargo build --release --bin dgq
dgq="${CARGO_TARGET_DIR:-$root/target}/release/dgq"

ppl_of() { sed -E 's/.*"ppl":([0-9.eE+-]+).*/\1/'; }
tps_of() { sed -E 's/.*"tokens_per_second":([0-9.eE+-]+).*/\1/'; }

echo "== evaluating the float model ($eval_windows windows × 512 of $(basename "$test_text"))" >&2
fp_json="$("$dgq" eval --model "$model" --data "$test_text" --ctx 512 --windows "$eval_windows" --json)"
fp_ppl="$(ppl_of <<<"$fp_json")"
rows=("| FP (dequantized Q4_1 GGUF, f32) | $(printf '%.3f' "$fp_ppl") | — | — |")
for method in rtn smoothquant dgq; do
    out="$work/smollm2-$method-g$group.dgq.safetensors"
    echo "== quantizing with $method (calibration: $calib_windows × 512 of $(basename "$calib_text"))" >&2
    t0=$(date +%s)
    "$dgq" quantize --model "$model" --method "$method" --calib "$calib_text" --out "$out" \
        --windows "$calib_windows" --ctx 512 --seed 0 --group-size "$group" --no-layer-errors >/dev/null
    secs=$(( $(date +%s) - t0 ))
    json="$("$dgq" eval --model "$model" --quantized "$out" --data "$test_text" --ctx 512 \
        --windows "$eval_windows" --json)"
    ppl="$(ppl_of <<<"$json")"
    delta="$(awk -v a="$ppl" -v b="$fp_ppl" 'BEGIN { printf "%+.1f %%", 100 * (a / b - 1) }')"
    rows+=("| $method W4A8 g$group | $(printf '%.3f' "$ppl") | $delta | ${secs}s |")
done

echo
echo "SmolLM2-135M-Instruct, WikiText-2 perplexity (ctx 512, first $eval_windows windows; calibration $calib_windows × 512, seed 0)"
echo "forward speed of the float model: $(printf '%.0f' "$(tps_of <<<"$fp_json")") tokens/s"
echo
echo "| Method | Perplexity | vs FP | quantize time |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
