"""The compiled graph as torch.compile calls it, with each region's lean path as one
call straight from the graph's code: the native glue's `Launch` (native_launch.cpp)
where it is built, else a generated Python function.

In a model every Python frame and every torch call between two kernels costs a few
microseconds (the caches are cold after a matmul), and a region called as a module
takes four frames before its kernels run (the module attribute, `Region.__call__`,
`forward`, the launch). After the graph's first call each region knows the signature
it runs with; `specialise` then writes, per region, a function that checks that
signature (shape, strides, dtype, no lazy negation: in one C++ call, TorchDynamo's tensor
guards, where this torch has them), takes its memory from the graph's pool
(`TensorPool`, which the graph's large matmuls write into too) and calls the kernels
with the data pointers, unrolled, and points the graph's call at it. Anything else -
another signature, a region that gave up, a failure - goes to `Region.forward` as
before, so the lean function can only be faster, never different. The native `Launch`
does the same in one C++ call (benchmarks/torch_overhead.py times both); the function
stays for regions whose results are copies or constants, and where no C++ compiler
builds the glue.
"""

from __future__ import annotations

import ctypes
import threading

import torch.fx

from ...graph.views import contiguous_strides
from . import native
from .library_outputs import pool_library_outputs
from .region import Region
from .tensor_pool import TensorPool, own_pool
from .view_chains import native_restrides


class _NoKernels:
    """The launch of a region that runs no kernel."""
    outputs = allocations = launches = ()
    pool = own_pool([])


_NO_KERNELS = _NoKernels()


def lean_function(region: Region, pool: TensorPool | None = None):
    """A function running region's lean path for its current signature, or None when
    the region has none (its last call was not lean, or it gave up); its kernels' memory
    from pool (the graph's), else from the region's own."""
    hot = region.hot
    if hot is None:
        return None
    layouts, compiled, guard = hot
    launch, lean = compiled.cpu_launch, compiled.fast
    if launch is None:                   # no kernels: every result an argument's copy
        launch = _NO_KERNELS             # or a constant
    if any(kind != "buffer" for kind, *_ in launch.outputs):
        return None                      # a kernel result the plan copies or fills
    names = [f"a{k}" for k in range(len(layouts))]
    take = launch.pool.take
    if pool is not None and launch.allocations:
        take = pool.taker(launch.allocations)
        launch.pool.release()            # what the region's first calls kept
    env = {"region": region, "hot": hot, "take": take,
           "forward": region.forward, "give_up": region.give_up_running}
    checks = ["region.hot is hot"]
    if guard is not None:
        env["guard"] = guard
        checks.append(f"guard({', '.join(names)})")
    else:
        for k, (shape, stride, dtype) in enumerate(layouts):
            env[f"S{k}"], env[f"T{k}"], env[f"D{k}"] = shape, stride, dtype
            checks.append(f"a{k}.shape == S{k} and a{k}.stride() == T{k} "
                          f"and a{k}.dtype == D{k} and not a{k}.is_neg()")
    n_inputs = len(layouts)
    pointers = [f"p{k} = a{k}.data_ptr()" for k in range(n_inputs)]
    pointers += [f"p{n_inputs + j} = m[{j}].data_ptr()" for j in range(len(launch.allocations))]
    calls = []
    for i, (function, array, slots) in enumerate(launch.launches):
        env[f"K{i}"], env[f"A{i}"] = function, array
        calls.append(f"K{i}(A{i}({', '.join(f'p{s}' for s in slots)}))")
    if lean.pool is not None:            # the results copied or filled in pooled memory
        env["take_results"] = lean.pool.take
        calls.append("r = take_results()")
    results = []
    for j, (kind, what, *rest) in enumerate(lean.recipe):
        if kind == "arg":
            results.append(f"a{what}")
            continue
        if kind == "kernel":
            _, k, shape, again = launch.outputs[what]
            value = f"m[{k}]"
            if shape is not None:
                env[f"V{j}"] = shape
                value += f".view(V{j})"
            if again:
                value += ".clone()"
            inverse = rest[0]
        else:
            m, inverse = rest
            value = f"r[{m}]"
        if inverse is not None:
            env[f"P{j}"] = inverse
            value += f".permute(P{j})"
        if kind == "copy":
            value += f".copy_(a{what})"
        elif kind == "full":
            env[f"F{j}"] = what
            value += f".fill_(F{j})"
        results.append(value)
    returned = results[0] if region.single else f"({', '.join(results)},)"
    args = ", ".join(names)
    body = "\n".join(f"            {line}" for line in calls)
    source = (
        f"def lean({args}):\n"
        f"    if {' and '.join(checks)}:\n"
        f"        m = take()\n"
        + "".join(f"        {line}\n" for line in pointers) +
        f"        try:\n{body}\n"
        f"        except Exception as e:    # noqa: BLE001 - never break the model\n"
        f"            give_up(e)\n"
        f"            return forward({args})\n"
        f"        return {returned}\n"
        f"    return forward({args})\n")
    exec(compile(source, f"<powerfusion lean {region.label}>", "exec"), env)  # noqa: S102
    lean = env["lean"]
    lean.__name__ = lean.__qualname__ = region.label.replace(".", "_")
    lean.__module__ = __name__
    lean.source, lean.region = source, region
    return lean


