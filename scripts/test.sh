#!/usr/bin/env bash
# The test suite on a fresh machine: install PowerFusion with what its tests need, run them.
# Arguments go to pytest (e.g. tests/test_cli.py, -k softmax, -x).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_setup.sh

if ! pip_install -e ".[dev]"; then
    # Where torch==2.13.0 (the CPU build) cannot be had, run without it: the torch
    # tests skip themselves.
    echo "installing the dev extra failed; retrying without torch" >&2
    pip_install -e . pytest hypothesis ml_dtypes
fi

exec "$PYTHON" -m pytest -q -rs "$@"
