#!/usr/bin/env bash
# The main job on a fresh machine: install PowerFusion, then run `powerfusion demo`.
# Arguments go to the demo (e.g. --quick, --show layernorm, --threads 1).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/_setup.sh

pip_install -e .
# torch eager is the second baseline; optional. The exact pin is the CPU build: a looser
# one would download gigabytes of CUDA wheels.
pip_install "torch==2.13.0" \
    || echo "torch==2.13.0 could not be installed: the demo compares with numpy only" >&2

exec "$PYTHON" -m powerfusion demo "$@"
