"""mgas_bench: a plug-in benchmark suite for differentiable neural architecture search.

The host (this package) defines hooks (:mod:`mgas_bench.hookspecs`) and public
types (:mod:`mgas_bench.components`), runs suites and builds leaderboards. It
knows no search algorithm: methods, search spaces, discretizers, pruners and
data sets all arrive as plugins through the ``mgas_bench`` entry-point group.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mgas-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
