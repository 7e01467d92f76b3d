"""Seeded random programs: a pool of values grows one op at a time, each op drawn for
the dtypes and shapes at hand and kept only if numpy runs it and the result does not
depend on rounding (analysis.py). A seed always gives the same program.

About one program in twelve ends in an op numpy rejects (a max over an empty axis, a
bad reshape, a broadcast that does not fit, an axis out of range, ...): pf must
reject it too, with a typed error.
"""

from __future__ import annotations

import math

import numpy as np

from .analysis import Expected, Fragile, Info, NumpyRaised, analyze, evaluate
from .bounds import BF16
from .ops import OPS
from .program import Node, Program
from .values import DTYPES, draw_dtypes, draw_input, draw_shapes, pick

P_BAD = 0.04                                     # programs that end in a bad op
EXTENDED = ("any", "all", "argmax", "argmin")    # numpy reductions pf may lack
UNARY = ("neg", "abs", "exp", "log", "sqrt", "tanh", "sin", "cos", "square", "reciprocal",
         "not", "isnan", "isinf", "isfinite", "clip", "tan", "log1p", "expm1", "log2", "log10",
         "exp2", "floor", "ceil", "trunc", "rint", "round", "sign")
SCALAR_BINARY = ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "lt", "le",
                 "gt", "ge", "eq", "ne", "and", "or", "mod", "fmod")
BINARY = ("add", "add", "sub", "mul", "mul", "div", "maximum", "minimum", "lt", "le",
          "gt", "ge", "eq", "ne", "and", "or", "xor", "pow", "mod", "fmod")
REDUCE = ("sum", "sum", "mean", "max", "min", "sum", "max", "var", "std") + EXTENDED
SCALARS = {
    "f": (0.0, 1.0, -1.0, 0.5, 2.0, 3.25, -7.5, 1e-3, 1e3, 3, -2, True, float("nan"),
          float("inf"), float("-inf")),
    "i": (0, 1, -1, 2, 3, 7, -128, 2 ** 31 - 1, -2 ** 31, 2 ** 63 - 1, 2 ** 40, 0.5, 2.5,
          True),
    "b": (True, False, 1, 2, 0.5),
}
EXPONENTS = (0, 1, 2, 3, 4, 5, 8, 9, 300, 0.5, -0.5, -1, -2, 1.5, 2.0)   # 300: a loop on ints


