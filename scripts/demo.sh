#!/usr/bin/env bash
# The main job, first version: quantizes a synthetic linear layer with outlier activation channels
# with direct RTN decomposition and with the DGQ two-phase search, and prints their output error.
# (The model pipeline replaces this body: fetch SmolLM2, calibrate, quantize, perplexity.)
#
# Needs only Rust; extra arguments go to the example (see examples/synthetic_layer.rs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo run --release --example synthetic_layer -- "$@"
