"""`torch.compile(model, backend="powerfusion")`: PyTorch models as they are.

How a model gets here: TorchDynamo captures an FX graph of torch calls and hands it
to `powerfusion_backend`; AOTAutograd (with PyTorch's core-aten decompositions)
turns it into aten graphs — forward, backward, or one inference graph — and calls
`compile_aten_graph` on each. That function:

0. in an inference graph, replaces attention written out (matmul, scale, mask,
   softmax, matmul) by PyTorch's fused attention (`attention`), where its scores
   would not fit on chip;
0. computes once what the graph computes from no input at all (`constants`);
1. classifies every aten op (`support`): one PowerFusion can replay on frontend
   `Tensor`s (the table `HANDLERS` of `registry`, filled by `elementwise`,
   `reductions`, `layout` and `composites`), one left to PyTorch by design (matmul,
   convolution, attention, embedding, indexing, random numbers, creation of tensors,
   mutation), or one it does not know (logged once, counted as a fallback);
2. partitions the graph into maximal cycle-free regions of supported ops
   (`partitioning`);
3. replaces each region by a `Region` module (`region`), which replays the region's
   aten ops per call signature, compiles them with `compile_graph` and runs them on
   the torch tensors' memory, zero-copy.

Never break the user's model: a region that fails to trace, compile or run falls back
to PyTorch's eager aten calls for good, with one warning on the "powerfusion" logger
naming the op and the reason.

Importing this package registers the "powerfusion" backend with torch.compile.
"""

from __future__ import annotations

import contextlib
import contextvars
from functools import partial

import torch.fx

from ... import options
from ...gir.ir import Level
from ...runtime.backends import get_target
from .. import torch_stats as stats
from ...runtime.host_memory import keep_freed_memory
from ..torch_stats import compile_stats, reset_compile_stats
from . import composites, elementwise, layout, reductions  # noqa: F401 - fill HANDLERS
from .partitioning import REGION_PREFIX, _copy, partition
from .region import Region
from .registry import ELEMENTWISE, HANDLERS, PREDICATES, handles
from .support import DEVICES, _warn
from .values import Ctx, Splat
from .attention import fuse_attention
from .constants import fold_constants
from .layout_copies import elide_layout_copies
from .inplace import add_rows, reinplace_fresh
from .launcher import boxed_runner
from .view_chains import fold_views

__all__ = [
    "DEVICES",
    "ELEMENTWISE",
    "HANDLERS",
    "PREDICATES",
    "REGION_PREFIX",
    "Ctx",
    "Region",
    "Splat",
    "compile_aten_graph",
    "compile_stats",
    "decompositions",
    "on_chip_bytes",
    "handles",
    "partition",
    "powerfusion_backend",
    "register",
    "reset_compile_stats",
]

BACKEND_NAME = "powerfusion"

# graphs this thread (or task) compiles, for whoever asked with `collect_graphs`
_COLLECTED: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "powerfusion_collected_graphs", default=None)


@contextlib.contextmanager
def collect_graphs():
    """Within the block, each aten graph the backend compiles in this thread is appended
    to the list yielded, as (kind, the partitioned GraphModule, view chains folded):
    what `pf.advise` reads the regions from. Other threads are not seen."""
    graphs: list = []
    token = _COLLECTED.set(graphs)
    try:
        yield graphs
    finally:
        _COLLECTED.reset(token)


