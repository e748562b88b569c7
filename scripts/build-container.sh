#!/usr/bin/env bash
# Builds the container image targets named (cpu, gpu) with docker or podman, where an engine
# runs and the Dockerfile's base images are present or can be pulled; otherwise says why and
# builds nothing (exit 0), as on machines that only reach package registries.
# Usage: scripts/build-container.sh TARGET...   (scripts/test.sh: cpu; scripts/gpu-test.sh: gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE=$(command -v docker || command -v podman || true)
if [ -z "$ENGINE" ] || ! "$ENGINE" info >/dev/null 2>&1; then
  echo "image: no container engine here (docker or podman); not built: $*"
  exit 0
fi
BASES=$(sed -n 's/^ARG [A-Z_]*_IMAGE=//p' Dockerfile)
for base in $BASES; do
  if ! "$ENGINE" image inspect "$base" >/dev/null 2>&1 \
      && ! "$ENGINE" pull --quiet "$base" >/dev/null 2>&1; then
    echo "image: base image $base cannot be pulled here; not built: $*"
    exit 0
  fi
done
for target in "$@"; do
  "$ENGINE" build --quiet --target "$target" -t "ember:$target" . >/dev/null \
    || { echo "image: $ENGINE build --target $target failed" >&2; exit 1; }
  echo "image: ember:$target built, $("$ENGINE" image inspect -f '{{.Size}}' "ember:$target" | numfmt --to=iec)"
done
