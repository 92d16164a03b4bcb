"""Where the suite's DARTS and NNI's DARTS differ in cost, one search step at a time.

    python -m benchmarks.nni_darts_breakdown [--steps N] [--batch B] [--threads T]

Builds, on the cross-check's supernet (digits 8x8, 3 cells, 4 channels, batch 96):

- the suite's DARTS supernet as DARTS's ``model_search.py`` has it;
- the same supernet with NNI's batch norms (affine everywhere, none after pools);
- NNI 3.0's DARTS supernet (``nni.nas.hub.pytorch.DARTS`` mutated by NNI's DARTS strategy);

and times, for each, one forward and backward, and one first-order search step done two
ways: with gradients for the architecture parameters only (the suite's DARTS), and with
a full backward in the architecture step (NNI's DARTS, which also computes every weight
gradient there and then discards it). Each row runs in a fresh process that imports the
same modules, so its peak memory (resident-set growth over the steps) is its own.
Needs the ``nni`` extra. Prints a Markdown table; the figures are medians over steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.steps import in_fresh_process, nni_darts_supernet

ROWS = ("suite", "suite-nni-bn", "nni")
ROW_TITLES = {
    "suite": "suite DARTS supernet (DARTS's batch norms)",
    "suite-nni-bn": "suite DARTS supernet, NNI's batch norms",
    "nni": "NNI 3.0 DARTS supernet",
}


def _build(row: str, spec) -> tuple[nn.Module, list[nn.Parameter], list[nn.Parameter]]:
    if row == "nni":
        return nni_darts_supernet(spec)
    from baselines.darts.search_space import DartsSupernet

    nni_bn = row == "suite-nni-bn"
    net = DartsSupernet(spec, affine=nni_bn, pool_bn=not nni_bn)
    return net, net.arch_parameters(), net.weight_parameters()


def _median_ms(fn: Callable[[], None], steps: int) -> float:
    fn()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(row: str, steps: int, batch: int, threads: int) -> dict[str, float]:
    # Imported alike in every row, so no row's baseline holds more than another's.
    import nni.nas.strategy  # noqa: F401

    from mgas_bench.components import SupernetSpec
    from mgas_bench.memory import PeakMemory

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    spec = SupernetSpec(in_channels=1, num_classes=10, input_size=8, cells=3, channels=4)
    x, y = torch.randn(batch, 1, 8, 8), torch.randint(0, 10, (batch,))
    xv, yv = torch.randn(batch, 1, 8, 8), torch.randint(0, 10, (batch,))

    with PeakMemory(torch.device("cpu")) as peak:
        net, alphas, weights = _build(row, spec)
        arch_opt = torch.optim.Adam(alphas, 3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
        w_opt = torch.optim.SGD(weights, 0.025, momentum=0.9, weight_decay=3e-4)

        def search_step(full_arch_backward: bool) -> None:
            arch_opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(xv), yv)
            if full_arch_backward:
                loss.backward()
            else:
                grads = torch.autograd.grad(loss, alphas, allow_unused=True)
                for alpha, grad in zip(alphas, grads, strict=True):
                    alpha.grad = grad
            arch_opt.step()
            w_opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            nn.utils.clip_grad_norm_(weights, 5.0)
            w_opt.step()

        def forward_backward() -> None:
            net.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()

        arch_grads_only = _median_ms(lambda: search_step(False), steps)
        full_backward = _median_ms(lambda: search_step(True), steps)
        fwd_bwd = _median_ms(forward_backward, steps)
    return {
        "weights": float(sum(p.numel() for p in weights)),
        "fwd_bwd_ms": fwd_bwd,
        "step_arch_grads_only_ms": arch_grads_only,
        "step_full_arch_backward_ms": full_backward,
        "peak_mem_mb": peak.mb,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(measure(args.row, args.steps, args.batch, args.threads)))
        return
    results = {}
    for row in ROWS:
        results[row] = in_fresh_process(
            "benchmarks.nni_darts_breakdown",
            *("--row", row, "--steps", str(args.steps), "--batch", str(args.batch)),
            *("--threads", str(args.threads)),
        )
    base = results["suite"]["step_arch_grads_only_ms"]
    print(
        f"batch {args.batch}, {args.threads} thread(s), median of {args.steps} steps; "
        "ratio: to the suite DARTS step\n"
    )
    print(
        "| supernet | weights | fwd+bwd (ms) | step, arch grads only (ms) | "
        "step, full arch backward (ms) | peak mem (MB) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for row in ROWS:
        r = results[row]
        print(
            f"| {ROW_TITLES[row]} | {r['weights']:,.0f} | {r['fwd_bwd_ms']:.0f} | "
            f"{r['step_arch_grads_only_ms']:.0f} ({r['step_arch_grads_only_ms'] / base:.2f}x) | "
            f"{r['step_full_arch_backward_ms']:.0f} "
            f"({r['step_full_arch_backward_ms'] / base:.2f}x) | {r['peak_mem_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
