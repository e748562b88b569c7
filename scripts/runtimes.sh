#!/usr/bin/env bash
# Puts the native runtimes of the pinned wheels installed in VENV next to the plugins in DEST,
# where the plugins find them without LD_LIBRARY_PATH:
#   libonnxruntime*.so*       (optimum loads it from its own directory)
#   torch/lib/                (the torch plugin's rpath $ORIGIN/torch/lib)
#   nvidia/                   (libtorch's rpath $ORIGIN/../../nvidia/...: CUDA 13, cuDNN, NCCL)
#   ctranslate2.libs/         (the ctranslate2 plugin's rpath $ORIGIN/ctranslate2.libs)
# MODE "link" (scripts/setup.sh, for a build tree) makes symbolic links into the venv; "copy"
# (scripts/build-image.sh, for an install root) copies real files, hard-linking when it can.
# Usage: runtimes.sh VENV DEST link|copy
set -euo pipefail
VENV=$1 DEST=$2 MODE=$3
SITE=$(ls -d "$VENV"/lib/python3*/site-packages)
mkdir -p "$DEST"

put() { # put SRC NAME: SRC placed in DEST as NAME
  rm -rf "${DEST:?}/$2"
  if [ "$MODE" = link ]; then
    ln -sfn "$1" "$DEST/$2"
  else
    cp -al "$1" "$DEST/$2" 2>/dev/null || cp -a "$1" "$DEST/$2"
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
else
  mkdir -p "$DEST/torch"
  put "$SITE/torch/lib" torch/lib
fi
[ -d "$SITE/nvidia" ] && put "$SITE/nvidia" nvidia
put "$SITE/ctranslate2.libs" ctranslate2.libs
