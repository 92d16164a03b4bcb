"""Images per second, peak memory and kernel launches of search and evaluation steps, CIFAR-sized.

    python -m benchmarks.gpu_throughput [--device cuda] [--steps 10] [--mg-arch DIR]
        [--rows ROW,...] [--tiny] [--out FILE]

On synthetic CIFAR-shaped data (3x32x32, 10 classes), in fp32 and under bf16 autocast,
each row times the methods' own step code from :mod:`benchmarks.steps`:

- search steps (rows of ``steps.SEARCH_ROWS``) on the DARTS paper's search supernet
  (8 cells, 16 channels, batch 64). A DARTS step reads two batches and both count; an
  MG-DARTS step reads one. A 3-stage MG-DARTS row is the mean over its stages' steps;
- evaluation steps (row ``eval-darts-v2``): DARTS V2 at DARTS's evaluation size (20
  cells, 36 channels, batch 96, auxiliary head), and with ``--mg-arch`` pointing at the
  folder with the released ``mg_darts_small_genotype.json`` and ``mg_darts_small_masks.pt``
  (row ``eval-mg-darts-small``), MG-DARTS's small architecture (8 cells, 24 channels).

Peak memory is torch's allocator peak during the timed steps (CUDA only). Launches
count the CUDA kernels of one fp32 step (on a CPU: the aten operator calls), which is
what sets the pace of small search convolutions on a GPU. ``--tiny`` shrinks
everything to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.steps import SEARCH_ROWS, Step, eval_step, search_steps
from mgas_bench.components import NetworkSpec, SupernetSpec

EVAL_ROWS = ("eval-darts-v2", "eval-mg-darts-small")
# NNI needs its package, which a GPU machine may lack: ask for it by name.
DEFAULT_ROWS = (*(r for r in SEARCH_ROWS if r != "nni-darts"), *EVAL_ROWS)


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    steps: list[Step], images: int, device: torch.device, repeats: int, amp: bool
) -> tuple[float, float]:
    """(images per second, peak MB) of ``repeats`` rounds of ``steps`` after two warm-up rounds."""
    cuda = device.type == "cuda"
    with _autocast(device, amp):
        for _ in range(2):
            for step in steps:
                step()
        _sync(device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(repeats):
            for step in steps:
                step()
        _sync(device)
    seconds = (time.perf_counter() - start) / (repeats * len(steps))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")
    return images / seconds, peak


def launches(steps: list[Step], device: torch.device) -> float:
    """Mean CUDA kernels (CPU: aten operator calls) per step over one round of ``steps``."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activity = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU
    with profile(activities=[activity]) as prof:
        for step in steps:
            step()
        _sync(device)
    if cuda:
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    else:
        kernels = [e for e in prof.events() if e.name.startswith("aten::")]
    return len(kernels) / len(steps)


def _eval_builder(
    row: str, mg_arch: Path | None, tiny: bool, device: torch.device
) -> tuple[Callable[[], list[Step]], int] | None:
    layers, channels, size = (3, 8, 8) if tiny else (20, 36, 96)
    make: Callable[[], nn.Module]
    if row == "eval-darts-v2":
        from baselines.darts.eval_network import NetworkCIFAR
        from baselines.darts.genotype import DARTS_V2

        spec = NetworkSpec(3, 10, 32, channels, layers, auxiliary=True)

        def make() -> nn.Module:
            return NetworkCIFAR(channels, 10, layers, True, DARTS_V2, in_channels=3)
    elif row == "eval-mg-darts-small":
        if mg_arch is None:
            return None
        from plugins.mgdarts.arch_format import MGDartsGenotypeFormat, import_official

        arch = import_official(
            mg_arch / "mg_darts_small_genotype.json", mg_arch / "mg_darts_small_masks.pt"
        )
        spec = NetworkSpec(3, 10, 32, 24, layers=8, auxiliary=True)

        def make() -> nn.Module:
            return MGDartsGenotypeFormat().build_network(arch, spec)
    else:
        raise ValueError(f"unknown row {row!r}")

    def build() -> list[Step]:
        net = make()
        net.drop_path_prob = 0.2
        return [eval_step(row, size, device, net, spec)]

    return build, size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--mg-arch", type=Path, help="folder with the released MG-DARTS files")
    parser.add_argument(
        "--rows",
        default=",".join(DEFAULT_ROWS),
        help=f"comma-separated, of: {', '.join((*SEARCH_ROWS, *EVAL_ROWS))}",
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, to check on a CPU")
    parser.add_argument("--out", type=Path, help="also write the table here, row by row")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(rows) - {*SEARCH_ROWS, *EVAL_ROWS})
    if unknown:
        parser.error(f"unknown rows {unknown}; known: {', '.join((*SEARCH_ROWS, *EVAL_ROWS))}")
    size, cells, channels, search_batch = (8, 3, 4, 8) if args.tiny else (32, 8, 16, 64)
    spec = SupernetSpec(3, 10, size, cells, channels)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        f"{name}, torch {torch.__version__}, {args.steps} timed steps after 2 warm-up steps",
        "",
        "| row | precision | images/s | peak memory (MB) | launches per step |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    print("\n".join(lines), flush=True)
    for row in rows:
        if row in SEARCH_ROWS:
            images = search_batch * (2 if row.startswith(("darts", "nni")) else 1)

            def build(row: str = row) -> list[Step]:
                return search_steps(row, spec, search_batch, device)
        else:
            built = _eval_builder(row, args.mg_arch, args.tiny, device)
            if built is None:
                print(f"(skipped {row}: needs --mg-arch)", flush=True)
                continue
            build, images = built
        for amp in (False, True):
            torch.manual_seed(0)
            steps = build()
            rate, peak = measure(steps, images, device, args.steps, amp)
            count = f"{launches(steps, device):,.0f}" if not amp else ""
            del steps
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            precision = "bf16 autocast" if amp else "fp32"
            line = f"| {row} | {precision} | {rate:,.1f} | {peak:,.0f} | {count} |"
            lines.append(line)
            print(line, flush=True)
            if args.out:
                args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
