"""One table of every method's speed and memory, with ratios to the suite's DARTS.

    python -m benchmarks.perf_table [--repeats N] [--threads T] [--skip-search] [--out FILE]

Measures, side by side in one run on the digits default suite's size (3 cells, 4
channels, 8x8 input, batch 96):

- one search step (forward, backward and every optimiser update; a DARTS step is an
  architecture step on one batch and a weight step on another) and its peak memory,
  each row in a fresh process so that its memory is its own;
- one training step of the evaluation network (DARTS V2 for the DARTS-family rows, the
  network MG-DARTS found in the default suite for the MG-DARTS rows);
- the whole search of each method on the digits default suite (``mgas-bench run``,
  budget small, seed 0, evaluation skipped): its time and its peak memory.

Needs the ``nni`` extra for the NNI row. Prints a Markdown table (and writes it to
``--out``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.steps import (
    ROW_TITLES,
    SEARCH_ROWS,
    eval_step,
    in_fresh_process,
    median_seconds,
    search_steps,
)

# The suite's method and variant behind each row's end-to-end search.
SUITE_ROWS = {
    "darts": ("darts", "default"),
    "darts-2nd": ("darts-2nd", "default"),
    "mg-darts-1-stage": ("mg-darts", "1-stage"),
    "mg-darts-3-stages": ("mg-darts", "default"),
    "nni-darts": ("nni-darts", "default"),
}
VARIANT_OPTIONS = {"1-stage": "options = { stages = 1 }"}


def search_suite(rows: list[str]) -> str:
    """A suite file for the searches behind ``rows``: budget small, seed 0, no evaluation."""
    variants: dict[str, list[str]] = {}
    for row in rows:
        method, variant = SUITE_ROWS[row]
        variants.setdefault(variant, []).append(method)
    methods = sorted({method for names in variants.values() for method in names})
    lines = [f"methods = {json.dumps(methods)}", "seeds = [0]", 'budget = "small"']
    lines += ["[eval]", "epochs = 0"]
    for name, names in variants.items():
        lines += ["[[variants]]", f'name = "{name}"', f"methods = {json.dumps(names)}"]
        lines += [VARIANT_OPTIONS[name]] if name in VARIANT_OPTIONS else []
    return "\n".join(lines) + "\n"


def measure_row(row: str, repeats: int, threads: int) -> dict[str, float]:
    """Runs in a fresh process: the row's step times and its search step's peak memory."""
    # NNI (and Lightning) imported alike in every row, so no row's baseline holds less.
    import nni.nas.strategy  # noqa: F401

    from mgas_bench.memory import PeakMemory

    torch.set_num_threads(threads)
    with PeakMemory(torch.device("cpu")) as peak:
        steps = search_steps(row)
        search = median_seconds(steps, repeats)
    return {
        "search_step_ms": 1000 * search,
        "search_step_mem_mb": peak.mb,
        "eval_step_ms": 1000 * median_seconds([eval_step(row)], repeats),
    }


def measure_searches(threads: int) -> dict[str, dict[str, float]]:
    """Every method's search on the digits default suite, one after another."""
    with tempfile.TemporaryDirectory() as folder:
        suite = Path(folder) / "suite.toml"
        suite.write_text(search_suite(list(SUITE_ROWS)))
        results = Path(folder) / "results"
        command = [sys.executable, "-m", "mgas_bench", "run", str(suite), "--results", str(results)]
        subprocess.run([*command, "--threads", str(threads)], check=True, capture_output=True)
        found = {}
        for record_file in (results / "runs").glob("*/record.json"):
            record = json.loads(record_file.read_text())
            found[(record["method"], record["variant"])] = record["metrics"]
    return {
        row: {
            "search_s": found[key]["search_seconds"],
            "search_mem_mb": found[key]["search_peak_mem_mb"],
        }
        for row, key in SUITE_ROWS.items()
    }


def table(rows: dict[str, dict[str, float]], repeats: int, threads: int) -> str:
    base = rows["darts"]
    columns = [
        ("search_step_ms", "search step (ms)", "{:.0f}"),
        ("search_step_mem_mb", "search step peak (MB)", "{:.0f}"),
        ("eval_step_ms", "eval step (ms)", "{:.0f}"),
        ("search_s", "digits search (s)", "{:.1f}"),
        ("search_mem_mb", "digits search peak (MB)", "{:.0f}"),
    ]
    present = [c for c in columns if c[0] in base]
    lines = [
        f"{threads} thread(s), torch {torch.__version__}; step figures: "
        f"median of {repeats}; ratios (x) to the suite's first-order DARTS in the same run.",
        "",
        "| method | " + " | ".join(title for _, title, _ in present) + " |",
        "| --- |" + " ---: |" * len(present),
    ]
    for row, figures in rows.items():
        cells = [
            f"{fmt.format(figures[key])} ({figures[key] / base[key]:.2f}x)"
            for key, _, fmt in present
        ]
        lines.append(f"| {ROW_TITLES[row]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-search", action="store_true", help="step figures only")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--row", choices=SEARCH_ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(measure_row(args.row, args.repeats, args.threads)))
        return
    rows = {}
    for row in SEARCH_ROWS:
        rows[row] = in_fresh_process(
            "benchmarks.perf_table",
            *("--row", row, "--repeats", str(args.repeats), "--threads", str(args.threads)),
        )
    if not args.skip_search:
        for row, figures in measure_searches(args.threads).items():
            rows[row].update(figures)
    text = table(rows, args.repeats, args.threads)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
