"""Where a search or evaluation step spends its time: torch.profiler's operator table.

    python -m benchmarks.profile_step ROW [--eval] [--top N] [--threads T]

ROW is one of ``benchmarks.steps.SEARCH_ROWS``. Profiles one step (after two warm-up
steps; for a multi-stage row, one step of each stage) and prints the operators by own
CPU time, with the number of operator calls per step: on a GPU, where small kernels
are bound by launches, the call count predicts the step time better than the FLOPs.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.steps import SEARCH_ROWS, eval_step, search_steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("row", choices=SEARCH_ROWS)
    parser.add_argument("--eval", action="store_true", help="the evaluation network's step")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = [eval_step(args.row)] if args.eval else search_steps(args.row)
    for _ in range(2):
        for step in steps:
            step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for step in steps:
            step()
    events = prof.key_averages()
    calls = sum(event.count for event in events if event.key.startswith("aten::"))
    total_us = sum(event.self_cpu_time_total for event in events)
    what = "evaluation" if args.eval else "search"
    print(f"{args.row}, {what} step(s): {len(steps)}; aten operator calls: {calls:,}; ")
    print(f"own CPU time: {total_us / 1000:.0f} ms\n")
    print("| operator | own CPU (ms) | share | calls |")
    print("| --- | ---: | ---: | ---: |")
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[: args.top]:
        share = event.self_cpu_time_total / total_us
        print(
            f"| {event.key} | {event.self_cpu_time_total / 1000:.1f} | {share:.0%} | "
            f"{event.count:,} |"
        )


if __name__ == "__main__":
    main()
