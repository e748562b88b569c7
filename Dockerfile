# ember: the embedding and reranking server with its backend plugins (torch, optimum,
# ctranslate2) and their runtimes from the pinned wheels. No Python, no compilers at run time.
#
#   docker build -t ember .                  # CUDA image (the default, last stage)
#   docker build --target cpu -t ember:cpu . # for machines without GPUs
#
# The build steps are scripts/build-image.sh, which CI also runs outside Docker.

ARG RUST_IMAGE=rust:1.92-bookworm
# Both images run on a plain OS image: every CUDA library comes from the pinned wheels
# (torch's CUDA 13 libraries for torch and onnxruntime-gpu, cuBLAS 12 beside libctranslate2),
# and the NVIDIA container runtime mounts the host's driver. No CUDA base image.
ARG BASE_IMAGE=debian:bookworm-slim

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
FROM ${BASE_IMAGE} AS cpu
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

FROM ${BASE_IMAGE} AS gpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build-gpu /out/ /
# NVIDIA_* ask the NVIDIA container runtime for the GPUs and the driver's compute libraries.
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HF_HOME=/runpod-volume \
    EMBER_CONFIG=/etc/ember/default.toml \
    BACKEND=torch \
    LD_LIBRARY_PATH=/usr/local/lib/ember/nvidia/cu13/lib:/usr/local/lib/ember/nvidia/cudnn/lib
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/ember"]
