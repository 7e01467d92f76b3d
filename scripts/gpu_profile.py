"""Where a small jitted CUDA call spends its host time (cProfile of 2000 calls)."""
import cProfile
import pstats
import time

import numpy as np
import torch

import powerfusion as pf
from powerfusion.cli import layernorm

x = torch.randn(4096, 768, device="cuda")
w, b = torch.ones(768, device="cuda"), torch.zeros(768, device="cuda")
f = pf.jit(layernorm, target="cuda")
f(x, w, b)
torch.cuda.synchronize()
for label, fn in (("pf", lambda: f(x, w, b)),
                  ("eager", lambda: torch.nn.functional.layer_norm(x, (768,), w, b))):
    start = time.perf_counter()
    for _ in range(2000):
        fn()
    torch.cuda.synchronize()
    print(label, "us per call", (time.perf_counter() - start) / 2000 * 1e6)
cProfile.run("for _ in range(2000): f(x, w, b)", "/tmp/prof")
pstats.Stats("/tmp/prof").sort_stats("tottime").print_stats(22)
