"""The ``mgas-bench`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from mgas_bench.components import (
    Architecture,
    DataIntegrityError,
    DataNotFoundError,
    UnknownComponentError,
)
from mgas_bench.config import (
    ConfigError,
    expand_suite,
    load_suite,
    parse_assignments,
    parse_suite,
    unavailable_methods,
)
from mgas_bench.records import ResultsWriteError, check_writable
from mgas_bench.registry import PluginError, Registry, build_registry

# Errors that are the user's to fix: shown as one clear line, no traceback.
USER_ERRORS = (
    ConfigError,
    PluginError,
    UnknownComponentError,
    DataNotFoundError,
    DataIntegrityError,
    ResultsWriteError,
    ValueError,
)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc


def _registry(ctx: click.Context) -> Registry:
    if "registry" not in ctx.meta:
        ctx.meta["registry"] = build_registry()
    return ctx.meta["registry"]


@click.group(cls=_Group)
@click.version_option(package_name="mgas-bench")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Benchmark differentiable NAS methods side by side: search, evaluate, compare."""
    # Plugins are loaded and checked before any command runs, so a broken plugin
    # stops the program here, naming itself.
    _registry(ctx)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_context
def plugins(ctx: click.Context, as_json: bool) -> None:
    """List every registered component: kind, name, providing package and version."""
    registry = _registry(ctx)
    rows = []
    for reg in registry.registrations():
        row = {
            "kind": reg.kind,
            "name": reg.name,
            "package": reg.provider.package,
            "version": reg.provider.version,
            "plugin": reg.provider.plugin,
        }
        if reg.kind == "method":
            reason = reg.component.unavailable_reason()
            row["status"] = "available" if reason is None else f"unavailable: {reason}"
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    import pandas as pd

    table = pd.DataFrame(rows).fillna("")
    click.echo(table.to_markdown(index=False, tablefmt="simple"))


