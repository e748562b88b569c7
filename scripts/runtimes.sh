#!/usr/bin/env bash
# Puts the native runtimes of the pinned wheels installed in VENV next to the plugins in DEST,
# where the plugins find them without LD_LIBRARY_PATH:
#   libonnxruntime*.so*       (optimum loads it from its own directory)
#   torch/lib/                (the torch plugin's rpath $ORIGIN/torch/lib)
#   nvidia/                   (libtorch's rpath $ORIGIN/../../nvidia/...: CUDA 13, cuDNN, NCCL)
#   ctranslate2.libs/         (the ctranslate2 plugin's rpath $ORIGIN/ctranslate2.libs; for the
#                             GPU, cuBLAS 12 too, which libctranslate2 opens from there)
# MODE "link" (scripts/setup.sh, for a build tree) makes symbolic links into the venv; "copy"
# (scripts/build-image.sh, for an install root) copies real files, hard-linking when it can.
# VARIANT "gpu" (default) places everything; "cpu" (copy mode) leaves out every CUDA library
# that the CPU does not load: libtorch_cuda and its CUDA 13, cuDNN and NCCL libraries (the torch
# plugin opens libtorch_cuda only for a GPU), keeping the CUDA runtime and CUPTI that
# libtorch_cpu links (5 MB).
# Usage: runtimes.sh VENV DEST link|copy [gpu|cpu]
set -euo pipefail
VENV=$1 DEST=$2 MODE=$3 VARIANT=${4:-gpu}
SITE=$(ls -d "$VENV"/lib/python3*/site-packages)
mkdir -p "$DEST"

put() { # put SRC NAME: SRC placed in DEST as NAME
  rm -rf "${DEST:?}/$2"
  if [ "$MODE" = link ]; then
    ln -sfn "$1" "$DEST/$2"
  else
    # -L: a venv whose entries are links is copied, never written through.
    cp -alL "$1" "$DEST/$2" 2>/dev/null || cp -aL "$1" "$DEST/$2"
  fi
}

# onnxruntime or onnxruntime-gpu (the same package directory).
for lib in "$SITE"/onnxruntime/capi/libonnxruntime*.so*; do
  put "$lib" "$(basename "$lib")"
done
ORT=$(cd "$SITE/onnxruntime/capi" && ls libonnxruntime.so.* | head -n1)
ln -sfn "$ORT" "$DEST/libonnxruntime.so"
if [ "$MODE" = link ]; then
  put "$SITE/torch" torch
  [ -d "$SITE/nvidia" ] && put "$SITE/nvidia" nvidia
  put "$SITE/ctranslate2.libs" ctranslate2.libs
  exit 0
fi
# Copies of the libraries a plugin loads (never libtorch_python and the others only Python loads).
rm -rf "${DEST:?}/torch" "${DEST:?}/nvidia"
mkdir -p "$DEST/torch/lib"
for lib in "$SITE"/torch/lib/*.so*; do
  name=$(basename "$lib")
  case "$VARIANT:$name" in
    *:libtorch_python.so|*:libtorch_global_deps.so|*:libshm.so) continue ;;
    cpu:libtorch_cuda*|cpu:libc10_cuda.so|cpu:libtorch_nvshmem.so|cpu:libcaffe2_nvrtc.so|cpu:libtorch.so) continue ;;
  esac
  put "$lib" "torch/lib/$name"
done
if [ -d "$SITE/nvidia" ]; then
  if [ "$VARIANT" = gpu ]; then
    # Every CUDA 13 library of the torch wheel; cuBLAS 12 (nvidia/cublas) goes beside
    # libctranslate2 below, not here.
    mkdir -p "$DEST/nvidia"
    for dir in "$SITE"/nvidia/*/; do
      name=$(basename "$dir")
      [ "$name" = cublas ] || put "$dir" "nvidia/$name"
    done
  else
    mkdir -p "$DEST/nvidia/cu13/lib"
    for lib in "$SITE"/nvidia/cu13/lib/libcudart.so.* "$SITE"/nvidia/cu13/lib/libcupti.so.*; do
      put "$lib" "nvidia/cu13/lib/$(basename "$lib")"
    done
  fi
fi
put "$SITE/ctranslate2.libs" ctranslate2.libs
# cuBLAS 12 from the nvidia-cublas-cu12 wheel (GPU variant), where libctranslate2 looks first.
if [ "$VARIANT" = gpu ]; then
  CUBLAS=$(ls "$SITE"/nvidia/cublas/lib/libcublas.so.12* "$SITE"/nvidia/cublas/lib/libcublasLt.so.12* 2>/dev/null || true)
  [ -n "$CUBLAS" ] || { echo "runtimes: no cuBLAS 12 in $SITE/nvidia/cublas (install scripts/requirements-gpu.txt)" >&2; exit 1; }
  for lib in $CUBLAS; do
    put "$lib" "ctranslate2.libs/$(basename "$lib")"
  done
fi
