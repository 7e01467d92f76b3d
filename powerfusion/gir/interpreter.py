"""The GIR interpreter: the definition of what a GIR program means. Exact, simple, slow.

Statements run one at a time, in program order; a Loop of any kind (cores, SIMD,
serial) runs its body for var = 0 .. extent-1 one iteration after another.

Storage. Each global buffer is a 1-D numpy array of its elements in memory order plus
a *base*: the position of logical element 0 in that array (so an input with negative
strides can be read at negative offsets). An Access at flat index k reads or writes
array[base + k]. Storage dtypes are the buffers' own, except bfloat16, stored as
uint16 bit patterns. LOCAL buffers (one array per program run: each parallel iteration
writes what it reads) and REGISTER buffers hold values in the *compute* dtype:
16-bit floats as float32.

Values and rounding. Every value is a numpy scalar of a compute dtype. A value is
rounded to 16-bit precision only when it goes into a 16-bit buffer: on a Move into a
float16/bfloat16 buffer (of any level), on a Compute with op CAST whose dst is a
16-bit register, and for Const operands of a 16-bit dtype. Other computes into a
16-bit register keep full float32 precision. Conversions follow numpy's astype:
float -> int truncates toward zero, anything -> bool is `!= 0`.

Operands of a Compute are converted before the op runs: to the dst's compute dtype
(arithmetic), to bool (AND, OR, NOT and WHERE's condition), to their common numpy
type (comparisons); CAST and a plain copy (op None) take the value as it is. Integer
overflow wraps; transcendentals run in the compute dtype, erf through math.erf.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np

from ..dtypes import DType, promote
from ..graph.ops import Group, Op, accumulate_identity
from ..graph.reference import bfloat16_to_float32, float32_to_bfloat16_bits, round_to_bfloat16
from .check import GIRError
from .ir import (Access, Barrier, Buffer, Collective, Compute, Const, Launch, Level, Loop, Move,
                 Parallel, Program, Role, collectives_after)
from .ir import accumulators as accumulators_of

Storage = np.ndarray | tuple[np.ndarray, int]


# -- dtypes ----------------------------------------------------------------------------
def storage_dtype(dtype: DType) -> np.dtype:
    """numpy dtype of a global buffer's storage (bfloat16: uint16 bit patterns)."""
    return np.dtype(np.uint16) if dtype is DType.bfloat16 else dtype.to_numpy()


def compute_dtype(dtype: DType) -> np.dtype:
    """numpy dtype of a value of this dtype in a register (16-bit floats: float32)."""
    return dtype.compute.to_numpy()


def convert(value, dtype: DType, narrow: bool) -> np.generic:
    """value in dtype's compute type; narrow rounds to a 16-bit float's precision."""
    if dtype.is_bool:
        return np.bool_(value != 0)
    if narrow and dtype is DType.float16:
        return np.asarray(value).astype(np.float16).astype(np.float32)[()]
    if narrow and dtype is DType.bfloat16:
        value = np.asarray(value)
        return round_to_bfloat16(value if value.dtype == np.float64 else
                                 value.astype(np.float32))[()]
    return np.asarray(value).astype(compute_dtype(dtype))[()]


def as_storage(array: np.ndarray) -> tuple[np.ndarray, int]:
    """(1-D storage, base) viewing the memory of a strided array, writes included."""
    itemsize = array.itemsize
    if array.size == 0 or array.ndim == 0:   # (a 0-d array indexed by () is a copy)
        return array.reshape(-1), 0
    flipped = array[tuple(slice(None, None, -1) if s < 0 else slice(None)
                          for s in array.strides)]
    span = 1 + sum((n - 1) * abs(s) for n, s in zip(array.shape, array.strides)) // itemsize
    flat = np.lib.stride_tricks.as_strided(flipped, shape=(span,), strides=(itemsize,))
    base = sum((n - 1) * -s for n, s in zip(array.shape, array.strides) if s < 0) // itemsize
    return flat, base


# -- the ops, on numpy scalars of one compute dtype -------------------------------------
def _erf(x):
    return type(x)(math.erf(float(x)))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _divide(a, b):
    """True division on floats; on integers, C's: truncate toward zero (x / 0 -> 0)."""
    if isinstance(a, np.floating):
        return np.true_divide(a, b)
    if b == 0:
        return type(a)(0)
    q = abs(int(a)) // abs(int(b))
    return q if (a < 0) == (b < 0) else -q


def _fmod(a, b):
    """C's fmod (the sign of a) on floats; on integers C's %, made total as numpy's is:
    x % 0 -> 0, and INT_MIN % -1 -> 0 (C leaves both undefined)."""
    if isinstance(a, np.floating):
        return np.fmod(a, b)
    if b == 0:
        return type(a)(0)
    m = abs(int(a)) % abs(int(b))
    return type(a)(-m if a < 0 else m)


