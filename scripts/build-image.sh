#!/usr/bin/env bash
# Builds ember's install root: what the container image holds, laid out under ROOT as
#   ROOT/usr/local/bin/ember
#   ROOT/usr/local/lib/ember/      the plugins (torch, optimum, ctranslate2, candle) and, next
#                                  to them, the native runtimes of the pinned wheels
#   ROOT/etc/ember/default.toml    the configuration file
# The Dockerfile runs it in its build stage; CI runs it outside Docker (scripts/test.sh) and
# starts the result, so the recipe is tested where no Docker engine exists. Nothing in ROOT
# needs Python.
#
# Usage: build-image.sh [--variant gpu|cpu] [--venv DIR] ROOT
#   --variant  gpu (default): onnxruntime-gpu, and cuBLAS 12 for ctranslate2
#              (scripts/requirements-gpu.txt); cpu: onnxruntime and no CUDA library that the CPU
#              does not load (see scripts/runtimes.sh). torch and ctranslate2 are the same wheels
#              for both; the torch plugin opens libtorch_cuda only for a GPU.
#   --venv     a virtual environment that already has the variant's wheels (CI passes the one
#              scripts/setup.sh made); by default one is made from requirements.txt.
# Environment: CARGO_TARGET_DIR as for cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=gpu VENV="" ROOT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --variant) VARIANT=$2; shift 2 ;;
    --venv) VENV=$2; shift 2 ;;
    -*) echo "build-image: unknown option $1" >&2; exit 2 ;;
    *) ROOT=$1; shift ;;
  esac
done
[ -n "$ROOT" ] || { echo "usage: build-image.sh [--variant gpu|cpu] [--venv DIR] ROOT" >&2; exit 2; }
case "$VARIANT" in gpu|cpu) ;; *) echo "build-image: --variant is gpu or cpu" >&2; exit 2 ;; esac

# 1. The runtimes' wheels (build time only).
if [ -z "$VENV" ]; then
  VENV=$(mktemp -d)/venv
  python3 -m venv "$VENV"
  REQ=$(mktemp)
  if [ "$VARIANT" = gpu ]; then
    sed 's/^onnxruntime==/onnxruntime-gpu==/' requirements.txt > "$REQ"
  else
    cp requirements.txt "$REQ"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
  if [ "$VARIANT" = gpu ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      -r scripts/requirements-gpu.txt
  fi
fi
SITE=$(ls -d "$VENV"/lib/python3*/site-packages)

# 2. The binary and the plugins, linked against those wheels.
ln -sfn "$SITE/torch" .libtorch
ln -sfn "$SITE/ctranslate2.libs" .ctranslate2
cargo build --release --locked -p ember-host -p ember-optimum -p ember-torch \
  -p ember-ctranslate2 -p ember-candle
BUILT=${CARGO_TARGET_DIR:-target}/release

# 3. The install root.
LIB=$ROOT/usr/local/lib/ember
mkdir -p "$ROOT/usr/local/bin" "$LIB" "$ROOT/etc/ember"
install -m 0755 "$BUILT/ember" "$ROOT/usr/local/bin/ember"
for plugin in torch optimum ctranslate2 candle; do
  install -m 0755 "$BUILT/libember_$plugin.so" "$LIB/"
done
bash scripts/runtimes.sh "$VENV" "$LIB" copy "$VARIANT"
install -m 0644 config/default.toml "$ROOT/etc/ember/default.toml"
echo "build-image: $VARIANT root in $ROOT ($(du -sh "$ROOT" | cut -f1))"