def native_lean(region: Region, pool, glue):
    """The region's lean path as one call into the native glue (glue.Launch, its
    kernels' memory from pool, a glue.Pool), or None where it has no native form (a
    result the plan copies or fills, or no lean path at all)."""
    hot = region.hot
    if hot is None:
        return None
    layouts, compiled, _ = hot
    launch, lean = compiled.cpu_launch, compiled.fast
    if launch is None or lean.pool is not None \
            or any(kind != "buffer" for kind, *_ in launch.outputs):
        return None
    results = []
    for kind, what, *rest in lean.recipe:
        if kind == "arg":
            results.append(("arg", what))
            continue
        _, k, shape, again = launch.outputs[what]
        shape = tuple(launch.allocations[k][0] if shape is None else shape)
        stride, inverse = contiguous_strides(shape), rest[0]
        if inverse is not None:          # the permuted view, made directly
            shape, stride = (tuple(shape[d] for d in inverse),
                             tuple(stride[d] for d in inverse))
        results.append(("kernel", k, shape, stride, again))
    taker = pool.taker(launch.allocations) if launch.allocations else None
    launch.pool.release()                # what the region's first calls kept
    kernels = [(ctypes.cast(function, ctypes.c_void_p).value, slots)
               for function, _, slots in launch.launches]
    call = glue.Launch(region, hot, region.forward, region.give_up_running, taker,
                       [(tuple(shape), tuple(stride), dtype) for shape, stride, dtype in layouts],
                       kernels, results, region.single)
    call.__name__ = call.__qualname__ = region.label.replace(".", "_")
    call.__module__, call.region = __name__, region
    return call


def boxed_runner(gm: torch.fx.GraphModule):
    """gm's forward as AOTAutograd calls it (one list of arguments), specialised after
    its first call: each region with a lean path is called through its lean function."""
    state = {"forward": gm.forward, "specialised": False}
    lock = threading.Lock()

    def run(args):
        out = state["forward"](*args)
        if not state["specialised"]:
            with lock:
                if not state["specialised"]:
                    state["forward"] = specialise(gm)
                    state["specialised"] = True
        return out

    run._boxed_call = True
    return run


def specialise(gm: torch.fx.GraphModule):
    """Point each region call of gm at its lean function, where it has one, and each
    large matmul at pooled memory, all from one pool for the graph (`TensorPool`, or the
    native glue's Pool, whose Launch and Matmul then do the same in one C++ call each, as
    its Restride does a folded chain of views); gm's new forward. The Region modules stay
    (what `advise` and a fallback read)."""
    glue = native.module()
    pool = TensorPool() if glue is None else glue.Pool()
    gm.powerfusion_pool = pool           # (what a memory report reads)
    changed = pool_library_outputs(gm, pool, glue) > 0
    if glue is not None:
        changed |= native_restrides(gm, glue) > 0
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        region = gm.get_submodule(node.target)
        if not isinstance(region, Region):
            continue
        lean = None if glue is None else native_lean(region, pool, glue)
        if lean is None:
            lean = lean_function(region, pool)
        if lean is None:
            continue
        node.op, node.target = "call_function", lean
        changed = True
    if changed:
        gm.recompile()
    return gm.forward
