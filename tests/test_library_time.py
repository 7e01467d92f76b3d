"""How the end-to-end benchmark splits a step: library calls timed in place by a
profile hook (pf.advise.library_time), and the noise band of a ratio of medians."""

from __future__ import annotations

import time

import pytest

from powerfusion.advise.measure import _LibraryClock, library_time
from powerfusion.benchmarking import ratio_band

torch = pytest.importorskip("torch")


def _clocked(step):
    with _LibraryClock() as clock:
        step()
    return clock


def test_library_calls_are_counted_by_every_entry_point():
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    w = torch.randn(32, 64)
    aten = torch.ops.aten

    def step():
        torch.mm(a, b)                            # what Inductor's wrapper calls
        aten.mm.default(a, b)                     # a graph's OpOverload
        aten.mm.out(a, b, out=torch.empty(64, 64))
        torch.nn.functional.linear(a, w)          # an eager module
        torch.relu(a).sum()                       # not library compute
        time.sleep(0.001)

    clock = _clocked(step)
    assert clock.calls == 4 and clock.seconds > 0


def test_time_outside_library_calls_is_not_counted():
    # a matmul far shorter than the sleep, and too small for torch's thread pool: on a
    # loaded machine (CI's other work) a 512x512 one read 12 ms under the clock
    a = torch.randn(32, 32)

    def step():
        time.sleep(0.02)
        torch.mm(a, a)

    plain, library = library_time(step, runs=3)
    assert plain >= 0.02 and 0 < library < 0.01  # the sleep is the step's own


def test_a_step_without_library_calls():
    x = torch.randn(1000)
    plain, library = library_time(lambda: torch.softmax(x, 0), runs=2)
    assert library == 0.0 and plain > 0


@pytest.mark.usefixtures("fresh_torch")
def test_compiled_graph_library_calls_seen_in_place(glue):
    """The PowerFusion backend's graph calls its matmuls (pooled out= variants above
    64 KB) from Python: each is seen once, the softmax region between them is not."""
    x, w1, w2 = torch.randn(256, 256), torch.randn(256, 256), torch.randn(256, 256)

    def f(x, w1, w2):
        return torch.softmax(x @ w1, -1) @ w2

    compiled = torch.compile(f, backend="powerfusion")
    with torch.no_grad():
        expected = f(x, w1, w2)
        torch.testing.assert_close(compiled(x, w1, w2), expected)
        clock = _clocked(lambda: compiled(x, w1, w2))
    assert clock.calls == 2


def test_ratio_band():
    base = [10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8, 10.0]
    assert ratio_band(base, [v / 2 for v in base]) == pytest.approx((2.0, 2.0))
    low, high = ratio_band(base, base[::-1])
    assert low <= 1.0 <= high and high - low < 0.1
    assert ratio_band(base, base, seed=1) == ratio_band(base, base, seed=1)
    with pytest.raises(ValueError, match="equally long, non-empty"):
        ratio_band(base, base[:-1])
    with pytest.raises(ValueError, match="equally long, non-empty"):
        ratio_band([], [])
