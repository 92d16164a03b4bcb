"""Public types that plugins implement and receive.

A plugin returns component objects from the ``register_*`` hooks in
:mod:`mgas_bench.hookspecs`. The host checks each object against the
``REQUIRED`` members of its kind (duck typing is fine: subclassing the base
classes below is a convenience, not a requirement), so a component that forgets
a method fails at start-up, not half way through a run.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class DatasetInfo:
    """What a network builder needs to know about a data set, without reading it."""

    num_classes: int
    input_shape: tuple[int, int, int]  # channels, height, width as the network sees them
    # Which DARTS stem/head convention fits the input: "cifar" (stride-1 stem) or
    # "imagenet" (three stride-2 convs before the first cell).
    network_style: Literal["cifar", "imagenet"] = "cifar"


@dataclass(frozen=True)
class DataRequest:
    """Where and how to read a data set; built by the host from the run config."""

    root: Path
    download: bool = False
    # Checksums guard users' data; tests that write tiny CIFAR-format folders turn
    # this off on purpose (see the README, "Data sets").
    verify_checksums: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataBundle:
    """A loaded data set: items are ``(float image tensor CxHxW, int label)``."""

    info: DatasetInfo
    train: TorchDataset  # augmented for training; the search splits it in two
    test: TorchDataset  # used only by the final evaluation


class DataNotFoundError(FileNotFoundError):
    """A data set is missing; the message says where the loader looked and what to do."""


class DataIntegrityError(RuntimeError):
    """Data set files are present but do not match the official archive's checksums."""


class Dataset(ABC):
    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "description", "info", "load")
    name: str
    description: str

    @abstractmethod
    def info(self, options: Mapping[str, Any]) -> DatasetInfo: ...

    @abstractmethod
    def load(self, request: DataRequest) -> DataBundle: ...


# ------------------------------------------------------------ searchable units


@dataclass
class UnitGroup:
    """A group of searchable units of one granularity that are decided together.

    ``scores`` holds the current importance of each unit (live tensors: a
    learnable discretizer may differentiate through them); ``mask`` holds the
    committed keep (1) / prune (0) decision with the same shape, and pruners
    update it in place. ``labels`` names the last axis (for example op names)
    and ``meta`` carries whatever the search space wants discretizers to know
    (for example which input node each edge comes from).
    """

    key: str
    granularity: str
    scores: torch.Tensor
    mask: torch.Tensor
    labels: tuple[str, ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Supernet(nn.Module):
    """What a search space's ``build`` returns: a module with separable parameter sets."""

    def arch_parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def weight_parameters(self) -> list[torch.Tensor]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def unit_groups(self, granularity: str) -> list[UnitGroup]:
        """Groups of units at ``granularity``; an unknown granularity gives ``[]``."""
        return []


@dataclass(frozen=True)
class SupernetSpec:
    in_channels: int
    num_classes: int
    input_size: int
    cells: int
    channels: int
    nodes: int = 4
    network_style: Literal["cifar", "imagenet"] = "cifar"


class SearchSpace(ABC):
    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "description", "granularities", "build")
    name: str
    description: str
    granularities: tuple[str, ...]  # the granularities whose units ``unit_groups`` exposes

    @abstractmethod
    def build(self, spec: SupernetSpec, options: Mapping[str, Any]) -> Supernet: ...


class UnitGates(ABC):
    """Learnable gates a granularity attaches to a supernet, so a pruning search decides its units.

    :meth:`Granularity.attach` returns one. The gates act in the supernet's forward pass
    (typically through forward hooks) as ``score * discretize(group) * mask`` per unit,
    where ``discretize`` is the search's discretizer for this granularity. Their score and
    threshold parameters stay outside the supernet's module tree, so a method adds them
    to its optimisers explicitly and never mistakes them for network weights.
    """

    granularity: str

    @abstractmethod
    def groups(self) -> list[UnitGroup]:
        """Groups with live ``scores``, the committed ``mask`` (a view) and, in ``meta``,
        the learnable ``"threshold"`` and, for cell-based spaces, the ``"cell"`` index."""

    @abstractmethod
    def score_parameters(self) -> list[nn.Parameter]: ...

    @abstractmethod
    def threshold_parameters(self) -> list[nn.Parameter]: ...

    @abstractmethod
    def use_discretizer(self, discretize: Callable[[UnitGroup], torch.Tensor]) -> None:
        """Gate units with ``discretize`` from now on (until it is called again)."""

    @abstractmethod
    def commit(self, groups: list[UnitGroup]) -> int:
        """Multiply the masks of ``groups`` by the current decision; return units newly pruned.

        Pruning a unit may prune what depends on it (for example the operations of a
        pruned edge) through the supernet's own unit groups.
        """

    @abstractmethod
    def detach(self) -> None:
        """Remove the gates from the supernet."""


