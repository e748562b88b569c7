#!/usr/bin/env bash
# Serves the default configuration: all-MiniLM-L6-v2 (from the PyPI package; its safetensors
# and the ONNX export made by scripts/setup.sh) with the default backend, torch, on port 8000.
# Any setting can be given in the environment (MODEL_NAMES, BACKEND=optimum, PORT, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
MODEL_DIR=$PWD/models/sentence-transformers/all-MiniLM-L6-v2
if [ ! -d "$MODEL_DIR" ]; then
  mkdir -p "$(dirname "$MODEL_DIR")"
  cp -r fixtures/all-MiniLM-L6-v2 "$MODEL_DIR"
fi
cd models
export MODEL_NAMES=${MODEL_NAMES:-sentence-transformers/all-MiniLM-L6-v2}
export EMBER_CONFIG=${EMBER_CONFIG:-../config/default.toml}
exec "$TARGET/release/ember"
