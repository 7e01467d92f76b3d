"""Runtimes: compile generated source with the target's toolchain, cache, load, launch.

`cache` holds the disk cache shared by every target; `cpu`, `opencl` and `cuda` the
toolchains and devices; `execute` the contract every executable follows and the run
they share; `cpu_executable` and `simt_executable` the executables; `backends` what a
target name means on this machine; `probe` measures this CPU's bandwidths.
"""
