"""Runtimes: compile generated source with the target's toolchain, cache, load, launch.

`cache` holds the disk cache shared by every target; `cpu` the C + OpenMP runtime.
"""
