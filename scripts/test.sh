#!/usr/bin/env bash
# The test suite on a fresh machine: install PowerFusion with what its tests need, run them.
# Arguments go to pytest (e.g. tests/test_cli.py, -k softmax, -x).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_setup.sh

# The SIMT backends are tested without a GPU: OpenCL runs on PoCL (CPU), and generated
# HIP sources are compiled with Debian's hipcc (CUDA sources with nvcc, when present).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    [ -e /etc/OpenCL/vendors/pocl.icd ] || missing="$missing pocl-opencl-icd ocl-icd-libopencl1"
    command -v hipcc >/dev/null 2>&1 || missing="$missing hipcc"
    if [ -n "$missing" ]; then
        echo "installing with apt-get:$missing" >&2
        { apt-get update -qq && apt-get install -y -qq $missing >/dev/null; } \
            || echo "warning: could not install$missing; those tests will skip" >&2
    fi
fi

if ! pip_install -e ".[dev]"; then
    # Where torch==2.13.0 (the CPU build) cannot be had, run without it: the torch
    # tests skip themselves.
    echo "installing the dev extra failed; retrying without torch" >&2
    pip_install -e . pytest hypothesis ml_dtypes
fi

if [ "$#" -gt 0 ]; then
    exec "$PYTHON" -m pytest -q -rs "$@"
fi
# Every correctness test of the CPU target again on OpenCL (PoCL), then everything.
if "$PYTHON" -c 'import pyopencl as cl; cl.get_platforms()[0].get_devices()' 2>/dev/null; then
    echo "== correctness suite on target=opencl =="
    POWERFUSION_TARGET=opencl "$PYTHON" -m pytest -q -p no:cacheprovider \
        tests/test_ops.py tests/test_composites.py tests/test_random_graphs.py \
        tests/test_regressions.py
fi
echo "== full suite =="
exec "$PYTHON" -m pytest -q -rs
