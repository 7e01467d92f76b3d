#!/usr/bin/env bash
# On a CUDA machine (no install, no network): the CUDA correctness suite and the
# CUDA-specific tests. Logs go to $OUT (or ./gpu-logs). Usage: bash scripts/gpu_check.sh [pytest args]
# Then the benchmark, each new SIMT feature also timed off: python -m benchmarks.gpu --variants --out $OUT
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-gpu-logs}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'PY'
import cuda.core, torch, numpy
print("cuda.core", cuda.core.__version__, "torch", torch.__version__, "numpy", numpy.__version__)
PY
python3 - <<'PY' 2>&1 | tee "$out/smoke.log"
import numpy as np, torch, powerfusion as pf
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
x = np.random.default_rng(0).standard_normal((64, 1000)).astype(np.float32)
f = pf.jit(softmax, target="cuda")
y = f(x)
ref = softmax(x.astype(np.float64))
print("numpy in: max err", float(np.abs(np.asarray(y) - ref).max()))
t = torch.from_numpy(x).cuda()
yt = f(t)
print("torch in:", type(yt).__name__, yt.device, "max err", float((yt.double().cpu().numpy() - ref).__abs__().max()))
PY
POWERFUSION_TARGET=cuda timeout 300 python3 -m pytest -q --maxfail=40 -p no:cacheprovider -n 8 \
    tests/test_ops.py tests/test_composites.py tests/test_random_graphs.py "$@" 2>&1 | tail -80 | tee "$out/cuda-suite.log"
timeout 200 python3 -m pytest -q -rs -p no:cacheprovider tests/test_simt.py tests/test_cuda.py 2>&1 | tail -30 | tee "$out/simt.log"
# the padded-tile transposes, run on the GPU (they run on PoCL in CI)
POWERFUSION_TARGET=cuda timeout 200 python3 -m pytest -q -rs -p no:cacheprovider \
    tests/test_simt_transpose.py 2>&1 | tail -30 | tee "$out/transpose.log"
