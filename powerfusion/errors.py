"""Typed errors. Every message names the argument or op, what was expected and what came."""

from __future__ import annotations


class PowerFusionError(Exception):
    """Base class of every error PowerFusion raises on purpose."""


class ShapeError(PowerFusionError, ValueError):
    """Shapes that do not fit: broadcasting, reshape sizes, axes out of range."""


class DTypeError(PowerFusionError, TypeError):
    """A dtype the operation or the target cannot take."""


class UnsupportedError(PowerFusionError, NotImplementedError):
    """An operation, argument kind or target PowerFusion does not support (yet)."""


class CompileError(PowerFusionError, RuntimeError):
    """The target's compiler rejected generated source.

    Holds the command that ran, the compiler's stderr and the path where the
    source is kept for inspection.
    """

    def __init__(self, message: str, *, command: list[str] | tuple[str, ...] = (),
                 stderr: str = "", source_path: str | None = None):
        self.command = list(command)
        self.stderr = stderr
        self.source_path = source_path
        detail = message
        if self.command:
            detail += "\n  command: " + " ".join(self.command)
        if source_path:
            detail += f"\n  source kept at: {source_path}"
        if stderr:
            detail += "\n  compiler said:\n" + "\n".join("    " + l for l in stderr.splitlines()[:40])
        super().__init__(detail)


class CacheError(PowerFusionError, OSError):
    """The kernel cache cannot be used, nor a private temporary cache in its place.

    The message names the directory, the reason and $POWERFUSION_CACHE_DIR.
    """
