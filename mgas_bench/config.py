"""Run configurations and suite files.

A suite (TOML) expands into one fully resolved :class:`RunConfig` per
(data set, method, variant, seed). A run's identity is a hash of its resolved
config, so changing anything that changes the computation makes a new run,
and re-running a suite finds the runs it already finished.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mgas_bench.budgets import BUDGETS
from mgas_bench.components import SearchBudget
from mgas_bench.registry import Registry


class ConfigError(ValueError):
    """A suite file or command-line option is wrong; the message says how."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    root: str = "data"
    download: bool = False
    verify_checksums: bool = True
    # Share of the training set that trains weights during search; the rest trains
    # the architecture. The test set is never used by the search.
    search_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    # Fixed across seeds so that every method and seed sees the same split.
    split_seed: int = 0
    options: dict[str, Any] = {}


class SearchConfig(_Strict):
    epochs: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    cells: int = Field(ge=1)
    channels: int = Field(ge=1)
    nodes: int = Field(4, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)

    def budget(self) -> SearchBudget:
        return SearchBudget(**self.model_dump())


class EvalConfig(_Strict):
    epochs: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    layers: int = Field(ge=1)
    channels: int = Field(ge=1)
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    auxiliary: bool = False
    auxiliary_weight: float = 0.4
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)
    cutout: int = Field(0, ge=0)  # side of the square cut out of each training image; 0 = off
    max_steps_per_epoch: int | None = Field(None, ge=1)


class RuntimeConfig(_Strict):
    """How a run uses its device and loads its data.

    Mixed precision and channels-last change a run's arithmetic (a little), and loader
    worker processes draw augmentations from their own generators, so these are part
    of a run's identity when set; pinned memory changes only speed.
    """

    # bf16 autocast around search and evaluation training; it needs no loss scaling.
    precision: Literal["fp32", "bf16"] = "fp32"
    channels_last: bool = False  # networks and input batches in NHWC memory format
    loader_workers: int = Field(0, ge=0)  # loading processes per loader; 0: the run's own
    pin_memory: bool | None = None  # None: on with CUDA


# Where the data lives and whether it may be fetched do not change what a run
# computes, so they are left out of its identity; nor does pinned memory.
_NOT_IN_IDENTITY = {"data": {"root", "download"}, "runtime": {"pin_memory"}}


class RunConfig(_Strict):
    method: str
    dataset: str
    seed: int
    variant: str = "default"
    budget: str
    options: dict[str, Any] = {}
    data: DataConfig = DataConfig()
    search: SearchConfig
    eval: EvalConfig
    device: str = "cpu"
    runtime: RuntimeConfig = RuntimeConfig()

    def run_id(self) -> str:
        identity = self.model_dump(mode="json", exclude=_NOT_IN_IDENTITY)
        if identity["runtime"] == RuntimeConfig().model_dump(mode="json", exclude={"pin_memory"}):
            del identity["runtime"]  # run ids from before these options existed stay valid
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Variant(_Strict):
    name: str
    methods: list[str] | None = None  # None: every method of the suite
    options: dict[str, Any] = {}


class Suite(_Strict):
    name: str = "suite"
    methods: list[str] | str = "available"
    # Listed methods that cannot run here (an optional toolkit is not installed) are
    # left out with a note instead of stopping the suite.
    skip_unavailable: bool = False
    datasets: list[str] = ["digits"]
    seeds: int | list[int] = 2
    budget: str = "small"
    device: str = "cpu"
    runtime: RuntimeConfig = RuntimeConfig()
    data: dict[str, Any] = {}
    # Per data set options, e.g. [dataset_options.digits] input_size = 16.
    dataset_options: dict[str, dict[str, Any]] = {}
    search: dict[str, Any] = {}
    eval: dict[str, Any] = {}
    options: dict[str, dict[str, Any]] = {}  # per-method option overrides
    variants: list[Variant] = []

    @field_validator("methods")
    @classmethod
    def _methods_keyword(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str) and value != "available":
            raise ValueError('must be a list of method names or the word "available"')
        return value

    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