def _mod(a, b):
    """numpy's remainder (the sign of b): fmod, plus b where the signs differ; a zero
    result is copysign(0, b); x % 0 is NaN on floats, 0 on integers."""
    m = _fmod(a, b)
    if m != 0 and b != 0 and (m < 0) != (b < 0):
        return m + b
    if m == 0 and isinstance(a, np.floating):
        return np.copysign(type(a)(0), b)
    return m


OPS: dict[Op | None, Callable] = {
    None: lambda x: x,
    Op.CAST: lambda x: x,               # conversion (and rounding) to dst is done by the caller
    Op.NEG: np.negative,
    Op.EXP: np.exp,
    Op.LOG: np.log,
    Op.SQRT: np.sqrt,
    Op.RSQRT: lambda x: 1 / np.sqrt(x),
    Op.ABS: np.abs,
    Op.TANH: np.tanh,
    Op.ERF: _erf,
    Op.SIGMOID: _sigmoid,
    Op.RELU: lambda x: np.maximum(x, type(x)(0)),
    Op.SILU: lambda x: x * _sigmoid(x),
    Op.GELU: lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2.0))),
    Op.GELU_TANH: lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2.0 / math.pi)
                                                   * (x + 0.044715 * x ** 3))),
    Op.SIN: np.sin,
    Op.COS: np.cos,
    Op.TAN: np.tan,
    Op.LOG1P: np.log1p,
    Op.EXPM1: np.expm1,
    Op.LOG2: np.log2,
    Op.LOG10: np.log10,
    Op.EXP2: np.exp2,
    Op.FLOOR: np.floor,
    Op.CEIL: np.ceil,
    Op.TRUNC: np.trunc,
    Op.RINT: np.rint,
    Op.SIGN: np.sign,
    Op.NOT: np.logical_not,
    Op.ADD: np.add,
    Op.SUB: np.subtract,
    Op.MUL: np.multiply,
    Op.DIV: _divide,
    Op.FMOD: _fmod,
    Op.MOD: _mod,
    Op.POW: np.power,
    Op.MAXIMUM: np.maximum,
    Op.MINIMUM: np.minimum,
    Op.LT: np.less,
    Op.LE: np.less_equal,
    Op.GT: np.greater,
    Op.GE: np.greater_equal,
    Op.EQ: np.equal,
    Op.NE: np.not_equal,
    Op.AND: np.logical_and,
    Op.OR: np.logical_or,
    Op.WHERE: lambda cond, a, b: a if cond else b,
}


def operand_dtypes(op: Op | None, dst: DType, srcs: list[DType]) -> list[DType]:
    """The dtype each operand is converted to before op runs."""
    if op is None or op is Op.CAST:
        return srcs
    if op in Group.COMPARISON:
        common = promote(*srcs)
        return [common] * len(srcs)
    if op in Group.LOGICAL:
        return [DType.bool] * len(srcs)
    if op is Op.WHERE:
        return [DType.bool, dst, dst]
    return [dst] * len(srcs)


def operand_dtype(operand) -> DType:
    if isinstance(operand, Access):
        return operand.buffer.dtype
    if isinstance(operand, Const):
        return operand.dtype
    return DType.int64


