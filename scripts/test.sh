#!/usr/bin/env bash
# The whole test suite, from a fresh clone: setup (venv from pinned wheels, test models,
# release build), formatting and lint, unit tests, then the end-to-end tests that run the
# real `ember` binary with the real plugins over HTTP. Ends with one line of totals.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings
cargo build --release --locked -p ember-abi-mismatch -p ember-broken -p ember-liar \
  -p ember-liar30
LOG=$(mktemp)
CHECK_HOME=$(mktemp -d)
trap 'rm -rf "$LOG" "$CHECK_HOME"' EXIT
cargo test --release --locked --workspace --exclude ember-e2e 2>&1 | tee "$LOG"
# The conformance checker on every plugin in the repository, with a model of each kind it runs
# (plugin:model[:dtype]); conversions the ctranslate2 plugin makes go to a scratch HF_HOME.
BIN=${CARGO_TARGET_DIR:-target}/release
for check in optimum:all-MiniLM-L6-v2 optimum:tiny-rerank-xlmr optimum:tiny-clip \
             optimum:tiny-clip-split candle:all-MiniLM-L6-v2 candle:tiny-bert-lasttoken \
             torch:all-MiniLM-L6-v2 torch:tiny-bert-lasttoken torch:tiny-rerank-bert \
             torch:tiny-rerank-xlmr torch:tiny-clip torch:tiny-bert-dense optimum:tiny-bert-dense \
             ctranslate2:all-MiniLM-L6-v2:fp32 ctranslate2:all-MiniLM-L6-v2:int8 \
             ctranslate2:tiny-bert-lasttoken:fp32 ctranslate2:tiny-rerank-bert:fp32 \
             ctranslate2:tiny-rerank-xlmr:fp32 ctranslate2:ct2-all-MiniLM-L6-v2:int8 \
             torch:tiny-distilbert torch:tiny-mpnet torch:tiny-qwen3 torch:tiny-rerank-distilbert \
             torch:tiny-rerank-mpnet torch:tiny-rerank-qwen3 ctranslate2:tiny-distilbert:fp32 \
             ctranslate2:tiny-rerank-distilbert:fp32 torch:tiny-qwen2 torch:tiny-mistral \
             torch:tiny-llama optimum:tiny-qwen3 torch:tiny-modernbert optimum:tiny-modernbert \
             torch:tiny-rerank-modernbert torch:tiny-gemma3 torch:tiny-deberta \
             torch:tiny-rerank-deberta torch:tiny-rerank-qwen3-lm optimum:tiny-distilbert \
             optimum:tiny-mpnet optimum:tiny-deberta torch:tiny-bert-instruct \
             optimum:tiny-bert-instruct candle:tiny-bert-instruct \
             ctranslate2:tiny-bert-instruct:fp32 torch:tiny-rerank-qwen2 \
             torch:tiny-rerank-mistral torch:tiny-rerank-llama torch:tiny-rerank-gemma3 \
             torch:tiny-classify-bert optimum:tiny-classify-bert \
             ctranslate2:tiny-classify-distilbert:fp32 torch:tiny-classify-distilbert \
             torch:tiny-splade torch:tiny-splade-xlmr optimum:tiny-splade; do
  IFS=: read -r plugin model dtype <<<"$check"
  HF_HOME=$CHECK_HOME "$BIN/ember" plugin check "$BIN/libember_$plugin.so" --model "fixtures/$model" \
    --dtype "${dtype:-auto}" 2>/dev/null | tee -a "$LOG" | tail -n 1
done
grep -q "does NOT conform" "$LOG" && { echo "a plugin failed ember plugin check" >&2; exit 1; }
# Every plugin built here must be in the list above (test plugins aside).
for so in "$BIN"/libember_*.so; do
  name=$(basename "$so" .so); name=${name#libember_}
  case "$name" in abimismatch|broken|liar|liar30) continue ;; esac
  grep -q "plugin check: .*libember_$name.so" "$LOG" \
    || { echo "plugin $name is not run through ember plugin check in scripts/test.sh" >&2; exit 1; }
done
# The container recipe without Docker: lint the Dockerfile, build the CPU variant's install root
# with the build script the Dockerfile runs, and answer one job with each backend from it.
VENV=${EMBER_CACHE:-$HOME/.cache/ember}/venv
"$VENV/bin/hadolint" Dockerfile
# The CPU image itself where a container engine and the base images are reachable (the GPU
# image: scripts/gpu-test.sh).
bash scripts/build-container.sh cpu
IMAGE_ROOT=${CARGO_TARGET_DIR:-$PWD/target}/image-root
rm -rf "$IMAGE_ROOT"
bash scripts/build-image.sh --variant cpu --venv "$VENV" "$IMAGE_ROOT" | tail -n 1
# The CPU variant carries no CUDA library the CPU does not load (libtorch_cpu's CUDA runtime and
# CUPTI aside).
CUDA_LIBS=$(find "$IMAGE_ROOT" \( -name 'libtorch_cuda*' -o -name 'libcudnn*' -o -name 'libcublas*' \
  -o -name 'libnccl*' -o -name 'libonnxruntime_providers_cuda*' \) -printf '%P\n')
[ -z "$CUDA_LIBS" ] || { echo "image root: the CPU variant ships CUDA libraries: $CUDA_LIBS" >&2; exit 1; }
for backend in torch optimum ctranslate2 candle; do
  env -i PATH="$PATH" HOME="$CHECK_HOME" HF_HOME="$CHECK_HOME" BACKEND=$backend DEVICE=cpu \
    EMBER_CONFIG="$IMAGE_ROOT/etc/ember/default.toml" PLUGIN_DIR="$IMAGE_ROOT/usr/local/lib/ember" \
    MODEL_NAMES="$PWD/fixtures/all-MiniLM-L6-v2" \
    "$IMAGE_ROOT/usr/local/bin/ember" --test-input '{"input": {"input": "ember in a box"}}' \
    >"$CHECK_HOME/job.json" 2>"$CHECK_HOME/job.log" \
    || { cat "$CHECK_HOME/job.log" >&2; echo "image root: backend $backend failed" >&2; exit 1; }
  grep -q '"embedding"' "$CHECK_HOME/job.json" || { echo "image root: $backend gave no embedding" >&2; exit 1; }
  echo "image root: backend $backend answers"
done
rm -rf "$IMAGE_ROOT"
# End-to-end tests start servers that use every core: one test at a time.
cargo test --release --locked -p ember-e2e -- --test-threads=1 2>&1 | tee -a "$LOG"
# The GPU script's steps on the CPU, shortened, so that it cannot rot where no GPU is.
bash scripts/gpu-test.sh --quick cpu 2>&1 | tail -n 16
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f; exit (f > 0) }' "$LOG"
