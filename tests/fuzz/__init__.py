"""A differential fuzzer: random numpy programs, compiled by pf.jit, checked against numpy.

    python -m tests.fuzz --programs 10000 [--seed S] [--target cpu|opencl] [--jobs N]
    python -m tests.fuzz --replay SEED [SEED ...] [--shrink]

Modules, in the order a program flows through them:

  program.py    Program = input arrays + output Nodes; prints as Python source, which
                is both what numpy runs (the reference) and what pf.jit traces
  ops.py        the op vocabulary: spellings, and a first-order error bound per op
  values.py     inputs: broadcastable shapes (0-d, size 1, empty, many rows), all seven
                dtypes, NaN/Inf/-0/subnormals, integer limits, rounding ties, layouts
  analysis.py   numpy's result node by node, with error bounds; rejects programs whose
                result depends on rounding (so every disagreement is a defect)
  generator.py  seeded random programs: element-wise ops, reductions of reductions,
                views, casts, concatenation, where, several outputs; ~5% end in an op
                numpy rejects (pf must reject it too, with a typed error)
  check.py      pf.jit's result against numpy's: kinds of failure, tolerances
  worker.py     child processes, so a segfault or a hang costs one task
  campaign.py   seeds in batches (one pf.jit call per batch), failures confirmed alone
  shrink.py     greedy shrinking to the smallest program that fails the same way
  report.py     shrinks a few failures per class and writes them as markdown
  test_fuzz.py  the CI budget (cpu, and a smaller share on OpenCL) and the fuzzer's tests

FINDINGS.md lists the classes of defects found so far, each with a minimal repro.
"""