# -- the machine -------------------------------------------------------------------------
class _Machine:
    def __init__(self, storage: dict[str, tuple[np.ndarray, int]], launch: Launch | None,
                 body: tuple = ()):
        self.storage = storage
        self.locals: dict[str, np.ndarray] = {}
        self.registers: dict[str, np.generic] = {}
        self.env: dict = {}                     # Var -> its current value
        self.threads = _Threads(launch, body) if launch is not None else None

    def run(self, stmts) -> None:
        for s in stmts:
            self.STATEMENTS[type(s)](self, s)

    def loop(self, s: Loop) -> None:
        threads = self.threads
        if threads is not None and threads.thread is None and s.kind is not Parallel.SERIAL:
            threads.loop(self, s)
            return
        for k in range(s.var.extent):
            self.env[s.var] = k
            self.run(s.body)
        self.env.pop(s.var, None)

    def barrier(self, s: Barrier) -> None:
        if self.threads is None:
            raise GIRError("a barrier in a program with no SIMT launch")
        self.threads.barrier()

    def collective(self, s: Collective) -> None:
        if self.threads is None:
            raise GIRError(f"{s} in a program with no SIMT launch")
        self.threads.collective(self, s)

    def move(self, s: Move) -> None:
        self.write(s.dst, convert(self.read(s.src), s.dst.buffer.dtype, narrow=True))

    def compute(self, s: Compute) -> None:
        dst = s.dst.buffer.dtype
        wanted = operand_dtypes(s.op, dst, [operand_dtype(o) for o in s.srcs])
        args = [convert(self.operand(o), d, narrow=False) for o, d in zip(s.srcs, wanted)]
        self.write(s.dst, convert(OPS[s.op](*args), dst, narrow=s.op is Op.CAST))

    STATEMENTS: ClassVar[dict] = {Loop: loop, Move: move, Compute: compute, Barrier: barrier,
                                  Collective: collective}

    def operand(self, o) -> np.generic:
        if isinstance(o, Access):
            return self.read(o)
        if isinstance(o, Const):
            return convert(o.value, o.dtype, narrow=True)
        return np.int64(o.index.evaluate(self.env))

    def read(self, a: Access) -> np.generic:
        buf = a.buffer
        if buf.level is Level.REGISTER:
            if buf.name not in self.registers:
                raise GIRError(f"register {buf.name} is read before it is written")
            return self.registers[buf.name]
        array, position = self.locate(a)
        if self.threads is not None:
            self.threads.access(a, position, write=False, where=self._where)
        raw = array[position]
        if buf.level is Level.GLOBAL and buf.dtype is DType.bfloat16:
            return bfloat16_to_float32(raw)[()]
        return convert(raw, buf.dtype, narrow=False)

    def write(self, a: Access, value: np.generic) -> None:
        buf = a.buffer
        if buf.level is Level.REGISTER:
            self.registers[buf.name] = value
            return
        array, position = self.locate(a)
        if buf.level is Level.GLOBAL and buf.dtype is DType.bfloat16:
            value = float32_to_bfloat16_bits(value)[()]
        if self.threads is not None:
            same = np.asarray(value, array.dtype).tobytes() == array[position].tobytes()
            self.threads.access(a, position, write=True, where=self._where, same=same)
        array[position] = value

    def locate(self, a: Access) -> tuple[np.ndarray, int]:
        """The array holding a's buffer and the position of a's element in it."""
        buf = a.buffer
        if buf.level is Level.LOCAL:
            if buf.name not in self.locals:
                self.locals[buf.name] = _poisoned(buf.size, compute_dtype(buf.dtype))
            array, base = self.locals[buf.name], 0
        elif buf.name in self.storage:
            array, base = self.storage[buf.name]
        else:
            raise GIRError(f"global buffer {buf.name} is not among the program's params")
        position = base + int(a.index.evaluate(self.env))
        if not 0 <= position < array.shape[0]:
            raise GIRError(f"{a} is out of bounds: element {position} of {array.shape[0]} "
                           f"(base {base}) with {self._where()}")
        return array, position

    def _where(self) -> str:
        return ", ".join(f"{v.name}={k}" for v, k in self.env.items()) or "no loop"


