"""reuse: on-chip buffers whose live ranges do not overlap share storage."""

import numpy as np
from support import assert_stages_match_oracle, rand

from powerfusion.gir.ir import Level, walk, accesses


def two_softmaxes(x, y):
    ex = np.exp(x - x.max(-1, keepdims=True))
    sx = ex / ex.sum(-1, keepdims=True)
    ey = np.exp(sx * y - (sx * y).max(-1, keepdims=True))
    return ey / ey.sum(-1, keepdims=True)


def local_names(program):
    names = set()
    for s, _ in walk(program.body):
        r, w = accesses(s)
        names |= {a.buffer.name for a in r + w if a.buffer.level is Level.LOCAL}
    return names


def test_reuse_shares_storage_and_keeps_meaning():
    plan = assert_stages_match_oracle(two_softmaxes, rand(3, 16), rand(3, 16))
    for kernel in plan.kernels:
        before = dict(kernel.log.programs)["promote"]
        after = dict(kernel.log.programs)["reuse"]
        assert len(local_names(after)) <= len(local_names(before))
