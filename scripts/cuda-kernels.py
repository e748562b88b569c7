#!/usr/bin/env python3
"""Lists the GPU code a CUDA library carries: the architectures of its compiled kernels (SASS,
which run on GPUs of the same major and an equal or later minor) and of its PTX (which the
driver compiles for any later GPU), read from the fatbinaries embedded in the file, and the
CUDA libraries it links. The device preflight's tables (plugins/*: `Needs`) and README's device
table come from this; rerun it when a pinned wheel changes.

Usage: scripts/cuda-kernels.py LIBRARY...
  e.g. scripts/cuda-kernels.py VENV/lib/python3*/site-packages/torch/lib/libtorch_cuda.so
"""
import mmap
import re
import struct
import sys

FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
KINDS = {1: "PTX", 2: "SASS"}


def kernels(path):
    """(kind, arch) pairs found in the fatbinaries of the file at `path`."""
    found = set()
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 0
    while (start := data.find(FATBIN_MAGIC, pos)) >= 0:
        pos = start + 4
        if start + 16 > len(data):
            break
        _version, header, size = struct.unpack_from("<HHQ", data, start + 4)
        entry, end = start + header, start + header + size
        while entry + 32 <= min(end, len(data)):
            kind, _, entry_header, entry_size = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            if kind in KINDS and 10 <= arch < 1000:
                found.add((KINDS[kind], arch))
            if entry_header == 0:
                break
            entry += entry_header + entry_size
    return sorted(found)


def cuda_needed(path):
    """Names of CUDA libraries the file links or opens by name (libcudart.so.13, ...)."""
    with open(path, "rb") as f:
        data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    names = re.findall(rb"lib(?:cudart|cublas|cublasLt|cudnn)\.so\.\d+", data)
    return sorted({n.decode() for n in names})


def main(paths):
    for path in paths:
        found = kernels(path)
        sass = ", ".join(f"sm_{a}" for k, a in found if k == "SASS") or "none"
        ptx = ", ".join(f"compute_{a}" for k, a in found if k == "PTX") or "none"
        print(f"{path}\n  SASS: {sass}\n  PTX:  {ptx}\n  CUDA libraries: "
              f"{', '.join(cuda_needed(path)) or 'none'}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
