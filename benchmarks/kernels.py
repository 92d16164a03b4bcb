"""Where the DARTS search supernet's CPU kernels (``baselines/darts/search_kernels.py``) pay.

    python -m benchmarks.kernels [--threads 1] [--repeats 25] [--out FILE]

Times one forward and backward (gradients for input and weight) of each convolution the
supernet runs, at the channel counts and map sizes it searches at, two ways each: the module
as torch runs it, and the kernel ``search_kernels`` picks instead:

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
import torch.nn.functional as F

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


def _grouped(x: torch.Tensor, w: torch.Tensor, dilation: int) -> torch.Tensor:
    padding = dilation * (w.shape[-1] - 1) // 2
    return F.conv2d(x, w, padding=padding, dilation=dilation, groups=x.shape[1])


def _dense(x: torch.Tensor, w: torch.Tensor, dilation: int) -> torch.Tensor:
    channels = x.shape[1]
    eye = torch.eye(channels).view(channels, channels, 1, 1)
    padding = dilation * (w.shape[-1] - 1) // 2
    return F.conv2d(x, w * eye, padding=padding, dilation=dilation)


def _bmm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    weight = w.view(channels, channels).expand(batch, -1, -1)
    return torch.bmm(weight, x.view(batch, channels, height * width)).view(x.shape)


def rows(repeats: int) -> list[str]:
    lines = []
    for batch, channels, size in SHAPES:
        x = torch.randn(batch, channels, size, size, requires_grad=True)
        shape = f"{batch}x{channels}x{size}x{size}"
        for kernel, dilation in DEPTHWISE:
            w = torch.randn(channels, 1, kernel, kernel, requires_grad=True)
            module = _median_us(partial(_grouped, x, w, dilation), repeats)
            dense = _median_us(partial(_dense, x, w, dilation), repeats)
            lines.append(
                f"| {shape} | depthwise {kernel}x{kernel}, dilation {dilation} | {module:,.0f} "
                f"| dense: {dense:,.0f} | {module / dense:.2f}x |"
            )
        w = torch.randn(channels, channels, 1, 1, requires_grad=True)
        module = _median_us(partial(F.conv2d, x, w), repeats)
        bmm = _median_us(partial(_bmm, x, w), repeats)
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
