"""Every pruning method behind one interface: (analysis, target, budget, rules, data) → alive.

A method is one module plus its registration. A *criterion* only scores units
(`@register_criterion`); the shared selection (`select_to_budget`: targets, `--round-to`,
`--min-channels`, `--exclude`) turns its scores into a structure, so every criterion obeys the
same rules as L1. A method that decides the structure another way (uniform width, learned
gates) registers a whole `select` function with `@register_method`.

Method modules import only light modules at the top (numpy, onnx, graph/), so the CLI can
list the methods without loading onnxruntime.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxmorph.errors import PruningError, TrainingError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.graph.cost import LATENCY_TARGET, TARGETS
from onnxmorph.methods.select import SelectionRules

DEFAULT_CALIBRATION_BATCHES = 8

# Modules whose import registers methods; a new method adds its module here.
_BUILTIN_MODULES = (
    "onnxmorph.methods.builtin",
    "onnxmorph.methods.fpgm",
    "onnxmorph.methods.apoz",
    "onnxmorph.methods.activation",
    "onnxmorph.methods.taylor",
    "onnxmorph.methods.gdp",
    "onnxmorph.methods.gamma",
    "onnxmorph.methods.group_lasso",
)


@dataclass(frozen=True)
class MethodInput:
    """What every method receives; `training` holds TrainOptions fields (steps, lr, …)."""

    analysis: Analysis
    target: str = "flops"
    budget: float = 0.5
    rules: SelectionRules = SelectionRules()
    data: str | os.PathLike | None = None
    training: dict = field(default_factory=dict)
    calibration_batches: int = DEFAULT_CALIBRATION_BATCHES


@dataclass
class UnitScores:
    """A criterion's verdict: one score per unit (higher = more important), and notes."""

    values: np.ndarray
    notes: dict = field(default_factory=dict)


@dataclass
class Selection:
    """Which units live. `model` is set by a method that slices (and trains) by itself."""

    alive: np.ndarray
    extra: dict = field(default_factory=dict)
    model: onnx.ModelProto | None = None


ALL_TARGETS = (*TARGETS, LATENCY_TARGET)  # flops, params, latency


@dataclass(frozen=True)
class Method:
    """A registered method and what it can do; api.prune and the CLI refuse, in one line and
    before any work, what a method cannot (check_request)."""

    name: str
    summary: str  # one line for `--help` and the README
    needs_data: bool  # False: data, when given, only fine-tunes the pruned model
    select: Callable[[MethodInput], Selection]
    scores: Callable[[MethodInput], UnitScores] | None = None  # criteria only
    learns: bool = False  # trains to decide the structure (--steps, --strength …)
    resumable: bool = True  # --resume continues every phase it trains
    targets: tuple[str, ...] = ALL_TARGETS  # the --target values it can steer on


_METHODS: dict[str, Method] = {}


def register_method(name: str, *, summary: str, needs_data: bool = False, learns: bool = False,
                    resumable: bool = True, targets: tuple[str, ...] = ALL_TARGETS):
    """Decorator registering `select(MethodInput) -> Selection` as method `name`. A method
    that slices by itself (Selection.model) verifies its slice and leaves the result under
    a "verify_…" key of Selection.extra, which api.prune requires to have passed."""
    def decorate(select: Callable[[MethodInput], Selection]):
        _add(Method(name, summary, needs_data, select, learns=learns, resumable=resumable,
                    targets=tuple(targets)))
        return select
    return decorate


def register_criterion(name: str, *, summary: str, needs_data: bool = False):
    """Decorator registering `scores(MethodInput) -> UnitScores`; selection is L1's."""
    def decorate(scores: Callable[[MethodInput], UnitScores]):
        def select(request: MethodInput) -> Selection:
            from onnxmorph.methods.select import select_to_budget

            ranked = unit_scores(_METHODS[name], request)
            alive = select_to_budget(request.analysis, ranked.values, request.target,
                                     request.budget, request.rules)
            return Selection(alive, dict(ranked.notes))

        _add(Method(name, summary, needs_data, select, scores=scores))
        return scores
    return decorate


def get_method(name: str) -> Method:
    _load_builtins()
    if name not in _METHODS:
        raise PruningError(f"unknown method '{name}'; use one of {', '.join(method_names())}")
    return _METHODS[name]


def method_names(criteria_only: bool = False) -> tuple[str, ...]:
    _load_builtins()
    return tuple(n for n, m in _METHODS.items() if not criteria_only or m.scores is not None)


def method_help() -> str:
    """One line per method for `--help`."""
    _load_builtins()
    return " ".join(f"{m.name}: {m.summary}." for m in _METHODS.values())


def unit_scores(method: Method, request: MethodInput) -> UnitScores:
    """The criterion's scores normalised within groups, so groups of any scale compare."""
    from onnxmorph.methods.l1 import normalized_within_groups

    if method.scores is None:
        raise PruningError(f"method '{method.name}' does not rank channels; use one of "
                           f"{', '.join(method_names(criteria_only=True))}")
    check_data(method, request.data)
    raw = method.scores(request)
    return UnitScores(normalized_within_groups(request.analysis, raw.values), raw.notes)


def check_data(method: Method, data: str | os.PathLike | None) -> None:
    if method.needs_data and data is None:
        raise PruningError(f"--method {method.name} needs data: pass --data loader.py")


def check_request(method: Method, *, target: str, data: str | os.PathLike | None,
                  resume: bool = False) -> None:
    """Refuse what `method` cannot do, before the model is read: no data where it needs
    some, a --target it cannot steer on, --resume where it keeps no checkpoint."""
    check_data(method, data)
    if target not in method.targets:
        raise PruningError(f"--method {method.name} supports --target "
                           f"{' or '.join(method.targets)}; for --target {target} use one of "
                           f"{', '.join(n for n, m in _METHODS.items() if target in m.targets)}")
    if resume and not method.resumable:
        raise TrainingError(f"--resume: --method {method.name} keeps no checkpoint of its "
                            "structure learning, so an interrupted run cannot be continued; run "
                            "the command again without --resume")


def resolve_method(name: str, data: str | os.PathLike | None) -> Method:
    """The method `name` means; "auto": gates with data, else l1."""
    if name == "auto":
        name = "gates" if data is not None else "l1"
    return get_method(name)


def _add(method: Method) -> None:
    if method.name in _METHODS or method.name == "auto":
        raise ValueError(f"method name '{method.name}' is taken")
    _METHODS[method.name] = method


def _load_builtins() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
