"""The learned correction of the cost model, trained on this device's measurements.

The cost model prices bytes; it cannot tell streaming stores, a narrower vector, one
thread or dynamic pieces from the default, and it misjudges arithmetic-heavy kernels.
A small gradient-boosted tree model (depth-2 trees over numpy, as TVM's Ansor and
MetaSchedule rank with boosted trees) learns, from every candidate the tuning database
holds measured for this device description, how far a candidate's measured time is
from the model's estimate, relative to the other candidates of the same kernel. The
tuner ranks by estimate times that correction and measures the few at the top; with
no measurements the correction is zero and the cost model's ranking stands.
"""

from __future__ import annotations

import math

import numpy as np

from ..targets import Target
from . import tuning_db
from .compute import compute_seconds
from .plan import Candidate, Plan

FEATURES = ("log_estimate", "log_compute", "intensity", "log_units", "log_inner",
            "kernels", "reduction", "streaming", "log_tile", "threads", "dynamic",
            "log_chunk", "narrow", "global_rows", "rewritten", "interleaved")
# features measurements recorded before them lack, and the value those took
LATER_FEATURES = {"interleaved": 0.0}


def features(candidate: Candidate, plan: Plan, estimate: float, target: Target) -> dict:
    """What the correction sees of one candidate: the cost model's estimate, the
    arithmetic's, the kernel's shape of parallelism and each knob's value."""
    simd_bits = 8 * target.simd_bytes
    cores = target.cores
    used = min(cores, candidate.threads or cores)
    narrow = (candidate.vector_bits or simd_bits) / simd_bits
    compute = sum(compute_seconds(ck.program, target) for ck in plan.kernels)
    compute *= cores / used / narrow        # fewer threads, narrower vectors: longer
    main = max(plan.kernels, key=lambda ck: ck.schedule.kept_extent, default=None)
    units = main.schedule.outer_extent if main else 1
    inner = main.schedule.inner_extent if main else 1
    chunk = main.program.cpu.chunk if main else 0
    return {
        "log_estimate": math.log(max(estimate, 1e-12)),
        "log_compute": math.log(max(compute, 1e-12)),
        "intensity": math.log(max(compute, 1e-12) / max(estimate, 1e-12)),
        "log_units": math.log2(max(units, 1)),
        "log_inner": math.log2(max(inner, 1)),
        "kernels": float(len(plan.kernels)),
        "reduction": float(any(ck.schedule.reduce_axes for ck in plan.kernels)),
        "streaming": float(candidate.streaming),
        "log_tile": math.log2(candidate.tile),
        "threads": used / cores,
        "dynamic": float(candidate.dynamic),
        "log_chunk": math.log2(chunk) if chunk else -1.0,
        "narrow": narrow,
        "global_rows": float(candidate.placement != "local"),
        "rewritten": float(candidate.computation != "as written"),
        "interleaved": float(any(ck.interleaved for ck in plan.kernels)),
    }


class Correction:
    """log(measured / estimated) per candidate, less its kernel's mean: predicted from
    features by boosted trees. Untrained, it predicts 0 everywhere."""

    def __init__(self, rounds: int = 150, rate: float = 0.1, depth: int = 2,
                 min_leaf: int = 4):
        self.rounds, self.rate, self.depth, self.min_leaf = rounds, rate, depth, min_leaf
        self.trees: list = []

    @property
    def trained(self) -> bool:
        return bool(self.trees)

    @classmethod
    def from_db(cls, target: str, exclude: set[str] = frozenset()) -> "Correction":
        """Trained on the target's tuning database, less the entries keyed in exclude."""
        rows = [(key, m["features"], m["seconds"])
                for key, entry in tuning_db.load(target).items() if key not in exclude
                for m in entry.get("measured", ()) if _usable(m)]
        return cls().fit(rows)

    def fit(self, rows: list[tuple[str, dict, float]]) -> "Correction":
        """rows: (kernel, features, measured seconds). A kernel measured once says
        nothing about how its candidates differ: it is left out."""
        groups: dict[str, list[int]] = {}
        for k, (group, _, _) in enumerate(rows):
            groups.setdefault(group, []).append(k)
        keep = [k for ks in groups.values() if len(ks) > 1 for k in ks]
        self.trees = []
        if not keep:
            return self
        x = _matrix([rows[k][1] for k in keep])
        y = np.array([math.log(rows[k][2]) - rows[k][1]["log_estimate"] for k in keep])
        kernel = np.array([rows[k][0] for k in keep])
        for group in set(kernel):           # relative to the kernel's own candidates
            y[kernel == group] -= y[kernel == group].mean()
        predicted = np.zeros_like(y)
        for _ in range(self.rounds):
            tree = _tree(x, y - predicted, self.depth, self.min_leaf)
            self.trees.append(tree)
            predicted += self.rate * _predict(tree, x)
        return self

    def predict(self, rows: list[dict]) -> np.ndarray:
        """The correction, in log seconds, per candidate's features."""
        x = _matrix(rows)
        return self.rate * sum((_predict(t, x) for t in self.trees), np.zeros(len(rows)))

    def rank(self, rows: list[dict]) -> list[int]:
        """Candidates' indices, best first: estimate times correction (stable: on a tie
        the cost model's order stands)."""
        score = np.array([r["log_estimate"] for r in rows]) + self.predict(rows)
        return sorted(range(len(rows)), key=lambda k: score[k])


def _usable(measured) -> bool:
    return (isinstance(measured, dict) and isinstance(measured.get("features"), dict)
            and all(isinstance(measured["features"].get(f, LATER_FEATURES.get(f)), (int, float))
                    for f in FEATURES)
            and isinstance(measured.get("seconds"), (int, float)) and measured["seconds"] > 0)


def _matrix(rows: list[dict]) -> np.ndarray:
    return np.array([[float(r.get(f, LATER_FEATURES.get(f))) for f in FEATURES] for r in rows]
                    ).reshape(-1, len(FEATURES))


def _tree(x: np.ndarray, r: np.ndarray, depth: int, min_leaf: int):
    """A regression tree on residuals r: a leaf value, or (feature, threshold, left, right)
    splitting where the squared error falls most."""
    if depth == 0 or len(r) < 2 * min_leaf:
        return float(r.mean()) if len(r) else 0.0
    best = None
    for j in range(x.shape[1]):
        order = np.argsort(x[:, j], kind="stable")
        xs, rs = x[order, j], r[order]
        left = np.cumsum(rs)[:-1]
        n = np.arange(1, len(rs))
        gain = left ** 2 / n + (rs.sum() - left) ** 2 / (len(rs) - n)
        ok = (xs[1:] > xs[:-1]) & (n >= min_leaf) & (len(rs) - n >= min_leaf)
        if ok.any():
            k = int(np.argmax(np.where(ok, gain, -np.inf)))
            if best is None or gain[k] > best[0]:
                best = (gain[k], j, (xs[k] + xs[k + 1]) / 2)
    if best is None:
        return float(r.mean())
    _, j, threshold = best
    low = x[:, j] <= threshold
    return (j, threshold, _tree(x[low], r[low], depth - 1, min_leaf),
            _tree(x[~low], r[~low], depth - 1, min_leaf))


def _predict(tree, x: np.ndarray) -> np.ndarray:
    if not isinstance(tree, tuple):
        return np.full(len(x), tree)
    j, threshold, low, high = tree
    out = np.empty(len(x))
    mask = x[:, j] <= threshold
    out[mask] = _predict(low, x[mask])
    out[~mask] = _predict(high, x[~mask])
    return out
