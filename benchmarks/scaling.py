"""How a search step's time and memory grow with cells, channels and input size.

    python -m benchmarks.scaling [--batch B] [--repeats N] [--threads T] [--out-dir DIR]

For DARTS (first order) and MG-DARTS (single stage), every combination of cells (3, 5,
8), channels (8, 16) and input size (8, 16, 32): the median time of one search step and
the peak memory of building the supernet and stepping it, each point in a fresh
process. Writes ``scaling.csv``, ``scaling.md`` and ``scaling.png`` to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pandas as pd
import torch

from benchmarks.steps import in_fresh_process, median_seconds, search_steps
from mgas_bench.components import SupernetSpec

METHODS = {"darts": "DARTS", "mg-darts-1-stage": "MG-DARTS"}
CELLS, CHANNELS, SIZES = (3, 5, 8), (8, 16), (8, 16, 32)
# Per column of the summary table: sizes, then times and ratios, then megabytes and a ratio.
FORMATS = (".0f", ".0f", ".0f", ".2f", ".2f", ".2f", ".0f", ".0f", ".2f")


def measure_point(method: str, cells: int, channels: int, size: int, batch: int, repeats: int):
    from mgas_bench.memory import PeakMemory

    spec = SupernetSpec(
        in_channels=3, num_classes=10, input_size=size, cells=cells, channels=channels
    )
    with PeakMemory(torch.device("cpu")) as peak:
        seconds = median_seconds(search_steps(method, spec, batch), repeats)
    return {"step_s": seconds, "peak_mb": peak.mb}


def plot(frame: pd.DataFrame, path: Path, batch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    fig, axes = plt.subplots(2, len(CELLS), figsize=(12, 7), sharex=True)
    for col, cells in enumerate(CELLS):
        for (method, channels), group in frame[frame.cells == cells].groupby(
            ["method", "channels"]
        ):
            group = group.sort_values("input_size")
            style = "-" if method == "darts" else "--"
            label = f"{METHODS[method]}, {channels} ch"
            for row, key in enumerate(("step_s", "peak_mb")):
                axes[row][col].plot(group.input_size, group[key], style, marker="o", label=label)
        axes[0][col].set_title(f"{cells} cells")
        axes[1][col].set_xlabel("input size (pixels per side)")
        for row in range(2):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_yscale("log")
            axes[row][col].set_xticks(SIZES, [str(s) for s in SIZES])
            axes[row][col].yaxis.set_minor_locator(ticker.LogLocator(subs=(2, 5)))
            for axis_format in ("major", "minor"):
                getattr(axes[row][col].yaxis, f"set_{axis_format}_formatter")(
                    ticker.FormatStrFormatter("%g")
                )
            axes[row][col].grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("search step (s)")
    axes[1][0].set_ylabel("peak memory (MB)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Search step on CPU, batch {batch}: DARTS (first order) and MG-DARTS")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", type=Path, default=Path("results/performance"))
    parser.add_argument("--point", help=argparse.SUPPRESS)
    parser.add_argument(
        "--replot", action="store_true", help="rewrite the table and plot from scaling.csv"
    )
    args = parser.parse_args(argv)
    if args.replot:
        frame = pd.read_csv(args.out_dir / "scaling.csv")
        write_outputs(frame, args.out_dir, args.batch, args.threads, args.repeats)
        return
    torch.set_num_threads(args.threads)
    if args.point:
        method, cells, channels, size = args.point.split(",")
        figures = measure_point(
            method, int(cells), int(channels), int(size), args.batch, args.repeats
        )
        print(json.dumps(figures))
        return
    rows = []
    for method, cells, channels, size in itertools.product(METHODS, CELLS, CHANNELS, SIZES):
        figures = in_fresh_process(
            "benchmarks.scaling",
            *("--point", f"{method},{cells},{channels},{size}"),
            *("--batch", str(args.batch), "--repeats", str(args.repeats)),
            *("--threads", str(args.threads)),
        )
        rows.append(
            {"method": method, "cells": cells, "channels": channels, "input_size": size, **figures}
        )
        print(rows[-1], flush=True)
    frame = pd.DataFrame(rows)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out_dir / "scaling.csv", index=False)
    write_outputs(frame, args.out_dir, args.batch, args.threads, args.repeats)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per size: both methods' step time and peak memory, and their ratios."""
    wide = frame.pivot_table(
        index=["cells", "channels", "input_size"], columns="method", values=["step_s", "peak_mb"]
    )
    out = pd.DataFrame(
        {
            "DARTS step (s)": wide[("step_s", "darts")],
            "MG-DARTS step (s)": wide[("step_s", "mg-darts-1-stage")],
            "MG/DARTS time": wide[("step_s", "mg-darts-1-stage")] / wide[("step_s", "darts")],
            "DARTS peak (MB)": wide[("peak_mb", "darts")],
            "MG-DARTS peak (MB)": wide[("peak_mb", "mg-darts-1-stage")],
            "MG/DARTS memory": wide[("peak_mb", "mg-darts-1-stage")] / wide[("peak_mb", "darts")],
        }
    )
    return out.reset_index()


def write_outputs(
    frame: pd.DataFrame, out_dir: Path, batch: int, threads: int, repeats: int
) -> None:
    plot(frame, out_dir / "scaling.png", batch)
    (out_dir / "scaling.md").write_text(
        f"Search step on CPU ({threads} thread(s), batch {batch}, median of {repeats}): DARTS "
        "(first order, two passes) and MG-DARTS (single stage, one pass); peak memory of "
        "building and stepping the supernet. Produced by `python -m benchmarks.scaling`.\n\n"
        + summary(frame).to_markdown(index=False, floatfmt=FORMATS)
        + "\n"
    )


if __name__ == "__main__":
    main()