class Generator:
    def __init__(self, seed: int, exclude: tuple[str, ...] = ()):
        self.rng = np.random.default_rng(seed)
        self.exclude = set(exclude)

    # -- helpers -----------------------------------------------------------------------------
    def choice(self, items):
        items = [i for i in items if i not in self.exclude] or list(items)
        return items[int(self.rng.integers(len(items)))]

    def coin(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def operand(self) -> Node:
        return self.pool[-1] if self.coin(0.6) else self.pool[int(self.rng.integers(
            len(self.pool)))]

    def info(self, node: Node) -> Info:
        return self.infos[node.uid]

    def shape(self, node: Node) -> tuple[int, ...]:
        return self.info(node).array.shape

    def kind(self, node: Node) -> str:
        k = self.info(node).array.dtype.kind
        return "f" if k in "fV" else k

    def partner(self, x: Node) -> Node:
        """A value whose shape broadcasts with x's (x itself if none does)."""
        mates = [n for n in self.pool if _broadcastable(self.shape(n), self.shape(x))]
        return mates[int(self.rng.integers(len(mates)))] if mates else x

    def spelling(self, op: str) -> int:
        return int(self.rng.integers(len(OPS[op].spellings)))

    # -- one op ---------------------------------------------------------------------------------
    def draw(self) -> Node:
        last_reduced = OPS[self.pool[-1].op].kind == "reduce" if self.pool[-1].op in OPS \
            else False
        weights = {"unary": 0.18, "scalar": 0.12, "binary": 0.2, "reduce": 0.18,
                   "view": 0.14, "cast": 0.08, "concat": 0.04, "where": 0.06}
        if last_reduced:
            weights["reduce"] = 0.5          # reductions of reductions
        category = pick(self.rng, list(weights), list(weights.values()))
        return getattr(self, "draw_" + category)(self.operand())

    def draw_unary(self, x: Node) -> Node:
        if self.coin(0.15):
            return Node("pow", (x,), ("scalar", self.choice(EXPONENTS), 1),
                        self.spelling("pow"))
        op = self.choice(UNARY)
        spelling = self.spelling(op)
        if op == "not" and self.kind(x) != "b":
            spelling = 0                    # ~ is bitwise on ints: pf has it on bools only
        if op == "reciprocal" and self.kind(x) != "f":
            spelling = 1                    # np.reciprocal of an int is integer division
        param = None
        if op == "clip" and self.info(x).array.dtype == BF16:
            op = "abs"                      # ml_dtypes has no clip loop: numpy gives float32
        if op == "clip":
            lo, hi = sorted(self.choice(SCALARS[self.kind(x)]) for _ in range(2))
            param = (lo, hi)
        return Node(op, (x,), param, spelling)

    def draw_scalar(self, x: Node) -> Node:
        op = self.choice(SCALAR_BINARY)
        value = self.choice(SCALARS[self.kind(x)])
        spelling = self.spelling(op)
        if op in ("and", "or") and not (self.kind(x) == "b" and isinstance(value, bool)):
            spelling = 0                    # & and | are bitwise on ints
        return Node(op, (x,), ("scalar", value, int(self.rng.integers(2))), spelling)

    def draw_binary(self, x: Node) -> Node:
        op = self.choice(BINARY)
        y = self.partner(x)
        a, b = (x, y) if self.coin(0.5) else (y, x)
        spelling = self.spelling(op)
        if op in ("and", "or") and not (self.kind(a) == self.kind(b) == "b"):
            spelling = 0                    # & and | are bitwise on ints
        return Node(op, (a, b), None, spelling)

    def draw_where(self, x: Node) -> Node:
        bools = [n for n in self.pool if self.kind(n) == "b"
                 and _broadcastable(self.shape(n), self.shape(x))]
        cond = self.choice(bools) if bools and self.coin(0.8) else self.partner(x)
        y = self.partner(x)
        return Node("where", (cond, x, y) if self.coin(0.5) else (cond, y, x), None,
                    self.spelling("where"))

    def draw_reduce(self, x: Node) -> Node:
        op = self.choice(REDUCE)
        ndim = len(self.shape(x))
        form = self.choice(("none", "int", "negative", "tuple", "empty"))
        axis = None
        if ndim and form == "int":
            axis = int(self.rng.integers(ndim))
        elif ndim and form == "negative":
            axis = -int(self.rng.integers(1, ndim + 1))
        elif ndim and form == "tuple":
            k = int(self.rng.integers(1, ndim + 1))
            axis = tuple(sorted(int(a) for a in self.rng.choice(ndim, k, replace=False)))
        elif form == "empty" and self.coin(0.3):
            axis = ()
        param = (axis, self.coin(0.5))
        if op in ("var", "std"):
            param += (int(self.coin(0.3)),)
        return Node(op, (x,), param, self.spelling(op))

    def draw_view(self, x: Node) -> Node:
        shape = self.shape(x)
        ndim = len(shape)
        view = self.choice(("transpose", "transpose", "reshape", "reshape", "index", "index",
                            "index", "swapaxes", "ravel", "expand_dims", "squeeze",
                            "broadcast_to"))
        if view == "transpose":
            if self.coin(0.3):
                return Node("transpose", (x,), None, self.choice((0, 1, 3)))
            return Node("transpose", (x,), tuple(int(a) for a in self.rng.permutation(ndim)),
                        int(self.rng.integers(3)))
        if view == "swapaxes":
            axes = tuple(int(a) for a in self.rng.integers(-ndim, ndim, 2)) if ndim else (0, 0)
            return Node("swapaxes", (x,), axes, self.spelling("swapaxes"))
        if view == "reshape":
            return Node("reshape", (x,), self.new_shape(shape), self.spelling("reshape"))
        if view == "expand_dims":
            return Node("expand_dims", (x,), int(self.rng.integers(-ndim - 1, ndim + 1)))
        if view == "squeeze":
            ones = [k for k, n in enumerate(shape) if n == 1]
            return Node("squeeze", (x,), self.choice(ones) if ones and self.coin(0.7)
                        else None)
        if view == "broadcast_to":
            lead = tuple(int(self.rng.integers(1, 4)) for _ in range(int(self.rng.integers(2))))
            grown = tuple(int(self.rng.integers(2, 4)) if n == 1 and self.coin(0.5) else n
                          for n in shape)
            return Node("broadcast_to", (x,), lead + grown)
        if view == "ravel":
            return Node("ravel", (x,), None, self.spelling("ravel"))
        return Node("index", (x,), self.index(shape))

    def new_shape(self, shape) -> tuple[int, ...]:
        size = math.prod(shape)
        ndim = int(self.rng.integers(0 if size == 1 else 1, 5))
        new = [1] * max(ndim, 1)
        for f in _factors(size) if size else [0]:
            new[int(self.rng.integers(len(new)))] *= f
        if ndim == 0:
            return ()
        if self.coin(0.4):
            new[int(self.rng.integers(len(new)))] = -1
        return tuple(new)

    def index(self, shape) -> str:
        items = []
        for n in shape:
            r = self.rng.random()
            if r < 0.35:
                items.append(":")
            elif r < 0.55:
                a, b = sorted(int(v) for v in self.rng.integers(-n - 1, n + 2, 2))
                items.append(f"{a}:{b}")
            elif r < 0.7:
                a = int(self.rng.integers(0, n + 1))
                items.append(f"{a}::{int(self.rng.integers(1, 4))}")
            elif r < 0.9 and n:
                items.append(str(int(self.rng.integers(-n, n))))
            else:
                items.append(":")
            if self.coin(0.1):
                items.append("None")
        if items and self.coin(0.2):
            items = ["..."] + items[int(self.rng.integers(1, len(items) + 1)):]
        while len(items) > 1 and items[-1] == ":" and self.coin(0.6):
            items.pop()
        return ", ".join(items) if items else "()"

    def draw_bad(self, x: Node) -> Node:
        """An op numpy rejects (usually) for x's shape."""
        shape = self.shape(x)
        nd = len(shape)
        strangers = [n for n in self.pool if not _broadcastable(self.shape(n), shape)]
        bad = [Node("reshape", (x,), (math.prod(shape) + 1,)),
               Node(self.choice(REDUCE), (x,), (nd, False)),
               Node(self.choice(REDUCE), (x,), ((0, 0) if nd else 0, True)),
               Node("transpose", (x,), tuple(range(nd + 1))),
               Node("index", (x,), str(shape[0]) if nd else "0"),
               Node("expand_dims", (x,), nd + 2),
               Node("broadcast_to", (x,), tuple(n + 1 if n > 1 else n for n in shape)
                    + (2,) if nd else (0,))]
        if strangers:
            bad.append(Node(self.choice(BINARY), (x, self.choice(strangers))))
            if len(self.shape(strangers[0])) == nd and nd:
                bad.append(Node("concatenate", (x, strangers[0]), 0))
        if not nd:
            bad.append(Node("concatenate", (x, x), 0))
        return bad[int(self.rng.integers(len(bad)))]

    def draw_cast(self, x: Node) -> Node:
        return Node("astype", (x,), self.choice(DTYPES), self.spelling("astype"))

    def draw_concat(self, x: Node) -> Node:
        shape = self.shape(x)
        if not shape:
            return self.draw_unary(x)
        axis = int(self.rng.integers(-len(shape), len(shape)))
        a = axis % len(shape)
        mates = [n for n in self.pool if len(self.shape(n)) == len(shape) and all(
            m == s for k, (m, s) in enumerate(zip(self.shape(n), shape)) if k != a)]
        if self.coin(0.3) and len([m for m in mates if self.shape(m) == shape]) > 0:
            same = [m for m in mates if self.shape(m) == shape]
            return Node("stack", (x, self.choice(same)), axis)
        pieces = (x,) + tuple(self.choice(mates) for _ in range(int(self.rng.integers(1, 3))))
        return Node("concatenate", pieces, axis, self.spelling("concatenate"))

    # -- a program ----------------------------------------------------------------------------
    def program(self) -> Program:
        n_inputs = int(pick(self.rng, (1, 1, 2, 2, 2, 3, 3, 4)))
        shapes = draw_shapes(self.rng, n_inputs)
        inputs = [draw_input(self.rng, s, d)
                  for s, d in zip(shapes, draw_dtypes(self.rng, n_inputs))]
        arrays = [i.array() for i in inputs]
        self.pool, self.infos = [], {}
        for k in range(n_inputs):
            node = Node("input", (), k)
            self.pool.append(node)
            self.infos[node.uid] = evaluate(node, self.infos, arrays)
        terminals, raising = [], None
        for step in range(int(self.rng.integers(1, 11))):
            for _attempt in range(15):
                if step == 0 and self.coin(0.15):   # casts of inputs: exact, so exactly
                    node = self.draw_cast(self.pool[int(self.rng.integers(n_inputs))])
                else:
                    node = self.draw()
                try:
                    info = evaluate(node, self.infos, arrays)
                except Fragile:
                    continue
                except NumpyRaised as raised:
                    raising = raising or (node, raised.error)
                    continue
                self.infos[node.uid] = info
                if info.supported:
                    self.pool.append(node)
                    break
                terminals.append(node)        # e.g. numpy's int8 from bool ** 2
        if self.coin(P_BAD):
            bad = self.draw_bad(self.operand())
            try:
                evaluate(bad, self.infos, arrays)
            except NumpyRaised as raised:
                raising = (bad, raised.error)
            except Fragile:
                pass
            else:
                raising = None
        if raising and self.coin(0.5):
            return Program(inputs, [raising[0]])
        outputs = [self.pool[-1]] if len(self.pool) > n_inputs or not terminals \
            else [terminals[-1]]
        for _ in range(int(pick(self.rng, (0, 0, 0, 1, 1, 2)))):
            outputs.append(self.choice(self.pool[n_inputs:] or self.pool))
        if terminals and self.coin(0.5):
            outputs.append(terminals[-1])
        outputs = list(dict.fromkeys(outputs)) if self.coin(0.9) else outputs
        return Program(inputs, outputs)


def _broadcastable(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def _factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out + ([n] if n > 1 else [])


def generate(seed: int, exclude: tuple[str, ...] = ()) -> tuple[Program, Expected]:
    """The program of this seed and numpy's results for it."""
    program = Generator(seed, exclude).program()
    return program, analyze(program)
