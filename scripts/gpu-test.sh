#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: the driver preflight of every GPU backend, `ember plugin
# check` of torch, ctranslate2 and optimum on the GPU against the CPU references (parity
# bounds of the checker: fp32 cosine >= 0.9999, half precision >= 0.999), the device tests
# (DEVICE=auto must choose the GPU, DEVICE=cuda:64 must fail with its reason), the end-to-end
# suites of torch and ctranslate2 with DEVICE=cuda, and per backend the cold and warm start,
# throughput and memory of ember-bench; then one summary table.
#
# Usage: ./scripts/gpu-test.sh [--quick] [cuda|cuda:N|cpu]
#   cpu      the same steps on the CPU: CI runs `--quick cpu` so that this script cannot rot
#   --quick  no set-up (already done), no end-to-end suites (CI runs them), 1 s benchmarks
# optimum runs on the GPU with the onnxruntime-gpu wheel of requirements.txt's version and
# ctranslate2 with cuBLAS 12 (scripts/requirements-gpu.txt), installed beside the venv on
# first use (ORT_DYLIB_PATH, LD_LIBRARY_PATH); on the CPU with the venv's own.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
DEVICE=cuda
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK=1 ;;
    cpu|cuda|cuda:*) DEVICE=$arg ;;
    *) echo "gpu-test: unknown argument $arg (usage: gpu-test.sh [--quick] [cuda|cuda:N|cpu])" >&2; exit 2 ;;
  esac
done
[ "$QUICK" = 1 ] || bash scripts/setup.sh
BIN=${CARGO_TARGET_DIR:-target}/release
CACHE=${EMBER_CACHE:-$HOME/.cache/ember}
SUMMARY=$(mktemp)
HF_HOME=$(mktemp -d)
export HF_HOME
trap 'rm -rf "$HF_HOME" "$SUMMARY"' EXIT
row() { printf '| %s ' "$@" >>"$SUMMARY"; echo '|' >>"$SUMMARY"; }

echo "== preflight on $DEVICE"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader || true
elif [ "$DEVICE" != cpu ]; then
  echo "gpu-test: DEVICE=$DEVICE but nvidia-smi is not here; the plugins' preflight says why below" >&2
fi

# On a GPU, optimum needs onnxruntime-gpu (setup.sh installs the CPU wheel) and ctranslate2
# needs cuBLAS 12 (scripts/requirements-gpu.txt), both installed beside the venv on first use;
# the CUDA 13 and cuDNN libraries come with the torch wheel.
if [ "$DEVICE" != cpu ]; then
  ORT_VERSION=$(sed -n 's/^onnxruntime==//p' requirements.txt)
  GPU_WHEELS=$CACHE/gpu-wheels-$ORT_VERSION-$(sha256sum scripts/requirements-gpu.txt | cut -c1-12)
  if [ ! -d "$GPU_WHEELS/onnxruntime" ]; then
    "$CACHE/venv/bin/pip" install --quiet --no-deps --target "$GPU_WHEELS" \
      "onnxruntime-gpu==$ORT_VERSION" -r scripts/requirements-gpu.txt
  fi
  SITE=$(ls -d "$CACHE"/venv/lib/python3*/site-packages)
  export ORT_DYLIB_PATH
  ORT_DYLIB_PATH=$(ls "$GPU_WHEELS"/onnxruntime/capi/libonnxruntime.so.*)
  export LD_LIBRARY_PATH=$SITE/nvidia/cu13/lib:$SITE/nvidia/cudnn/lib:$GPU_WHEELS/nvidia/cublas/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi

echo "== plugin checks on $DEVICE"
check() { # check PLUGIN MODEL DTYPE
  local out
  if out=$("$BIN/ember" plugin check "$BIN/libember_$1.so" --model "fixtures/$2" \
      --device "$DEVICE" --dtype "$3" 2>&1); then
    echo "$out" | tail -n 3
    row "$1" "plugin check" "$2 ($3)" "conforms"
  else
    echo "$out"
    row "$1" "plugin check" "$2 ($3)" "FAILED"
    FAILED=1
  fi
}
FAILED=0
# The checker's bounds follow the precision asked for, so the half-precision and int8 that
# `auto` picks (fp16 for torch and ctranslate2 on CUDA, int8 for ctranslate2 on the CPU) are
# asked for by name.
if [ "$DEVICE" = cpu ]; then HALF=""; CT2_AUTO=int8; else HALF="fp16 bf16"; CT2_AUTO="fp16 int8"; fi
for model in all-MiniLM-L6-v2 tiny-rerank-xlmr tiny-classify-bert tiny-clip; do
  check torch "$model" fp32
done
for dtype in $HALF; do check torch all-MiniLM-L6-v2 "$dtype"; done
for model in all-MiniLM-L6-v2 tiny-rerank-bert tiny-rerank-xlmr; do
  check ctranslate2 "$model" fp32
done
for dtype in $CT2_AUTO; do check ctranslate2 all-MiniLM-L6-v2 "$dtype"; done
for model in all-MiniLM-L6-v2 tiny-rerank-xlmr tiny-clip; do
  check optimum "$model" auto
done

if [ "$QUICK" = 0 ]; then
  echo "== device tests and end-to-end suites on $DEVICE"
  # The e2e suites pin their own DTYPES where parity needs it (fp32 for torch).
  suite() { # suite TEST [DTYPES]
    if EMBER_TEST_DEVICE=$DEVICE EMBER_TEST_DTYPES=${2:-} \
        cargo test --release --locked -p ember-e2e --test "$1" -- --test-threads=1; then
      row "$1" "e2e suite" "" "passed"
    else
      row "$1" "e2e suite" "" "FAILED"
      FAILED=1
    fi
  }
  suite devices
  suite torch_backend fp32
  suite ctranslate2_backend
fi

if [ "$QUICK" = 0 ]; then
  echo "== the GPU image"
  bash scripts/build-container.sh gpu
fi

echo "== cold start, throughput and memory on $DEVICE"
BENCH_MD=$(mktemp)
if BENCH_BACKENDS="torch ctranslate2 optimum" DEVICE=$DEVICE DTYPES=auto BENCH_MARKDOWN=$BENCH_MD \
  BENCH_SECONDS=${BENCH_SECONDS:-$([ "$QUICK" = 1 ] && echo 1 || echo 5)} \
  BENCH_STARTS=${BENCH_STARTS:-$([ "$QUICK" = 1 ] && echo 2 || echo 5)} \
  BENCH_ROUNDS=${BENCH_ROUNDS:-$([ "$QUICK" = 1 ] && echo 1 || echo 3)} \
  cargo run --quiet --release --locked -p ember-e2e --bin ember-bench; then
  # | backend | 8x32 | 32x1 | ratio | 1x1 | cold | warm | RSS | peak | new shape |
  awk -F' *\\| *' '/^\| (torch|ctranslate2|optimum) \|/ {
      printf "| %s | benchmark (auto) | cold start %s, warm %s; 8x32 %s texts/s, 32x1 %s; 1x1 p50/p99 %s ms; first request of a new shape over a repeat p50/max %s ms; RSS %s | ran |\n",
        $2, $7, $8, $3, $4, $6, $11, $9 }' "$BENCH_MD" >>"$SUMMARY"
else
  row "all" "benchmark" "" "FAILED"
  FAILED=1
fi
rm -f "$BENCH_MD"

echo
echo "== summary: $DEVICE ($(date -u +%F), $(nproc) cores)"
echo "| backend | step | what | result |"
echo "|---|---|---|---|"
cat "$SUMMARY"
exit "$FAILED"
