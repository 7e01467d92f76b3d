#!/usr/bin/env bash
# On a CUDA machine (no install, no network), in about 6 minutes at most: the CUDA
# correctness suite, the CUDA-specific tests, and the kernels that share data between
# threads in new ways under compute-sanitizer. Logs go to $OUT (or ./gpu-logs).
# Usage: bash scripts/gpu_check.sh [pytest args]
# Then the benchmark, each new SIMT feature also timed off (a second call):
#     python -m benchmarks.gpu --variants --budget-s 420 --out $OUT
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-gpu-logs}"; mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'PY'
import cuda.core, torch, numpy
print("cuda.core", cuda.core.__version__, "torch", torch.__version__, "numpy", numpy.__version__)
PY
python3 - <<'PY'
import numpy as np, torch, powerfusion as pf
def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
x = np.random.default_rng(0).standard_normal((64, 1000)).astype(np.float32)
f = pf.jit(softmax, target="cuda")
ref = softmax(x.astype(np.float64))
print("smoke, numpy in: max err", float(np.abs(np.asarray(f(x)) - ref).max()))
yt = f(torch.from_numpy(x).cuda())
print("smoke, torch in:", type(yt).__name__, yt.device,
      "max err", float((yt.double().cpu().numpy() - ref).__abs__().max()))
PY
echo "== correctness suite on target=cuda =="
POWERFUSION_TARGET=cuda timeout 240 python3 -m pytest -q --maxfail=40 -p no:cacheprovider -n 8 \
    tests/test_ops.py tests/test_composites.py tests/test_random_graphs.py "$@" 2>&1 | tail -40
echo "== CUDA tests, SIMT tests, transposes on CUDA =="
timeout 150 python3 -m pytest -q -rs -p no:cacheprovider -n 8 tests/test_simt.py tests/test_cuda.py \
    2>&1 | tail -25
POWERFUSION_TARGET=cuda timeout 90 python3 -m pytest -q -rs -p no:cacheprovider \
    tests/test_simt_transpose.py 2>&1 | tail -15
echo "== host time of a small call (pf, torch eager), and where pf's goes =="
timeout 60 python3 scripts/gpu_profile.py 2>&1 | head -40
if command -v compute-sanitizer >/dev/null 2>&1; then
    for tool in memcheck racecheck; do
        echo "== compute-sanitizer --tool $tool =="
        timeout 45 compute-sanitizer --tool "$tool" python3 scripts/gpu_sanitize.py 2>&1 | tail -12
    done
fi
} 2>&1 | tee "$out/gpu-check.log"