class Granularity(ABC):
    """A kind of searchable unit (operations, filters, weights, or a plugin's own).

    The default asks the supernet for its groups, which suits the granularities a
    search space knows natively. A plugin granularity can instead find its units
    by walking the module tree, and make them searchable with :meth:`attach`, so it
    works on search spaces that have never heard of it.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "description", "unit_groups")
    name: str
    description: str

    def unit_groups(self, supernet: nn.Module) -> list[UnitGroup]:
        groups = getattr(supernet, "unit_groups", None)
        return groups(self.name) if groups else []

    def attach(self, supernet: nn.Module) -> UnitGates | None:
        """Add learnable gates for this granularity's units to ``supernet``.

        ``None`` (the default) means the search space gates these units natively, or
        not at all; a pruning search then cannot use this granularity on a supernet
        that does not know it.
        """
        return None


class Discretizer(ABC):
    """Turns the scores of one unit group into a keep/prune decision.

    Two kinds exist. A derivation (DARTS's top-2) returns a bool tensor. A learnable
    discretization function returns a float tensor of 0s and 1s that stays
    differentiable (through a surrogate gradient) with respect to ``group.scores`` and
    the learnable tensors the search space puts in ``group.meta`` (``"threshold"``), so
    a pruning search can learn it along with the architecture. Callers that need a
    hard decision compare the result with 0.
    """

    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "description", "granularity", "discretize")
    name: str
    description: str
    granularity: str  # name of the granularity whose groups it decides

    @abstractmethod
    def discretize(self, group: UnitGroup, options: Mapping[str, Any]) -> torch.Tensor:
        """A tensor shaped like ``group.scores``: True or 1 = keep."""


@dataclass(frozen=True)
class PruneReport:
    pruned: int  # units whose committed mask went from 1 to 0 in this call
    alive: int  # units still kept after the call
    total: int


class Pruner(ABC):
    """Commits keep/prune decisions into ``UnitGroup.mask``."""

    REQUIRED: ClassVar[tuple[str, ...]] = ("name", "description", "prune")
    name: str
    description: str

    @abstractmethod
    def prune(
        self,
        groups: list[UnitGroup],
        discretize: Callable[[UnitGroup], torch.Tensor],
        options: Mapping[str, Any],
    ) -> PruneReport: ...


# ---------------------------------------------------------------- architectures


@dataclass
class Architecture:
    """A searched architecture: a JSON payload in a named format, plus optional tensors.

    ``tensors`` holds what JSON cannot (for example weight masks); the runner
    saves it next to the JSON with ``torch.save``.
    """

    format: str
    payload: dict[str, Any]
    tensors: Any = None


@dataclass(frozen=True)
class NetworkSpec:
    """How to size the evaluation network built from an architecture."""

    in_channels: int
    num_classes: int
    input_size: int
    channels: int
    layers: int
    auxiliary: bool = False
    network_style: Literal["cifar", "imagenet"] = "cifar"


class ArchitectureFormat(ABC):
    """Reads, checks and builds architectures of one on-disk format.

    ``build_network`` returns a module whose ``forward(x)`` gives
    ``(logits, aux_logits_or_None)``, with a settable ``drop_path_prob`` and the
    auxiliary head (if any) under the attribute ``auxiliary_head``: the host's
    evaluator relies on these three conventions (the parameter count leaves the
    auxiliary head out, as the DARTS paper does).
    """

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "name",
        "description",
        "matches",
        "validate",
        "build_network",
    )
    name: str
    description: str
    # False where the architecture itself fixes the depth (``NetworkSpec.layers`` ignored).
    uses_layers: ClassVar[bool] = True

    @abstractmethod
    def matches(self, payload: Mapping[str, Any]) -> bool: ...

    @abstractmethod
    def validate(self, payload: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` saying what is wrong with ``payload``."""

    @abstractmethod
    def build_network(self, arch: Architecture, spec: NetworkSpec) -> nn.Module: ...


# ---------------------------------------------------------------------- methods


@dataclass
class SearchData:
    """The search split: one loader trains weights, the other architecture parameters."""

    info: DatasetInfo
    weights: DataLoader
    arch: DataLoader


@dataclass(frozen=True)
class SearchBudget:
    epochs: int
    batch_size: int
    cells: int
    channels: int
    nodes: int = 4
    max_steps_per_epoch: int | None = None


class Checkpoints(ABC):
    """Where a method saves its progress, so that a killed run goes on from there.

    A method calls :meth:`save` at its epoch (and stage) boundaries and :meth:`restore`
    once it has built, with the run's seed, everything its state refers to. The host
    adds to each checkpoint what makes the continuation match an uninterrupted run: the
    state of every random generator (Python, NumPy, torch on CPU and CUDA, the search
    loaders' own generators) and the time and memory the search has used so far.
    """

    @abstractmethod
    def save(self, state: Any, *, epoch: int, stage: int | None = None) -> None:
        """Replace the last checkpoint with ``state`` (anything ``torch.save`` pickles).

        ``epoch`` is the last completed epoch (as passed to ``epoch_ended``), ``stage``
        the last completed stage, if the method has stages.
        """

    @abstractmethod
    def restore(self) -> Any | None:
        """The state of the last :meth:`save`, or ``None`` when the run starts afresh.

        Every call also puts the random generators back as they were at that save, so a
        method whose toolkit draws random numbers while it builds may call it again
        just before its first step.
        """


class NoCheckpoints(Checkpoints):
    """Checkpointing off: nothing is saved and every run starts afresh."""

    def save(self, state: Any, *, epoch: int, stage: int | None = None) -> None:
        return None

    def restore(self) -> Any | None:
        return None


@dataclass
class SearchContext:
    """Everything a method's ``search`` gets from the host."""

    method: str
    options: Mapping[str, Any]
    budget: SearchBudget
    data: SearchData
    device: torch.device
    seed: int
    run_dir: Path
    log: logging.Logger
    components: ComponentLookup
    # Observers hear about progress through these; they call the lifecycle hooks.
    epoch_ended: Callable[..., None]
    stage_ended: Callable[..., None]
    checkpoints: Checkpoints = field(default_factory=NoCheckpoints)
    # torch.channels_last when the run asks for it; the loaders' batches already are.
    memory_format: torch.memory_format = torch.contiguous_format

    def place(self, module: nn.Module) -> nn.Module:
        """``module`` on the run's device, in the run's memory format (call after rebuilding)."""
        return module.to(device=self.device, memory_format=self.memory_format)

    def supernet_spec(self) -> SupernetSpec:
        info = self.data.info
        return SupernetSpec(
            in_channels=info.input_shape[0],
            num_classes=info.num_classes,
            input_size=info.input_shape[1],
            cells=self.budget.cells,
            channels=self.budget.channels,
            nodes=self.budget.nodes,
            network_style=info.network_style,
        )


@dataclass
class SearchResult:
    architecture: Architecture
    metrics: dict[str, float] = field(default_factory=dict)


class Method(ABC):
    """A search method: composes a search space, discretizers, a pruner and a schedule."""

    REQUIRED: ClassVar[tuple[str, ...]] = (
        "name",
        "description",
        "default_options",
        "unavailable_reason",
        "search",
    )
    name: str
    description: str

    def default_options(self) -> dict[str, Any]:
        return {}

    def unavailable_reason(self) -> str | None:
        """``None`` if the method can run here, else why not and how to fix it."""
        return None

    def prepare(self, ctx: SearchContext) -> None:
        """Load what the search needs (a toolkit's heavy imports) before it is timed.

        Optional: the host calls it, when present, with the search's context just
        before it starts the search clock and the memory meter.
        """
        return None

    @abstractmethod
    def search(self, ctx: SearchContext) -> SearchResult: ...


class ComponentLookup(ABC):
    """Read access to registered components, handed to methods at search time."""

    @abstractmethod
    def get(self, kind: str, name: str) -> Any:
        """The component, or ``UnknownComponentError`` listing the known names."""

    @abstractmethod
    def names(self, kind: str) -> list[str]: ...


class UnknownComponentError(LookupError):
    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        listing = ", ".join(sorted(known)) or "(none registered)"
        plural = f"{kind[:-1]}ies" if kind.endswith("y") else f"{kind}s"
        super().__init__(f"unknown {kind} {name!r}; known {plural}: {listing}")


# The component kinds, in the order `mgas-bench plugins` lists them.
KINDS: dict[str, type] = {
    "method": Method,
    "search_space": SearchSpace,
    "granularity": Granularity,
    "discretizer": Discretizer,
    "pruner": Pruner,
    "dataset": Dataset,
    "architecture_format": ArchitectureFormat,
}
