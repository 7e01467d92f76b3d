"""PowerFusion's benchmarks: `python -m benchmarks.suite` or `powerfusion bench`."""
