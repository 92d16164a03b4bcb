"""Images per second and peak memory of one search and one evaluation step, CIFAR-sized.

    python benchmarks/gpu_throughput.py [--device cuda] [--steps 10] [--mg-arch DIR] [--tiny]

On synthetic CIFAR-shaped data (3x32x32, 10 classes), in fp32 and under bf16 autocast:

- search steps: the suite's DARTS (first order: an architecture step on one batch, then a
  weight step on another) and MG-DARTS (one-level: one backward through weights, alphas,
  betas and thresholds) on the DARTS paper's search supernet (8 cells, 16 channels,
  batch 64);
- evaluation steps: DARTS V2 at DARTS's evaluation size (20 cells, 36 channels, batch 96,
  auxiliary head) and, with ``--mg-arch`` pointing at the folder with the released
  ``mg_darts_small_genotype.json`` and ``mg_darts_small_masks.pt``, MG-DARTS's small
  architecture (8 cells, 24 channels, batch 96).

Images per second count the images that a step trains on (a DARTS search step reads two
batches: it counts both). Peak memory is torch's allocator peak during the timed steps
(CUDA only). ``--tiny`` shrinks everything to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from baselines.darts.eval_network import NetworkCIFAR
from baselines.darts.genotype import DARTS_V2
from baselines.darts.method import Architect
from baselines.darts.search_space import DartsSupernet
from mgas_bench.components import NetworkSpec, SupernetSpec
from plugins.mgdarts.arch_format import MGDartsGenotypeFormat, import_official
from plugins.mgdarts.supernet import MGSupernet


def _batch(n: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 3, size, size, device=device), torch.randint(0, 10, (n,), device=device)


def _darts_search(spec: SupernetSpec, batch: int, device: torch.device):
    model = DartsSupernet(spec).to(device)
    w_opt = torch.optim.SGD(model.weight_parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    architect = Architect(model, {"arch_lr": 3e-4, "arch_weight_decay": 1e-3}, False)
    train, valid = _batch(batch, spec.input_size, device), _batch(batch, spec.input_size, device)

    def step() -> None:
        architect.step(train, valid, 0.025, w_opt)
        w_opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(train[0]), train[1]).backward()
        nn.utils.clip_grad_norm_(model.weight_parameters(), 5.0)
        w_opt.step()

    return step, 2 * batch


def _mg_search(spec: SupernetSpec, batch: int, device: torch.device):
    model = MGSupernet.from_options(spec, {}).to(device)
    weights = model.weight_parameters()
    w_opt = torch.optim.SGD(weights, 0.01, momentum=0.9, weight_decay=3e-4)
    a_opt = torch.optim.SGD(model.arch_parameters(), 0.1, momentum=0.9)
    images, labels = _batch(batch, spec.input_size, device)

    def step() -> None:
        w_opt.zero_grad(set_to_none=True)
        a_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model.forward_logits(images), labels)
        loss = loss + 5e-3 * (
            model.op_sparsity(range(model.num_cells)) + model.threshold_regulariser()
        )
        loss.backward()
        nn.utils.clip_grad_norm_(weights, 5.0)
        w_opt.step()
        a_opt.step()

    return step, batch


def _eval_step(net: nn.Module, batch: int, size: int, device: torch.device):
    net = net.to(device).train()
    net.drop_path_prob = 0.2
    opt = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    images, labels = _batch(batch, size, device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits, aux = net(images)
        loss = F.cross_entropy(logits, labels)
        if aux is not None:
            loss = loss + 0.4 * F.cross_entropy(aux, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()

    return step, batch


def _measure(
    build: Callable[[], tuple[Callable[[], None], int]],
    device: torch.device,
    steps: int,
    amp: bool,
) -> tuple[float, float]:
    """(images per second, peak MB) of ``steps`` timed steps after two warm-up steps."""
    torch.manual_seed(0)
    step, images = build()
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    )
    cuda = device.type == "cuda"
    with autocast:
        for _ in range(2):
            step()
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else float("nan")
    return images * steps / seconds, peak


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--mg-arch", type=Path, help="folder with the released MG-DARTS files")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, to check on a CPU")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    size, search_cells, search_c, search_batch = (8, 3, 4, 8) if args.tiny else (32, 8, 16, 64)
    # Evaluation stays at 32x32 even when tiny: the auxiliary head needs an 8x8 feature map.
    eval_layers, eval_c, eval_batch = (3, 8, 8) if args.tiny else (20, 36, 96)
    spec = SupernetSpec(3, 10, size, search_cells, search_c)

    cases: list[tuple[str, Callable[[], tuple[Callable[[], None], int]]]] = [
        ("DARTS search step", lambda: _darts_search(spec, search_batch, device)),
        ("MG-DARTS search step", lambda: _mg_search(spec, search_batch, device)),
        (
            "DARTS V2 eval step",
            lambda: _eval_step(
                NetworkCIFAR(eval_c, 10, eval_layers, True, DARTS_V2, in_channels=3),
                eval_batch,
                32,
                device,
            ),
        ),
    ]
    if args.mg_arch:
        arch = import_official(
            args.mg_arch / "mg_darts_small_genotype.json",
            args.mg_arch / "mg_darts_small_masks.pt",
        )
        net_spec = NetworkSpec(3, 10, 32, 24, layers=8, auxiliary=True)
        cases.append(
            (
                "MG-DARTS small eval step",
                lambda: _eval_step(
                    MGDartsGenotypeFormat().build_network(arch, net_spec), eval_batch, 32, device
                ),
            )
        )
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {args.steps} timed steps after 2 warm-up steps\n")
    print("| step | precision | images/s | peak memory (MB) |")
    print("| --- | --- | ---: | ---: |")
    for title, build in cases:
        for amp in (False, True):
            rate, peak = _measure(build, device, args.steps, amp)
            precision = "bf16 autocast" if amp else "fp32"
            print(f"| {title} | {precision} | {rate:,.0f} | {peak:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
