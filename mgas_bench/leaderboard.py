"""Leaderboard tables and the accuracy-versus-parameters plot, rebuilt from stored runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mgas_bench.records import STATUS_OK, iter_records

GROUP = ["dataset", "method", "variant"]
# (record metric, column heading, scale for display)
COLUMNS = [
    ("test_accuracy", "test acc (%)", 100.0),
    ("params_m", "params (M)", 1.0),
    ("params_nonzero_m", "surviving params (M)", 1.0),
    ("macs_m", "MACs (M)", 1.0),
    ("search_seconds", "search (s)", 1.0),
    ("search_peak_mem_mb", "search mem (MB)", 1.0),
]
# Metrics that older records may lack, and the metric that stands in for them.
FALLBACK = {"params_nonzero_m": "params_m"}
NOTE = (
    "Mean ± standard deviation over seeds (n = number of seeds). Parameters exclude the "
    "auxiliary head (DARTS's convention); surviving parameters leave out weights that a "
    "weight mask removes. MACs are for one image. Search time is the wall "
    "clock of one search run (not the sum of repeated searches); search memory is the peak "
    "the search added on top of what the process already held (resident memory on CPU, "
    "allocated memory on CUDA)."
)


@dataclass
class StoredRuns:
    runs: pd.DataFrame
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    not_ok: int = 0


def load_runs(results: Path) -> StoredRuns:
    rows, unreadable, not_ok = [], [], 0
    for folder, record in iter_records(results):
        if isinstance(record, Exception):
            unreadable.append((folder, str(record)))
            continue
        if record.get("status") != STATUS_OK:
            not_ok += 1
            continue
        try:
            row = {key: record[key] for key in ("run_id", "method", "dataset", "seed")}
            row["variant"] = record.get("variant", "default")
            metrics = record["metrics"]
            row.update(
                {
                    metric: float(metrics.get(metric, metrics.get(FALLBACK.get(metric, metric))))
                    for metric, _, _ in COLUMNS
                }
            )
        except (KeyError, TypeError, ValueError) as exc:
            unreadable.append((folder, f"missing or bad field {exc}"))
            continue
        rows.append(row)
    columns = ["run_id", "method", "dataset", "seed", "variant"] + [m for m, _, _ in COLUMNS]
    return StoredRuns(pd.DataFrame(rows, columns=columns), unreadable, not_ok)


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (data set, method, variant): mean and std over seeds of each metric."""
    metrics = [m for m, _, _ in COLUMNS]
    grouped = runs.groupby(GROUP, sort=True)
    table = grouped[metrics].agg(["mean", "std"])
    table.columns = [f"{metric}_{stat}" for metric, stat in table.columns]
    table.insert(0, "n", grouped.size())
    table = table.reset_index()
    return table.sort_values(["dataset", "test_accuracy_mean"], ascending=[True, False])


def _mean_std(mean: float, std: float, digits: int) -> str:
    # One seed has no spread: show the mean alone rather than "± nan".
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if pd.notna(std) else f"{mean:.{digits}f}"


def to_markdown(table: pd.DataFrame) -> str:
    shown = table[[*GROUP, "n"]].copy()
    for metric, heading, scale in COLUMNS:
        mean, std = table[f"{metric}_mean"] * scale, table[f"{metric}_std"] * scale
        digits = 3 if metric.startswith("params") else 2
        shown[heading] = [_mean_std(m, s, digits) for m, s in zip(mean, std, strict=True)]
    return shown.to_markdown(index=False)


