"""The Python API the CLI calls: `onnxmorph.prune(model, target="flops", budget=0.5)`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis, analyze
from onnxmorph.graph.cost import LATENCY_TARGET, TARGETS
from onnxmorph.io import check_output_path, save_json, save_model, sidecar
from onnxmorph.methods.select import SelectionRules, check_budget, resolve_round_to
from onnxmorph.plot import SKIP_NOTE, write_structure_plot
from onnxmorph.report import cost_report, structure
from onnxmorph.rewrite import slice_channels, verify_models

METHODS = ("auto", "l1", "uniform", "gates")


@dataclass
class PruneResult:
    model: onnx.ModelProto
    analysis: Analysis = field(repr=False)
    alive: np.ndarray = field(repr=False)
    method: str
    target: str
    budget: float
    extra: dict = field(default_factory=dict)  # accuracy, training log, verify report …

    @property
    def costs(self) -> dict:
        return cost_report(self.analysis, self.alive)

    @property
    def structure(self) -> dict:
        return structure(self.analysis, self.alive)

    def report(self) -> dict:
        return {"method": self.method, "target": self.target, "budget": self.budget,
                **self.costs, **self.extra}

    def save(self, path: str | os.PathLike) -> dict[str, Path | str]:
        """Write the model and, next to it, `<stem>.structure.json`, `<stem>.report.json` and
        the picture `<stem>.structure.png` (under "plot": its path, or a note why it was not
        drawn)."""
        path = check_output_path(path)
        paths = {"model": path, "structure": sidecar(path, "structure.json"),
                 "report": sidecar(path, "report.json")}
        structure = self.structure
        save_json(structure, paths["structure"])
        save_json(self.report(), paths["report"])
        save_model(self.model, path)
        png, history = sidecar(path, "structure.png"), self.extra.get("learned", {}).get("history")
        paths["plot"] = png if write_structure_plot(structure, png, history) else SKIP_NOTE
        return paths


def prune(
    model: str | os.PathLike | onnx.ModelProto,
    *,
    method: str = "auto",
    target: str = "flops",
    budget: float = 0.5,
    data: str | os.PathLike | None = None,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    round_to: int | str = "auto",
    min_channels: int = 1,
    exclude: tuple[str, ...] | list[str] = (),
    verify: bool = False,
    training: dict | None = None,
    latency_model: str | None = None,
    latency_table: str | os.PathLike | None = None,
    latency_device: str = "cpu",
    threads: int | None = None,
    measure_latency: bool = False,
) -> PruneResult:
    """Prune `model` so that its `target` cost is at most `budget` × the seed's.

    method "l1" ranks channels by weight magnitude and needs no data; "uniform" shrinks every
    layer by the same width (keeping the highest-L1 channels); "gates" learns the structure on
    `data` (a loader file); "auto" picks "gates" when data is given. With data, "l1" and
    "uniform" fine-tune the pruned model on it.

    round_to "auto" keeps channel counts multiples of onnxruntime's CPU channel block where
    the seed's are. target "latency" prices structures with `latency_model` ("table", the
    default: measured per layer, cached or `latency_table`; "roofline": `latency_device`'s
    constants), which the report then shows too;
    `measure_latency` times seed and result in onnxruntime (`threads`) for the report.
    """
    _check_arguments(method, target, budget, 1, min_channels)
    if method == "auto":
        method = "gates" if data is not None else "l1"
    if method == "gates" and data is None:
        raise PruningError("--method gates learns from data: pass --data loader.py")
    analysis = analyze(model, input_shapes)
    rules = SelectionRules(round_to=resolve_round_to(round_to), min_channels=min_channels,
                           exclude=tuple(exclude), auto=round_to == "auto")
    extra: dict = {"round_to": rules.round_to if round_to != "auto"
                   else f"auto ({rules.round_to})"}
    if target == LATENCY_TARGET or latency_model or latency_table:
        from onnxmorph.latency import latency_model as build_latency

        analysis.cost.latency = build_latency(analysis, kind=latency_model or "table",
                                              threads=threads,
                                              table_path=latency_table, device=latency_device)
    if threads and data is not None:
        training = {**(training or {}), "threads": threads}
    if method in ("l1", "uniform"):
        if method == "l1":
            alive = _l1(analysis, target, budget, rules)
        else:
            from onnxmorph.methods.uniform import width_for_budget

            width, alive = width_for_budget(analysis, target, budget, rules)
            extra["width"] = width
        sliced_result = slice_channels(analysis, alive)
        alive, sliced = sliced_result.alive, sliced_result.model
        if data is not None:  # the L1 baseline with fine-tuning, as in the literature
            from onnxmorph.methods.gated import finetune_on_data

            sliced, tuned = finetune_on_data(analysis.loaded.model, sliced, data,
                                             **(training or {}))
            extra.update(tuned)
    else:
        from onnxmorph.methods.gated import learn_structure

        alive, sliced, learned = learn_structure(
            analysis, data=data, target=target, budget=budget, rules=rules, **(training or {})
        )
        extra.update(learned)
    result = PruneResult(model=sliced, analysis=analysis, alive=alive, method=method,
                         target=target, budget=budget, extra=extra)
    if verify and method != "gates":
        result.extra["verify"] = verify_models(analysis, sliced).to_dict()
    if measure_latency or analysis.cost.latency is not None:
        from onnxmorph.latency.report import latency_report

        result.extra["latency"] = latency_report(analysis, alive, sliced,
                                                 expr=analysis.cost.latency,
                                                 measure=measure_latency, threads=threads)
    return result


def _l1(analysis: Analysis, target: str, budget: float, rules: SelectionRules) -> np.ndarray:
    from onnxmorph.methods.l1 import l1_unit_scores, normalized_within_groups
    from onnxmorph.methods.select import select_to_budget

    scores = normalized_within_groups(analysis, l1_unit_scores(analysis))
    return select_to_budget(analysis, scores, target, budget, rules)


def _check_arguments(method, target, budget, round_to, min_channels) -> None:
    if method not in METHODS:
        raise PruningError(f"unknown method '{method}'; use one of {', '.join(METHODS)}")
    if target not in (*TARGETS, LATENCY_TARGET):
        raise PruningError(f"unknown target '{target}'; use one of "
                           f"{', '.join((*TARGETS, LATENCY_TARGET))}")
    check_budget(budget)
    if round_to < 1 or min_channels < 0:
        raise PruningError("--round-to must be at least 1 and --min-channels at least 0")
