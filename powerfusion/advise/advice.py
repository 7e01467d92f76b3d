"""What pf.advise reports: the baseline's time, its library share, and PowerFusion's
predicted (and, if asked, measured) time, kernel by kernel; as text or a plot."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UnsupportedError


@dataclass
class KernelAdvice:
    """One PowerFusion region (torch) or kernel (numpy) as the cost model sees it."""

    name: str
    ops: list[str]
    global_bytes: int            # bytes the kernels move at the outermost memory level
    min_bytes: int               # every input read once, every output written once
    predicted_s: float           # the cost model's time for its kernels


@dataclass
class Advice:
    what: str                    # the model or function advised on
    baseline: str                # "eager PyTorch" or "numpy"
    baseline_s: float            # measured time per step
    library_s: float             # of which inside library compute (stays as it is)
    predicted_s: float           # PowerFusion's predicted time per step: the sum of
    kernels: list[KernelAdvice] = field(default_factory=list)      # its kernels,
    glue_s: float = 0.0          # calling them (regions, graphs) from Python,
    fallbacks: dict = field(default_factory=dict)   # (ops that would run eagerly, counted)
    measured_s: float | None = None                 # (PowerFusion's measured time, if asked,
    measured_baseline_s: float | None = None        # beside the baseline's, interleaved)
    library_calls_s: float = 0.0  # the library calls of the compiled model (torch) and
    torch_ops_s: float = 0.0     # its other torch calls: views, index, creation, fallbacks
    attention: int = 0           # attention calls fused into one library call (torch)
    guards_s: float = 0.0        # of glue_s: torch.compile's own work per call (dynamo's
                                 # guards on the model's tensors; torch)

    @property
    def predicted_speedup(self) -> float:
        return self.baseline_s / self.predicted_s if self.predicted_s > 0 else 1.0

    @property
    def measured_speedup(self) -> float | None:
        """The speedup measured (`measure=True`): baseline and PowerFusion interleaved, so
        that the machine's drift hits both; the prediction is a ratio of its own moment."""
        if self.measured_s is None:
            return None
        return (self.measured_baseline_s or self.baseline_s) / self.measured_s

    @property
    def bound(self) -> float:
        """The most any compiler of memory-bound ops can give: library time stays."""
        return self.baseline_s / self.library_s if self.library_s > 0 else float("inf")

    def __str__(self) -> str:
        ms = 1e3
        share = self.library_s / self.baseline_s if self.baseline_s else 0.0
        lines = [f"{self.what}: {self.baseline_s * ms:.2f} ms per call with {self.baseline} "
                 "(measured)"]
        if self.library_s:
            lines += [f"  library compute (matmul, convolution, attention, embedding): "
                      f"{self.library_s * ms:.2f} ms ({share:.0%})",
                      f"  memory-bound ops and the glue between them: "
                      f"{(self.baseline_s - self.library_s) * ms:.2f} ms ({1 - share:.0%})"]
        kernel_s = sum(k.predicted_s for k in self.kernels)
        if not self.kernels and not self.library_s:
            lines.append("PowerFusion: nothing to compile (no kernel: the results are "
                         "inputs or constants)")
            return "\n".join(lines)
        lines.append(f"PowerFusion: {len(self.kernels)} "
                     f"{'regions' if self.library_s else 'kernels'}, predicted "
                     f"{kernel_s * ms:.2f} ms of kernels + {self.glue_s * ms:.2f} ms to run "
                     f"them" + (f" + {self.library_calls_s * ms:.2f} ms of library calls + "
                                f"{self.torch_ops_s * ms:.2f} ms of other torch calls"
                                if self.library_s else "")
                     + f" -> {self.predicted_s * ms:.2f} ms per call: "
                     f"{self.predicted_speedup:.2f}x {self.baseline}")
        if self.attention:
            lines.append(f"  attention: {self.attention} written out (matmul, softmax, "
                         "matmul) become fused attention calls, priced as such")
        if self.measured_s is not None:
            lines.append(f"  measured: {self.measured_s * ms:.2f} ms "
                         f"({self.measured_speedup:.2f}x; {self.baseline} "
                         f"{(self.measured_baseline_s or self.baseline_s) * ms:.2f} ms beside it)")
        if self.library_s:
            lines.append(f"  at most {self.bound:.2f}x: {share:.0%} of the time is library "
                         "compute, which no fusion changes")
        if self.fallbacks:
            lines.append("  ops PowerFusion would leave to PyTorch eagerly: " + ", ".join(
                f"{op} x{n}" for op, n in sorted(self.fallbacks.items())))
        if self.kernels:
            lines.append("")
            width = max(len(k.name) for k in self.kernels)
            lines.append(f"  {'':{width}}  predicted  bytes moved / minimum  ops")
            for k in sorted(self.kernels, key=lambda k: -k.predicted_s):
                ratio = k.global_bytes / k.min_bytes if k.min_bytes else 1.0
                ops = ", ".join(dict.fromkeys(o.split(".")[1] if o.startswith("aten.") else o
                                              for o in k.ops))
                lines.append(f"  {k.name:{width}}  {k.predicted_s * 1e6:7.1f} us  "
                             f"{_mb(k.global_bytes):>8} / {_mb(k.min_bytes):<8} "
                             f"{ratio:4.2f}x  {ops[:60]}")
        return "\n".join(lines)


    def plot(self, path: str) -> str:
        """Draw the time per part, the baseline beside the prediction (and the
        measurement, if taken), to path (PNG); returns the path."""
        try:
            import matplotlib
        except ImportError:
            raise UnsupportedError("a plot needs matplotlib: pip install matplotlib") from None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        kernel_s = sum(k.predicted_s for k in self.kernels)
        bars = {self.baseline: (self.library_s, self.baseline_s - self.library_s, 0.0),
                "PowerFusion, predicted": (self.library_calls_s, kernel_s,
                                           self.glue_s + self.torch_ops_s)}
        if self.measured_s is not None:
            bars["PowerFusion, measured"] = (self.library_s, 0.0,
                                             max(0.0, self.measured_s - self.library_s))
        fig, ax = plt.subplots(figsize=(7, 3))
        names = list(bars)
        left = [0.0] * len(names)
        for k, (part, colour) in enumerate([("library compute", "#999999"),
                                            ("memory-bound ops / kernels", "#1f77b4"),
                                            ("glue (measured: everything else)", "#ff7f0e")]):
            widths = [1e3 * bars[n][k] for n in names]
            ax.barh(names, widths, left=left, color=colour, label=part)
            left = [a + b for a, b in zip(left, widths)]
        ax.set_xlabel("ms per call")
        ax.set_title(f"{self.what}: predicted {self.predicted_speedup:.2f}x, at most "
                     f"{self.bound:.2f}x" if self.library_s else self.what, fontsize=9)
        ax.invert_yaxis()
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} KB"