def ablation_table(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each variant against ``reference`` of the same method and data set: the ablation view.

    Accuracy changes are in percentage points; size, time and memory changes in percent
    of the reference. Methods without a ``reference`` variant are left out.
    """
    rows = []
    for _, group in table.groupby(["dataset", "method"], sort=True):
        base = group[group["variant"] == reference]
        if base.empty:
            continue
        base = base.iloc[0]
        for _, row in group.iterrows():
            shown = {key: row[key] for key in [*GROUP, "n"]}
            acc, acc_std = 100 * row["test_accuracy_mean"], 100 * row["test_accuracy_std"]
            shown["test acc (%)"] = _mean_std(acc, acc_std, 2)
            shown["Δ acc (pts)"] = f"{acc - 100 * base['test_accuracy_mean']:+.2f}"
            for metric, heading, short in [
                ("params_m", "params (M)", "params"),
                ("params_nonzero_m", "surviving (M)", "surviving"),
                ("search_seconds", "search (s)", "time"),
                ("search_peak_mem_mb", "search mem (MB)", "mem"),
            ]:
                value, ref = row[f"{metric}_mean"], base[f"{metric}_mean"]
                digits = 3 if metric.startswith("params") else 1
                shown[heading] = f"{value:.{digits}f}"
                shown[f"Δ {short} (%)"] = f"{100 * (value / ref - 1):+.0f}" if ref else "n/a"
            rows.append(shown)
    return pd.DataFrame(rows)


def pareto_front(table: pd.DataFrame) -> pd.DataFrame:
    """Rows no other row beats on both accuracy (higher) and parameters (fewer)."""
    ordered = table.sort_values(["params_m_mean", "test_accuracy_mean"], ascending=[True, False])
    best, keep = float("-inf"), []
    for index, acc in ordered["test_accuracy_mean"].items():
        if acc > best:
            keep.append(index)
            best = acc
    return ordered.loc[keep]


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = table[table["dataset"] == dataset]
        for _, row in rows.iterrows():
            label = (
                row["method"]
                if row["variant"] == "default"
                else f"{row['method']} ({row['variant']})"
            )
            ax.errorbar(
                row["params_m_mean"],
                100 * row["test_accuracy_mean"],
                xerr=_zero_if_nan(row["params_m_std"]),
                yerr=_zero_if_nan(100 * row["test_accuracy_std"]),
                fmt="o",
                capsize=3,
                label=f"{label} (n={row['n']})",
            )
        front = pareto_front(rows)
        # Rings mark the front even when it is a single point, where a line shows nothing.
        ax.plot(
            front["params_m_mean"],
            100 * front["test_accuracy_mean"],
            drawstyle="steps-post",
            color="grey",
            linestyle="--",
            marker="o",
            markersize=14,
            fillstyle="none",
            label="Pareto front",
        )
        ax.set_title(f"{dataset}: accuracy vs parameters")
        ax.set_xlabel("parameters (M, auxiliary head excluded)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _zero_if_nan(value: float) -> float:
    return 0.0 if pd.isna(value) else float(value)


@dataclass
class LeaderboardFiles:
    markdown: Path
    csv: Path
    plot: Path | None
    table: pd.DataFrame
    stored: StoredRuns
    ablation: Path | None = None


def write_leaderboard(
    results: Path, out_dir: Path | None = None, against: str | None = None
) -> LeaderboardFiles:
    """Write the tables and plot; with ``against``, also ``ablation.md`` (see ablation_table)."""
    out_dir = out_dir or results
    stored = load_runs(results)
    table = summarise(stored.runs)
    markdown, csv, png = (
        out_dir / "leaderboard.md",
        out_dir / "leaderboard.csv",
        out_dir / "pareto.png",
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    body = to_markdown(table) if len(table) else "(no completed runs)"
    markdown.write_text(f"# Leaderboard\n\n{body}\n\n{NOTE}\n")
    table.to_csv(csv, index=False)
    if len(table):
        plot(table, png)
    ablation = None
    if against is not None:
        ablation = out_dir / "ablation.md"
        deltas = ablation_table(table, against) if len(table) else pd.DataFrame()
        body = (
            # Keep the signs and decimals as formatted: tabulate would re-parse numbers.
            deltas.to_markdown(index=False, disable_numparse=True)
            if len(deltas)
            else f"(no method has a variant named {against!r})"
        )
        ablation.write_text(
            f"# Ablations against the {against!r} variant\n\n{body}\n\n"
            f"Δ: change against {against!r} of the same method (accuracy in percentage "
            f"points, the rest in percent). {NOTE}\n"
        )
    return LeaderboardFiles(markdown, csv, png if len(table) else None, table, stored, ablation)
