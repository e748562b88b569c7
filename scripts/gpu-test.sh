#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: set up, check the torch and ctranslate2 plugins on the GPU
# with every model kind they run, run their end-to-end suites with DEVICE=cuda, and print the
# throughput of each backend (torch and ctranslate2 on CUDA; optimum and candle on the CPU, as
# their pinned runtimes here are CPU builds). Usage: ./scripts/gpu-test.sh [cuda:N]
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda}
bash scripts/setup.sh
BIN=${CARGO_TARGET_DIR:-target}/release
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
HF_HOME=$(mktemp -d)
export HF_HOME
for model in all-MiniLM-L6-v2 tiny-rerank-xlmr tiny-clip; do
  "$BIN/ember" plugin check "$BIN/libember_torch.so" --model "fixtures/$model" --device "$DEVICE"
done
# ctranslate2: fp32 for the parity bounds, then the default (int8_float16 on CUDA).
for check in all-MiniLM-L6-v2:fp32 tiny-rerank-bert:fp32 tiny-rerank-xlmr:fp32 all-MiniLM-L6-v2:auto; do
  "$BIN/ember" plugin check "$BIN/libember_ctranslate2.so" --model "fixtures/${check%%:*}" \
    --device "$DEVICE" --dtype "${check#*:}"
done
# The e2e suites pin their own DTYPES where parity needs it (fp32 for torch).
EMBER_TEST_DEVICE=$DEVICE EMBER_TEST_DTYPES=fp32 \
  cargo test --release --locked -p ember-e2e --test torch_backend \
  -- --test-threads=1
EMBER_TEST_DEVICE=$DEVICE \
  cargo test --release --locked -p ember-e2e --test ctranslate2_backend \
  -- --test-threads=1
for backend in torch:$DEVICE:auto ctranslate2:$DEVICE:auto optimum:cpu:auto candle:cpu:auto; do
  IFS=: read -r name device dtype <<<"$backend"
  BACKEND=$name DEVICE=$device DTYPES=$dtype BENCH_SECONDS=${BENCH_SECONDS:-5} \
    cargo run --release --locked -p ember-e2e --bin ember-bench
done