def compile_aten_graph(gm: torch.fx.GraphModule, example_inputs, kind: str = "forward"):
    """fw/bw/inference compiler for AOTAutograd: a boxed callable running gm with its
    memory-intensive regions as PowerFusion kernels."""
    from functorch.compile import make_boxed_func

    stats.count("graphs")
    keep_freed_memory()                  # no page faults for each step's fresh tensors
    graph = _copy(gm)
    if kind == "inference" and options.get("POWERFUSION_FUSED_ATTENTION"):
        try:
            fused = _copy(graph)
            stats.count("attention", fuse_attention(fused, on_chip_bytes(graph)))
            graph = fused
        except Exception as e:           # noqa: BLE001 - attention as written is as right
            _warn(f"the attention of the {kind} graph",
                  f"fusing it failed: {type(e).__name__}: {e}")
    try:
        reinplace_fresh(graph)
        add_rows(graph)
        try:
            folded = _copy(graph)
            stats.count("constants", fold_constants(folded))
            graph = folded
        except Exception as e:           # noqa: BLE001 - computing them each call is as right
            _warn(f"the constants of the {kind} graph",
                  f"folding failed: {type(e).__name__}: {e}")
        stats.count("layout_copies", elide_layout_copies(graph))
        compiled = partition(graph, label=kind)
    except Exception as e:               # noqa: BLE001 - never break the model
        _warn(f"the whole {kind} graph", f"partitioning failed: {type(e).__name__}: {e}")
        return make_boxed_func(gm.forward)
    chains = 0
    try:
        folded = _copy(compiled)
        chains = fold_views(folded)
        stats.count("view_chains", chains)
        compiled = folded
    except Exception as e:               # noqa: BLE001 - the unfolded graph is as right
        _warn(f"the views of the {kind} graph", f"folding failed: {type(e).__name__}: {e}")
    collected = _COLLECTED.get()
    if collected is not None:
        collected.append((kind, compiled, chains))
    return boxed_runner(compiled)


def on_chip_bytes(gm: torch.fx.GraphModule) -> int:
    """The bytes the device of gm's tensors keeps on chip across its cores (a CPU's
    LOCAL level, per core times cores), 0 for a GPU: the scores attention may leave
    as written (`fuse_attention`)."""
    devices = {v.device.type for n in gm.graph.nodes
               if isinstance(v := n.meta.get("val"), torch.Tensor)}
    if devices != {"cpu"}:
        return 0
    target = get_target("cpu")
    return target.cores * target.capacity(Level.LOCAL)


_DECOMPOSITIONS = None


def decompositions() -> dict:
    """PyTorch's core-aten decompositions, but for attention: normalisations, softmax
    and GELU stay whole (PowerFusion takes them as they are), and fused attention
    stays a library call (its CPU decomposition gives wrong gradients in training:
    the backward op reads a logsumexp the decomposed forward does not produce)."""
    global _DECOMPOSITIONS
    if _DECOMPOSITIONS is None:
        from torch._decomp import core_aten_decompositions
        _DECOMPOSITIONS = {op: fn for op, fn in core_aten_decompositions().items()
                           if "scaled_dot_product" not in str(op)}
    return _DECOMPOSITIONS


def powerfusion_backend(gm: torch.fx.GraphModule, example_inputs, **kwargs):
    """The torch.compile backend: `torch.compile(model, backend="powerfusion")`."""
    from torch._dynamo.backends.common import aot_autograd

    partitioner = {}
    # as Inductor's: the backward recomputes views and element-wise chains from fewer
    # saved values (fused into its regions) instead of reading each back from memory
    if options.get("POWERFUSION_RECOMPUTE"):
        from functorch.compile import min_cut_rematerialization_partition
        partitioner["partition_fn"] = partial(min_cut_rematerialization_partition,
                                              compiler="inductor")
    backend = aot_autograd(
        **partitioner,
        fw_compiler=partial(compile_aten_graph, kind="forward"),
        bw_compiler=partial(compile_aten_graph, kind="backward"),
        inference_compiler=partial(compile_aten_graph, kind="inference"),
        decompositions=decompositions())
    return backend(gm, example_inputs, **kwargs)


def register() -> None:
    """Make backend="powerfusion" known to torch.compile in this process, unless the
    installed package's entry point already provides it (torch loads that itself)."""
    from torch._dynamo.backends import registry as dynamo_registry

    if BACKEND_NAME in dynamo_registry._COMPILER_FNS:
        return
    try:
        from importlib.metadata import entry_points
        if any(ep.name == BACKEND_NAME for ep in entry_points(group="torch_dynamo_backends")):
            return
    except Exception:                    # noqa: BLE001, S110 - metadata is optional here
        pass
    dynamo_registry.register_backend(compiler_fn=powerfusion_backend, name=BACKEND_NAME)


register()
