"""The table of aten ops the backend replays: op -> handler, and the checks some ops
need before PowerFusion may take a node of them."""

from __future__ import annotations

HANDLERS: dict = {}         # aten op -> fn(Ctx, *args, **kwargs) -> replayed value
PREDICATES: dict = {}       # aten op -> fn(fx node) -> reason it can't be taken, or None
ELEMENTWISE: set = set()


def handles(*targets, elementwise: bool = False, check=None):
    """Register the decorated function as the handler of the aten ops targets."""
    def deco(fn):
        for t in targets:
            HANDLERS[t] = fn
            if check is not None:
                PREDICATES[t] = check
            if elementwise:
                ELEMENTWISE.add(t)
        return fn
    return deco