class _Threads:
    """The threads of a SIMT block, as the program's launch maps work onto them, and a
    check that they never race: an element of shared memory (a LOCAL array other than a
    private row, a non-input global buffer) written by one thread and read or written by
    another with no barrier between is a GIRError. Iteration i of a SIMD loop runs on
    thread (i / chunk) % lanes (of its unit's warp when a block holds several units); a
    row-level statement runs on every thread, its store made by thread 0. Units are
    taken one after another on one block, the way a grid-stride loop may run them.
    A register a SIMD loop accumulates into keeps one partial per thread, which the
    Collective after the loop combines (and synchronises the threads): one missing is
    a GIRError, one with the wrong op a wrong answer."""

    ALL = -1                                # a row-level read: every thread

    def __init__(self, launch: Launch, body: tuple):
        self.launch = launch
        self.collectives = collectives_after(body)
        self.partials: dict[str, list] = {}  # register -> each thread's, until combined
        self.saved: dict[str, object] = {}   # register -> its value before the SIMD loop
        self.thread: int | None = None      # inside a SIMD loop: the thread running it
        self.base = 0                       # the first thread of the unit at hand
        self.epoch = 0                      # barriers passed
        # (buffer, position) -> [epoch, writer, epoch of the readers, readers]
        self.seen: dict[tuple[str, int], list] = {}

    def barrier(self) -> None:
        self.epoch += 1

    def loop(self, machine: "_Machine", s: Loop) -> None:
        launch = self.launch
        if s.kind is Parallel.CORES:
            for k in range(s.var.extent):
                machine.env[s.var] = k
                self.base = (k % launch.rows) * launch.lanes
                machine.run(s.body)
            machine.env.pop(s.var, None)
            self.base = 0
            return
        collectives = self.collectives.get(id(s), ())
        registers = machine.registers
        combined = {c.dst.buffer.name for c in collectives}
        alone = sorted(set(accumulators_of(s, registers)) - combined)
        if alone:
            raise GIRError(f"SIMD loop {s.var.name} updates register(s) {', '.join(alone)} in "
                           "every thread, and no collective combines the threads' values")
        partials: dict[str, list] = {}
        for c in collectives:               # each thread's partial from op's identity
            name, dtype = c.dst.buffer.name, c.dst.buffer.dtype
            self.saved[name] = registers[name]
            partials[name] = [convert(accumulate_identity(c.op, dtype), dtype, narrow=True)] \
                * launch.lanes
        for k in range(s.var.extent):
            machine.env[s.var] = k
            lane = (k // launch.chunk) % launch.lanes
            self.thread = self.base + lane
            for name, values in partials.items():
                registers[name] = values[lane]
            machine.run(s.body)
            for name, values in partials.items():
                values[lane] = registers[name]
        machine.env.pop(s.var, None)
        self.thread = None
        self.partials.update(partials)

    def collective(self, machine: "_Machine", c: Collective) -> None:
        """The threads' partials combined by a tree (as a block reduction's shuffles
        pair them), then with the value from before the loop; it synchronises them."""
        name, dtype = c.dst.buffer.name, c.dst.buffer.dtype
        if name not in self.partials:
            raise GIRError(f"{c}: no SIMD loop right before it left partials of {name}")
        values = self.partials.pop(name)
        while len(values) > 1:
            half = len(values) // 2
            values = [convert(OPS[c.op](a, b), dtype, narrow=False)
                      for a, b in zip(values[:half], values[half:2 * half])] + values[2 * half:]
        machine.registers[name] = convert(OPS[c.op](self.saved.pop(name), values[0]), dtype,
                                          narrow=False)
        self.barrier()

    def access(self, a: Access, position: int, write: bool, where, same: bool = False) -> None:
        """One access by the thread at hand; `same`: a write of the value already there
        (a transpose tile's clamped edge lanes rewrite their neighbour's element so)."""
        buf = a.buffer
        if not self.launch.shares(buf):
            return
        who = self.thread if self.thread is not None else (self.base if write else self.ALL)
        record = self.seen.setdefault((buf.name, position), [-1, None, -1, set()])
        epoch = self.epoch
        race = record[0] == epoch and (record[1] != who or who == self.ALL) \
            and not (write and same)
        if write and record[2] == epoch:
            race = race or bool(record[3] - {who})
        if race:
            other = record[1] if record[0] == epoch and record[1] != who else "another"
            raise GIRError(f"threads race on element {position} of {buf.name}: "
                           f"{'written' if write else 'read'} by "
                           f"{'every thread' if who == self.ALL else f'thread {who}'} after "
                           f"thread {other} {'wrote' if record[0] == epoch else 'read'} it, "
                           f"with no barrier between ({where()})")
        if write:
            record[0], record[1] = epoch, who
        else:
            if record[2] != epoch:
                record[2], record[3] = epoch, set()
            record[3].add(who)


def _poisoned(size: int, dtype: np.dtype) -> np.ndarray:
    """Fresh storage whose unwritten elements stand out: NaN for floats."""
    fill = np.nan if dtype.kind == "f" else 0
    return np.full(size, fill, dtype=dtype)


def _bind(buf: Buffer, given: Storage | None) -> tuple[np.ndarray, int]:
    expected = storage_dtype(buf.dtype)
    if given is None:
        if buf.role is Role.INPUT:
            raise GIRError(f"input {buf.name} was not given to run()")
        return _poisoned(buf.size, expected), 0
    array, base = given if isinstance(given, tuple) else (given, 0)
    if array.dtype.name == "bfloat16":
        array = array.view(np.uint16)
    if array.dtype != expected:
        raise GIRError(f"buffer {buf.name}: storage must be {expected} for {buf.dtype}, "
                       f"got {array.dtype}")
    if array.ndim != 1:
        flat = array.reshape(-1)
        if buf.role is not Role.INPUT and not np.shares_memory(flat, array):
            raise GIRError(f"buffer {buf.name}: give a 1-D array (or a contiguous one) so "
                           "that writes reach it; as_storage() makes one")
        array = flat
    return array, base


def run(program: Program, arrays: Mapping[str, Storage]) -> dict[str, np.ndarray]:
    """Execute program on the caller's storage; return every param's 1-D storage. A
    program with a SIMT launch runs as its block's threads would, checked for races.

    arrays maps a param's name to its storage: `(flat, base)`, flat a 1-D array and
    base the position of logical element 0 in it, or a bare array (base 0; not 1-D
    only if contiguous). Inputs must be given; outputs and temps not given are
    allocated, filled with NaN (floats) or 0. Given arrays are written in place.
    """
    unknown = set(arrays) - {b.name for b in program.params}
    if unknown:
        raise GIRError(f"run() got arrays for {sorted(unknown)}, which are not params of "
                       f"{program.name}")
    storage = {b.name: _bind(b, arrays.get(b.name)) for b in program.params}
    with np.errstate(all="ignore"):
        _Machine(storage, program.launch, program.body).run(program.body)
    return {name: array for name, (array, _) in storage.items()}
