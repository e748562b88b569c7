# ember: the embedding and reranking server with its backend plugins (torch, optimum,
# ctranslate2) and their runtimes from the pinned wheels. No Python, no compilers at run time.
#
#   docker build -t ember .                  # CUDA image (the default, last stage)
#   docker build --target cpu -t ember:cpu . # for machines without GPUs
#
# The build steps are scripts/build-image.sh, which CI also runs outside Docker.

ARG RUST_IMAGE=rust:1.92-bookworm
# CUDA 12 runtime libraries for libctranslate2 (cuBLAS 12); torch and onnxruntime-gpu bring
# their CUDA 13 libraries in /usr/local/lib/ember/nvidia (host driver >= 580).
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-runtime-ubuntu24.04
ARG CPU_IMAGE=debian:bookworm-slim

# Build stage: Rust, a C++ compiler for the CTranslate2 bridge, Python for the wheels.
FROM ${RUST_IMAGE} AS build-base
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .

FROM build-base AS build-cpu
RUN scripts/build-image.sh --variant cpu /out

FROM build-base AS build-gpu
RUN scripts/build-image.sh --variant gpu /out

# Run-time settings shared by both images: models and conversions on the RunPod volume.
FROM ${CPU_IMAGE} AS cpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build-cpu /out/ /
ENV HF_HOME=/runpod-volume \
    EMBER_CONFIG=/etc/ember/default.toml \
    BACKEND=torch \
    DEVICE=cpu
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/ember"]

FROM ${CUDA_IMAGE} AS gpu
COPY --from=build-gpu /out/ /
ENV HF_HOME=/runpod-volume \
    EMBER_CONFIG=/etc/ember/default.toml \
    BACKEND=torch \
    LD_LIBRARY_PATH=/usr/local/lib/ember/nvidia/cu13/lib:/usr/local/lib/ember/nvidia/cudnn/lib
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/ember"]