@main.command()
@click.argument("suite", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--methods", help="Comma-separated method names (overrides the suite).")
@click.option("--datasets", help="Comma-separated data set names (overrides the suite).")
@click.option("--seeds", type=click.IntRange(min=1), help="Run seeds 0..N-1 (overrides the suite).")
@click.option("--budget", help="Budget preset: smoke, small, medium, paper (overrides the suite).")
@click.option(
    "--results",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("results"),
    show_default=True,
    help="Results folder: runs go to RESULTS/runs/<id>/, tables to RESULTS/.",
)
@click.option(
    "--data-root",
    type=click.Path(path_type=Path, file_okay=False),
    envvar="MGAS_BENCH_DATA",
    help="Where data sets live (default: ./data, or $MGAS_BENCH_DATA).",
)
@click.option("--download", is_flag=True, help="Allow downloading data sets that support it.")
@click.option("--device", help="cpu, cuda, cuda:N or auto (overrides the suite).")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    help="bf16: mixed precision (bf16 autocast) for search and evaluation training.",
)
@click.option(
    "--channels-last", is_flag=True, default=None, help="Networks and batches in NHWC layout."
)
@click.option(
    "--loader-workers",
    type=click.IntRange(min=0),
    help="Data loading worker processes per loader (0: load in the run's process).",
)
@click.option(
    "--pin-memory/--no-pin-memory",
    default=None,
    help="Page-locked batches for faster copies to a GPU (default: on with CUDA).",
)
@click.option(
    "--option",
    "-o",
    "options",
    multiple=True,
    metavar="METHOD.KEY=VALUE",
    help="Set a method option, e.g. -o darts.arch_lr=1e-3 (repeatable).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    envvar="MGAS_BENCH_THREADS",
    help="Torch threads per run (default: torch's choice; 1 helps on a busy machine).",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Runs at a time, each in its own worker process (threads per run default to "
    "cores / jobs).",
)
@click.option(
    "--in-process",
    is_flag=True,
    help="Run in this process instead of one worker process per run (for debugging).",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: one worker process per run, one after another; ray: one Ray task per run.",
)
@click.option(
    "--address",
    help="With --executor ray: a running Ray cluster's address (default: start a local Ray).",
)
@click.option(
    "--no-resume",
    is_flag=True,
    help="Start unfinished runs afresh, discarding their checkpoints (say, after a code change).",
)
@click.pass_context
def run(
    ctx: click.Context,
    suite: Path | None,
    methods: str | None,
    datasets: str | None,
    seeds: int | None,
    budget: str | None,
    results: Path,
    data_root: Path | None,
    download: bool,
    device: str | None,
    precision: str | None,
    channels_last: bool | None,
    loader_workers: int | None,
    pin_memory: bool | None,
    options: tuple[str, ...],
    threads: int | None,
    jobs: int,
    in_process: bool,
    executor: str,
    address: str | None,
    no_resume: bool,
) -> None:
    """Run a suite (default: the embedded digits suite), then print the leaderboard.

    Completed runs are skipped and unfinished ones go on from their last checkpoint,
    so running the same command again resumes an interrupted suite.
    """
    from mgas_bench.leaderboard import write_leaderboard
    from mgas_bench.ray_executor import ray_unavailable_reason, run_suite_on_ray
    from mgas_bench.runner import run_suite

    registry = _registry(ctx)
    spec = load_suite(suite).model_dump()
    if methods:
        # Methods named on the command line are wanted: an unavailable one is an error.
        spec["methods"] = _split(methods)
        spec["skip_unavailable"] = False
    if datasets:
        spec["datasets"] = _split(datasets)
    if seeds:
        spec["seeds"] = seeds
    if budget:
        spec["budget"] = budget
    if device:
        spec["device"] = device
    runtime = {
        "precision": precision,
        "channels_last": channels_last,
        "loader_workers": loader_workers,
        "pin_memory": pin_memory,
    }
    spec["runtime"].update({key: value for key, value in runtime.items() if value is not None})
    if data_root:
        spec["data"]["root"] = str(data_root)
    if download:
        spec["data"]["download"] = True
    for key, value in parse_assignments(options).items():
        method, dot, option = key.partition(".")
        if not dot:
            raise ConfigError(f"--option {key}=...: expected METHOD.KEY=VALUE")
        spec["options"].setdefault(method, {})[option] = value
    overridden = parse_suite(spec, source="suite (after command-line overrides)")
    if overridden.skip_unavailable:
        for name, reason in unavailable_methods(overridden, registry).items():
            click.echo(f"skipping {name}: {reason}", err=True)
    configs = expand_suite(overridden, registry)
    if not configs:
        raise ConfigError("the suite expands to no runs (no available methods?)")
    if jobs > 1 and in_process:
        raise ConfigError("--jobs runs several worker processes; it cannot run --in-process")
    if jobs > 1 and executor != "local":
        raise ConfigError("--jobs is for the local executor; Ray runs as many runs as fit")
    if address and executor != "ray":
        raise ConfigError("--address needs --executor ray")
    if executor == "ray" and (reason := ray_unavailable_reason()):
        raise ConfigError(f"--executor ray: {reason}")
    check_writable(results)
    click.echo(f"{len(configs)} run(s); results in {results}/")
    try:
        if executor == "ray":
            report = run_suite_on_ray(
                configs, results, address=address, threads=threads, resume=not no_resume
            )
        else:
            report = run_suite(
                configs,
                results,
                registry,
                isolate=not in_process,
                threads=threads,
                resume=not no_resume,
                jobs=jobs,
            )
    except KeyboardInterrupt:
        click.echo(
            "\ninterrupted: completed runs are kept; run the same command again to resume.",
            err=True,
        )
        sys.exit(130)
    files = write_leaderboard(results)
    click.echo("")
    click.echo(files.markdown.read_text())
    click.echo(f"wrote {files.markdown}, {files.csv}" + (f", {files.plot}" if files.plot else ""))
    elsewhere = f", {len(report.elsewhere)} running elsewhere" if report.elsewhere else ""
    click.echo(
        f"{len(report.completed)} completed, {len(report.skipped)} already done, "
        f"{len(report.failed)} failed{elsewhere}"
    )
    if report.failed:
        sys.exit(1)


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@main.command()
@click.option(
    "--results",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("results"),
    show_default=True,
)
@click.option(
    "--against",
    metavar="VARIANT",
    help="Also write ablation.md: every variant against this one, with differences.",
)
def leaderboard(results: Path, against: str | None) -> None:
    """Rebuild the leaderboard tables and plot from the runs stored under RESULTS."""
    from mgas_bench.leaderboard import write_leaderboard

    files = write_leaderboard(results, against=against)
    for folder, why in files.stored.unreadable:
        click.echo(f"skipped unreadable record in {folder}: {why}", err=True)
    click.echo(files.markdown.read_text())
    if files.ablation:
        click.echo(files.ablation.read_text())
    written = [files.markdown, files.csv, files.plot, files.ablation]
    click.echo("wrote " + ", ".join(str(path) for path in written if path))


@main.group()
def arch() -> None:
    """Inspect saved architectures."""


@arch.command("info")
@click.argument("arch_file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option(
    "--dataset", default="cifar10", show_default=True, help="Sets input size and classes."
)
@click.option("--channels", type=click.IntRange(min=1), default=36, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--format", "format_name", help="Architecture format (default: detected).")
@click.option(
    "--masks",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="Weight masks saved with torch.save, for formats that take them.",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_context
def arch_info(
    ctx: click.Context,
    arch_file: Path,
    dataset: str,
    channels: int,
    layers: int,
    format_name: str | None,
    masks: Path | None,
    as_json: bool,
) -> None:
    """Parameters (M, auxiliary head excluded) and MACs (M, one image) of ARCH_FILE's network."""
    from mgas_bench.evaluation import measure_network, network_spec

    registry = _registry(ctx)
    try:
        payload = json.loads(arch_file.read_text())
    except ValueError as exc:
        raise ConfigError(f"{arch_file} is not JSON: {exc}") from None
    fmt = _detect_format(registry, payload, format_name, arch_file)
    fmt.validate(payload)
    info = registry.get("dataset", dataset).info({})
    tensors = _load_tensors(masks) if masks else None
    model = fmt.build_network(
        Architecture(fmt.name, payload, tensors),
        network_spec(info, channels, layers, auxiliary=False),
    )
    figures = {"format": fmt.name, **measure_network(model, info)}
    if as_json:
        click.echo(json.dumps(figures))
        return
    depth = f"{layers} layers" if getattr(fmt, "uses_layers", True) else "depth from the file"
    # An architecture that records the width it was searched at is built at that width.
    width = (
        f"{payload['init_channels']} channels (from the file)"
        if "init_channels" in payload
        else f"{channels} channels"
    )
    click.echo(f"{arch_file} ({fmt.name}) on {dataset}, {width}, {depth}:")
    click.echo(f"  parameters: {figures['params_m']:.3f} M (auxiliary head excluded)")
    if figures["params_nonzero_m"] != figures["params_m"]:
        click.echo(f"  surviving:  {figures['params_nonzero_m']:.3f} M (weights not masked out)")
    click.echo(f"  MACs:       {figures['macs_m']:.1f} M per image")


def _load_tensors(path: Path) -> Any:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read it with torch.load: {exc}") from None


def _detect_format(registry: Registry, payload: Any, name: str | None, path: Path):
    if name:
        return registry.get("architecture_format", name)
    formats = [
        registry.get("architecture_format", n) for n in registry.names("architecture_format")
    ]
    matching = [fmt for fmt in formats if isinstance(payload, dict) and fmt.matches(payload)]
    if not matching:
        known = ", ".join(fmt.name for fmt in formats)
        raise ConfigError(
            f"{path}: no registered architecture format recognises it (known: {known})"
        )
    return matching[0]
