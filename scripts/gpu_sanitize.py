"""The SIMT kernels that share data between threads in new ways, run small under
compute-sanitizer on a CUDA GPU (memcheck: out-of-bounds accesses; racecheck: shared
memory races), each checked against numpy:

- rows a warp each, several per block (shuffles, no barrier);
- rows kept partly in registers, partly in the threads' slots of shared memory;
- rows spread over a thread block cluster (distributed shared memory), sm_90 only.

    compute-sanitizer --tool racecheck python3 scripts/gpu_sanitize.py
"""
import os
import sys

import numpy as np

sys.path[:0] = [os.path.join(os.path.dirname(__file__), "..", "tests"),
                os.path.join(os.path.dirname(__file__), "..")]

import graphs as G  # noqa: E402
from powerfusion.runtime.simt_executable import compile_plan_simt, simt_target  # noqa: E402
from powerfusion.search.space import plan_graph  # noqa: E402
from test_simt import _inputs, assert_matches_oracle  # noqa: E402

CASES = [   # (name, graph, what the kernel must use)
    ("short rows", G.softmax(64, 256), lambda k: k.rows > 1),
    ("rows in registers and shared memory", G.layernorm(4, 65536),
     lambda k: k.local_bytes > 0 and k.cluster == 1),
    ("rows over a cluster", G.rmsnorm(8, 131072), lambda k: k.cluster > 1),
]

target = simt_target("cuda")
rng = np.random.default_rng(0)
for name, graph, uses in CASES:
    if "cluster" in name and target.cluster_blocks == 1:
        print(f"{name}: skipped, this GPU has no thread block clusters")
        continue
    inputs = _inputs(graph, rng)
    plan = plan_graph(graph, G.strides_of(graph), target)
    executable = compile_plan_simt(plan, "cuda")
    launches = executable.module.kernels
    assert any(uses(k) for k in launches), (name, [k.describe() for k in launches])
    assert_matches_oracle(graph, inputs, executable.run(inputs), transcendental=True)
    print(f"{name}: matches numpy ({'; '.join(k.describe() for k in launches)})")
