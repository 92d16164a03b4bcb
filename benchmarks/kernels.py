"""Where the DARTS search supernet's CPU kernels (``baselines/darts/search_kernels.py``) pay.

    python -m benchmarks.kernels [--threads 1] [--repeats 25] [--out FILE]

Times one forward and backward (gradients for input and weight) of each convolution the
supernet runs, at the channel counts and map sizes it searches at, two ways each: the module
as torch runs it, and ``search_kernels``'s alternative, whatever the size:

- a depthwise convolution (3x3 and 5x5, dilation 1 and 2) against the same convolution as a
  dense one with a block-diagonal weight;
- a 1x1 convolution against a batched matrix product (``torch.bmm``).

Prints a Markdown table of median microseconds and the speed-up (module time / alternative
time); above 1.00x the alternative is faster. The thresholds in ``search_kernels`` come from
this table.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from torch import nn

from baselines.darts.search_kernels import bmm_pointwise_conv, dense_depthwise_conv
from benchmarks.steps import median_seconds

# (batch, channels, map size): the digits supernet's cells (batch 96, 4 channels at 8x8,
# doubling at each reduction) and larger ones like the scaling benchmark's (batch 16).
SHAPES = [(96, 4, 8), (96, 8, 4), (96, 16, 2), (16, 16, 8), (16, 32, 16), (16, 64, 8)]
DEPTHWISE = [(3, 1), (5, 1), (3, 2), (5, 2)]


def _median_us(fn: Callable[[], torch.Tensor], repeats: int) -> float:
    def step() -> None:
        out = fn()
        out.backward(torch.ones_like(out))

    return 1e6 * median_seconds([step], repeats)


def rows(repeats: int) -> list[str]:
    lines = []
    for batch, channels, size in SHAPES:
        x = torch.randn(batch, channels, size, size, requires_grad=True)
        shape = f"{batch}x{channels}x{size}x{size}"
        for kernel, dilation in DEPTHWISE:
            padding = dilation * (kernel - 1) // 2
            conv = nn.Conv2d(
                channels, channels, kernel, 1, padding, dilation, groups=channels, bias=False
            )
            module = _median_us(partial(conv, x), repeats)
            dense = _median_us(partial(dense_depthwise_conv, conv, x), repeats)
            lines.append(
                f"| {shape} | depthwise {kernel}x{kernel}, dilation {dilation} | {module:,.0f} "
                f"| dense: {dense:,.0f} | {module / dense:.2f}x |"
            )
        conv = nn.Conv2d(channels, channels, 1, bias=False)
        module = _median_us(partial(conv, x), repeats)
        bmm = _median_us(partial(bmm_pointwise_conv, conv, x), repeats)
        lines.append(f"| {shape} | 1x1 | {module:,.0f} | bmm: {bmm:,.0f} | {module / bmm:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    header = [
        "# Convolution kernels on CPU: the module against the search supernet's alternative",
        "",
        f"`python -m benchmarks.kernels`: torch {torch.__version__}, {args.threads} thread(s), "
        f"median of {args.repeats} forward+backward passes (input and weight gradients), "
        "microseconds.",
        "",
        "| input (NCHW) | convolution | module (µs) | alternative (µs) | speed-up |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    text = "\n".join(header + rows(args.repeats)) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
