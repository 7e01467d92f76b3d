from .target import MemoryLevel, Target, detect_cpu

__all__ = ["MemoryLevel", "Target", "detect_cpu", "get_target"]


def get_target(name: str) -> Target:
    from ..errors import UnsupportedError

    if name == "cpu":
        return detect_cpu()
    raise UnsupportedError(f"target={name!r}: supported targets are 'cpu' "
                           "(GPU targets 'cuda', 'hip', 'opencl' are planned)")
