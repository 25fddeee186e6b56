"""The built-in UDA benchmark: the paper's claims tested end to end on synthetic domains.

``segmerge bench`` (and :func:`run_benchmark`) renders the synthetic domains, pre-trains the
shared MiT encoder, trains source-only, self-training (UDA) and oracle models, merges them
through the public API every way the paper compares (singles, soup, the layer-wise merge,
the output ensemble, a sweep) and writes a report. Modules: ``settings`` (what a run does),
``store`` (the cache), ``models`` (what is trained), ``claims`` and ``candidates`` (what is
merged), ``experiments`` and ``scoring`` (merge and score), ``runner``, ``summary``,
``figures`` and ``report``.
"""

from segmerge_bench.benchmark.runner import BenchResult, run_benchmark
from segmerge_bench.benchmark.settings import FULL, LARGE, QUICK, REGIMES, BenchSettings

__all__ = ["FULL", "LARGE", "QUICK", "REGIMES", "BenchResult", "BenchSettings", "run_benchmark"]