DEFAULT_SUITE = Path(__file__).with_name("suites") / "default.toml"


def load_suite(path: Path | None) -> Suite:
    path = path or DEFAULT_SUITE
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"suite file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    return parse_suite(raw, source=str(path))


def parse_suite(raw: Mapping[str, Any], source: str = "suite") -> Suite:
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_explain(exc)}") from None


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def unavailable_methods(suite: Suite, registry: Registry) -> dict[str, str]:
    """The suite's listed methods that cannot run here, with why and how to fix it."""
    if suite.methods == "available":
        return {}
    reasons = {}
    for name in suite.methods:
        reason = registry.get("method", name).unavailable_reason()  # raises with known names
        if reason is not None:
            reasons[name] = reason
    return reasons


def resolve_methods(suite: Suite, registry: Registry) -> list[str]:
    if suite.methods == "available":
        return [
            name
            for name in registry.names("method")
            if registry.get("method", name).unavailable_reason() is None
        ]
    unavailable = unavailable_methods(suite, registry)
    if unavailable and not suite.skip_unavailable:
        problems = "; ".join(f"{name}: {reason}" for name, reason in unavailable.items())
        raise ConfigError(
            f"method(s) unavailable here: {problems} (or set skip_unavailable = true in the "
            "suite to run the rest)"
        )
    return [name for name in suite.methods if name not in unavailable]


def expand_suite(suite: Suite, registry: Registry) -> list[RunConfig]:
    """One resolved config per (data set, method, variant, seed), in that nesting order."""
    if suite.budget not in BUDGETS:
        raise ConfigError(f"unknown budget {suite.budget!r}; known budgets: {', '.join(BUDGETS)}")
    for dataset in suite.datasets:
        registry.get("dataset", dataset)
    if "options" in suite.data:
        raise ConfigError("data.options: set data set options under [dataset_options.NAME]")
    methods = resolve_methods(suite, registry)
    unknown = set(suite.options) - set(methods)
    if unknown:
        raise ConfigError(
            f"options given for method(s) not in this suite: {', '.join(sorted(unknown))}; "
            f"suite methods: {', '.join(methods)}"
        )
    budget = BUDGETS[suite.budget]
    variants = suite.variants or [Variant(name="default")]
    configs = []
    for dataset in suite.datasets:
        for method in methods:
            defaults = registry.get("method", method).default_options()
            base = _merge_options(method, defaults, suite.options.get(method, {}), "options")
            for variant in variants:
                if variant.methods is not None and method not in variant.methods:
                    continue
                options = _merge_options(method, base, variant.options, f"variant {variant.name}")
                for seed in suite.seed_list():
                    configs.append(
                        _validated_run(
                            method=method,
                            dataset=dataset,
                            seed=seed,
                            variant=variant.name,
                            budget=suite.budget,
                            options=options,
                            data={
                                **suite.data,
                                "options": suite.dataset_options.get(dataset, {}),
                            },
                            search={**budget["search"], **suite.search},
                            eval={**budget["eval"], **suite.eval},
                            device=suite.device,
                            runtime=suite.runtime,
                        )
                    )
    return configs


def _merge_options(
    method: str, base: Mapping[str, Any], overrides: Mapping[str, Any], where: str
) -> dict[str, Any]:
    unknown = set(overrides) - set(base)
    if unknown:
        known = ", ".join(sorted(base)) or "(none)"
        raise ConfigError(
            f"{where}: method {method!r} has no option(s) {', '.join(sorted(unknown))}; "
            f"its options: {known}"
        )
    return {**base, **overrides}


def _validated_run(**fields: Any) -> RunConfig:
    try:
        return RunConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"run {fields['method']}/{fields['dataset']}: {_explain(exc)}") from None


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs from the command line; values are read as TOML when they parse."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = value
    return out
