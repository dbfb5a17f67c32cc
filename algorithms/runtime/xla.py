"""XLA settings applied by the entry points before JAX starts its backend.

NOTE: XLA:CPU's concurrency-optimised scheduler runs independent kernels of one computation on several threads.
For the acting step (a tiny MLP plus normaliser statistics, ~40 kernels) the thread hand-offs cost more than the
work: on a 2-core machine one call takes ~105 us with it and ~35 us without (benchmarks/RESULTS.md). Users who set
XLA_FLAGS themselves keep theirs.
"""
from __future__ import annotations

import os

CPU_FLAGS = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


def configure() -> None:
  flags = os.environ.get("XLA_FLAGS", "")
  if "concurrency_optimized_scheduler" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + CPU_FLAGS).strip()
