#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: set up, check the torch plugin on the GPU with every model
# kind, run the end-to-end suite with DEVICE=cuda (fp32, so that the parity bounds hold), and
# print the throughput of each backend (torch on CUDA; optimum and candle on the CPU, as their
# pinned runtimes here are CPU builds). Usage: ./scripts/gpu-test.sh [cuda:N]
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${1:-cuda}
bash scripts/setup.sh
BIN=${CARGO_TARGET_DIR:-target}/release
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
for model in all-MiniLM-L6-v2 tiny-rerank-xlmr tiny-clip; do
  "$BIN/ember" plugin check "$BIN/libember_torch.so" --model "fixtures/$model" --device "$DEVICE"
done
EMBER_TEST_DEVICE=$DEVICE EMBER_TEST_DTYPES=fp32 \
  cargo test --release --locked -p ember-e2e --test torch_backend \
  -- --test-threads=1
for backend in torch:$DEVICE optimum:cpu candle:cpu; do
  BACKEND=${backend%%:*} DEVICE=${backend#*:} BENCH_SECONDS=${BENCH_SECONDS:-5} \
    cargo run --release --locked -p ember-e2e --bin ember-bench
done
