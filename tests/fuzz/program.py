"""Programs as small ASTs that print as readable Python and run on numpy or pf.jit.

A `Program` is a list of input arrays and a list of output `Node`s. Each node is an
op of `ops.OPS` applied to earlier nodes, with a parameter (axis, shape, dtype, ...)
and a spelling (which of the op's equivalent numpy/pf spellings prints it). The same
source text is what numpy evaluates (the reference) and what pf.jit traces, so a
failure report is a program anyone can paste and run.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

import powerfusion as pf

NAMESPACE = {"np": np, "pf": pf, "ml_dtypes": ml_dtypes, "nan": np.nan, "inf": np.inf}

_ids = itertools.count()


@dataclass(frozen=True, eq=False)
class Node:
    """One value of a program: `op` of `ops.OPS` (or "input") over `args`."""

    op: str
    args: tuple["Node", ...] = ()
    param: Any = None           # hashable and printable: axis, shape, dtype name, scalar
    spelling: int = 0           # index into the op's spellings
    uid: int = field(default_factory=lambda: next(_ids), compare=False)

    def __repr__(self) -> str:
        return f"Node({self.op}, #{self.uid})"


# -- inputs ----------------------------------------------------------------------------------
# How an input argument is laid out in memory, as an expression over its values {A}.
LAYOUTS = {
    "contiguous": "{A}",
    "fortran": "np.asfortranarray({A})",
    "strided": "np.stack([{A}, {A}], -1)[..., 0]",
    "reversed": "np.flip(np.flip({A}).copy())",
    "offset": "np.concatenate([{A}.ravel()[:1], {A}.ravel()])[1:].reshape({shape})",
    "broadcast": "np.broadcast_to({A}, {shape})",    # {A} has size 1 on axis 0
    "bigendian": "{A}.astype(np.dtype({dt}).newbyteorder('>'))",
    "unaligned": "np.frombuffer(b'\\0' + {A}.tobytes(), {dt}, offset=1).reshape({shape})",
    "scalar": "{A}[()]",                               # a numpy scalar (np.generic)
    "python": "{A}.item()",                            # a Python bool, int or float
}


@dataclass(eq=False)
class Input:
    """An argument: its values (`base`) and the layout that builds the argument."""

    base: np.ndarray
    layout: str = "contiguous"
    shape: tuple[int, ...] | None = None     # the argument's shape if the layout changes it

    def __post_init__(self):
        self.base = np.asarray(self.base)    # a 0-d array, never a numpy scalar ("scalar")
        if self.shape is None:
            self.shape = tuple(self.base.shape)

    def source(self) -> str:
        return LAYOUTS[self.layout].format(A=array_literal(self.base), shape=self.shape,
                                           dt=dtype_source(self.base.dtype))

    def array(self):
        if self.layout == "contiguous":
            return self.base.copy()
        return eval(LAYOUTS[self.layout].format(A="A", shape=self.shape,
                                                dt=dtype_source(self.base.dtype)),
                    NAMESPACE, {"A": self.base})


def dtype_source(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype == np.dtype(ml_dtypes.bfloat16):
        return "ml_dtypes.bfloat16"
    return f"np.{dtype.name}"


def _scalar_text(x) -> str:
    if isinstance(x, (bool, np.bool_)):
        return repr(bool(x))
    if isinstance(x, (int, np.integer)):
        return repr(int(x))
    x = float(x)
    return "nan" if x != x else ("inf" if x == np.inf else "-inf" if x == -np.inf else repr(x))


def array_literal(a: np.ndarray) -> str:
    """Python source for an array with exactly these values and dtype."""
    dt = dtype_source(a.dtype)
    if a.size == 0:
        return f"np.zeros({tuple(a.shape)}, {dt})"
    floatlike = a.dtype.kind in "fV"           # bfloat16 is kind 'V'
    flat = a.reshape(-1).astype(np.float64) if floatlike else a.reshape(-1)
    same = np.array_equal(flat, np.repeat(flat[:1], a.size), equal_nan=True) and (
        not floatlike or len(set(np.signbit(flat).tolist())) == 1)      # -0.0 is not 0.0
    if a.size > 1 and same:
        return f"np.full({tuple(a.shape)}, {_scalar_text(flat[0])}, {dt})"
    texts = iter([_scalar_text(v) for v in flat])

    def nested(shape) -> str:
        if not shape:
            return next(texts)
        return "[" + ", ".join(nested(shape[1:]) for _ in range(shape[0])) + "]"
    return f"np.array({nested(a.shape)}, {dt})"


def input_name(k: int) -> str:
    letters = "abcdeghjkmnpqrsuvwxyz"             # not f (the function), i, l, o, t (temps)
    return letters[k] if k < len(letters) else f"x{k}"


# -- programs ----------------------------------------------------------------------------------
@dataclass(eq=False)
class Program:
    inputs: list[Input]
    outputs: list[Node]

    def nodes(self) -> list[Node]:
        """Every node reachable from the outputs, operands before their users."""
        order, seen = [], set()

        def visit(n: Node):
            if n.uid in seen:
                return
            seen.add(n.uid)
            for a in n.args:
                visit(a)
            order.append(n)
        for out in self.outputs:
            visit(out)
        return order

    def ops(self) -> list[str]:
        return sorted({n.op for n in self.nodes() if n.op != "input"})

    def size(self) -> int:
        return len([n for n in self.nodes() if n.op != "input"])

    def source(self, name: str = "f") -> str:
        """`def f(a, b): ...` with a temporary for every value used more than once."""
        from .ops import render
        nodes = self.nodes()
        uses: dict[int, int] = {}
        for n in nodes:
            for a in n.args:
                uses[a.uid] = uses.get(a.uid, 0) + 1
        for out in self.outputs:
            uses[out.uid] = uses.get(out.uid, 0) + 1
        text: dict[int, str] = {}
        lines, temps = [], 0
        for n in nodes:
            if n.op == "input":
                text[n.uid] = input_name(n.param)
                continue
            expr = render(n, [text[a.uid] for a in n.args])
            if uses.get(n.uid, 0) > 1:
                text[n.uid] = f"t{temps}"
                lines.append(f"    t{temps} = {expr}")
                temps += 1
            else:
                text[n.uid] = expr
        params = ", ".join(input_name(k) for k in range(len(self.inputs)))
        results = [text[o.uid] for o in self.outputs]
        ret = results[0] if len(results) == 1 else "(" + ", ".join(results) + ")"
        if not lines and len(ret) < 200:
            return f"{name} = lambda {params}: {ret}"
        return "\n".join([f"def {name}({params}):", *lines, f"    return {ret}"])

    def function(self):
        """The program as a Python function (what numpy runs and pf.jit traces)."""
        return compile_source(self.source())

    def arrays(self) -> list:
        return [i.array() for i in self.inputs]

    def repro(self, target: str = "cpu") -> str:
        """Stand-alone Python: imports, inputs, the function, the pf call."""
        head = "import numpy as np, ml_dtypes, powerfusion as pf\nfrom numpy import nan, inf"
        args = [f"{input_name(k)} = {i.source()}" for k, i in enumerate(self.inputs)]
        return "\n".join([head, *args, self.source(), f"print(f({self._call()}))",
                          f"print({self._jit(target)}({self._call()}))"])

    def one_line(self, target: str = "cpu") -> str:
        """The repro on one line where the function is a lambda ("" where it is not)."""
        args = "; ".join(f"{input_name(k)} = {i.source()}" for k, i in enumerate(self.inputs))
        src = self.source()
        if "\n" in src:
            return ""
        return f"{args}; {src}; {self._jit(target)}({self._call()})  # numpy: f({self._call()})"

    def _call(self) -> str:
        return ", ".join(input_name(k) for k in range(len(self.inputs)))

    @staticmethod
    def _jit(target: str) -> str:
        return "pf.jit(f)" if target == "cpu" else f"pf.jit(f, target={target!r})"


@functools.lru_cache(maxsize=4096)
def _compiled(source: str):
    return compile(source, "<fuzz program>", "exec")


def compile_source(source: str):
    scope = dict(NAMESPACE)
    exec(_compiled(source), scope)
    return scope["f"]


def merge(programs: list[Program]) -> Program:
    """One program computing all of them (inputs renumbered, outputs concatenated)."""
    inputs, outputs = [], []
    for p in programs:
        offset = len(inputs)
        inputs += p.inputs
        memo: dict[int, Node] = {}
        outputs += [renumber(o, offset, memo) for o in p.outputs]
    return Program(inputs, outputs)


def renumber(n: Node, offset: int, memo: dict) -> Node:
    if n.uid in memo:
        return memo[n.uid]
    if n.op == "input":
        out = Node("input", (), n.param + offset)
    else:
        out = Node(n.op, tuple(renumber(a, offset, memo) for a in n.args), n.param, n.spelling)
    memo[n.uid] = out
    return out
