"""The Python API the CLI calls: `onnxmorph.prune(model, target="flops", budget=0.5)`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from onnxmorph.errors import PruningError
from onnxmorph.graph.analysis import Analysis, analyze
from onnxmorph.graph.cost import LATENCY_TARGET, TARGETS
from onnxmorph.io import check_output_path, json_bytes, sidecar, write_file_set
from onnxmorph.methods.registry import (
    DEFAULT_CALIBRATION_BATCHES,
    MethodInput,
    check_request,
    method_names,
    resolve_method,
)
from onnxmorph.methods.select import SelectionRules, check_budget, resolve_round_to
from onnxmorph.plot import SKIP_NOTE, structure_plot_png
from onnxmorph.report import cost_report, structure
from onnxmorph.rewrite import slice_channels
from onnxmorph.rewrite.postconditions import (
    check_seed_runs,
    check_sliced,
    check_trained,
    require_passed,
)
from onnxmorph.rewrite.verify import DEFAULT_ATOL, DEFAULT_RTOL, check_tolerances

METHODS = ("auto", *method_names())


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
        drawn). All or nothing: the files are renamed into place only once all were written,
        the model last-but-one and the report last."""
        path = check_output_path(path)
        paths = {"model": path, "structure": sidecar(path, "structure.json"),
                 "report": sidecar(path, "report.json"), "plot": sidecar(path, "structure.png")}
        for written in paths.values():
            check_output_path(written, inputs=[self.analysis.loaded.source])
        structure = self.structure
        history = self.extra.get("learned", {}).get("history")
        png = structure_plot_png(structure, history)
        files = {paths["structure"]: json_bytes(structure), paths["plot"]: png,
                 path: self.model.SerializeToString(), paths["report"]: json_bytes(self.report())}
        written = write_file_set({k: v for k, v in files.items() if v is not None})
        if paths["plot"] not in written:
            paths["plot"] = SKIP_NOTE
        return {key: paths[key] for key in ("model", "structure", "report", "plot")}


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
    verify: bool = True,
    training: dict | None = None,
    calibration_batches: int = DEFAULT_CALIBRATION_BATCHES,
    atol: float | None = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    latency_model: str | None = None,
    latency_table: str | os.PathLike | None = None,
    latency_device: str = "cpu",
    threads: int | None = None,
    batch: int = 1,
    measure_latency: bool = False,
    allow_uncounted: bool = False,
    prune_embedding: bool = False,
) -> PruneResult:
    """Prune `model` so that its `target` cost is at most `budget` × the seed's.

    `method` is one of the registry's (onnxmorph/methods/registry.py; `METHODS` lists them,
    the README says when to choose each): one-shot criteria ("l1", "fpgm", "apoz",
    "activation", "taylor"), "uniform", or structure learning on `data` (a loader file):
    "gates", "gdp", "gamma", "group-lasso". "auto" picks "gates" when data is given, else
    "l1". Criteria that read data use `calibration_batches` batches of it; with data, the
    one-shot methods fine-tune the pruned model on it (`training["finetune_steps"]`).
    `training` takes TrainOptions' fields, e.g. {"optimizer": "ranger", "ranger": {...},
    "lr_schedule": "one-cycle"} (onnxmorph/training/ranger.py, schedules.py).

    verify (on by default) checks the post-conditions of onnxmorph/rewrite/postconditions.py
    and raises PostconditionError if one fails; atol/rtol are verify's tolerances.

    round_to "auto" keeps channel counts multiples of onnxruntime's CPU channel block where
    the seed's are. target "latency" prices structures with `latency_model` ("table", the
    default: measured per layer, cached or `latency_table`; "roofline": `latency_device`'s
    constants), which the report then shows too; `measure_latency` times seed and result in
    onnxruntime (`threads`, also the training sessions' threads) for the report. `batch` is
    the deployment batch size: the latency table and the measured latency use it.

    prune_embedding makes a transformer's embedding dimension (the residual stream through
    every LayerNormalization, positional embedding, projection and the head) one group.
    """
    _check_arguments(method, target, budget, 1, min_channels)
    check_tolerances(atol, rtol)
    if calibration_batches < 1:
        raise PruningError("--calibration-batches must be at least 1")
    if (training or {}).get("reinit") and data is None:
        raise PruningError("--reinit trains the pruned structure from scratch: it needs --data")
    if batch < 1 or (threads is not None and threads < 1):
        raise PruningError("--batch and --threads must be at least 1")
    chosen = resolve_method(method, data)
    method = chosen.name
    check_request(chosen, target=target, data=data,
                  resume=bool((training or {}).get("resume")))
    analysis = analyze(model, input_shapes, allow_uncounted=allow_uncounted,
                       prune_embedding=prune_embedding)
    if batch != 1:
        from onnxmorph.latency.model import check_batch

        check_batch(analysis, batch)
    if verify:
        check_seed_runs(analysis)
    rules = SelectionRules(round_to=resolve_round_to(round_to), min_channels=min_channels,
                           exclude=tuple(exclude), auto=round_to == "auto")
    if target == LATENCY_TARGET or latency_model or latency_table:
        from onnxmorph.latency import latency_model as build_latency

        analysis.cost.latency = build_latency(analysis, kind=latency_model or "table",
                                              threads=threads, batch=batch,
                                              table_path=latency_table, device=latency_device)
    if threads and data is not None:
        training = {**(training or {}), "threads": threads}
    request = MethodInput(analysis=analysis, target=target, budget=budget, rules=rules,
                          data=data, training=dict(training or {}),
                          calibration_batches=calibration_batches)
    start = time.perf_counter()
    selection = chosen.select(request)
    extra: dict = {**selection.extra, "method_seconds": time.perf_counter() - start,
                   "round_to": rules.round_to if round_to != "auto" else f"auto ({rules.round_to})"}
    alive, sliced = selection.alive, selection.model
    if sliced is None:
        sliced_result = slice_channels(analysis, alive)
        alive, sliced = sliced_result.alive, sliced_result.model
        if verify:  # the slice itself, before any training changes its weights
            extra["verify"] = check_sliced(analysis, sliced, atol=atol, rtol=rtol)
        if data is not None:  # the one-shot baselines with fine-tuning, as in the literature
            from onnxmorph.methods.gated import finetune_on_data

            sliced, tuned = finetune_on_data(analysis.loaded.model, sliced, data,
                                             **(training or {}))
            extra.update(tuned)
    if analysis.uncounted:  # allowed, so the report says which MACs it leaves out
        extra["uncounted"] = [u.to_dict() for u in analysis.uncounted]
    result = PruneResult(model=sliced, analysis=analysis, alive=alive, method=method,
                         target=target, budget=budget, extra=extra)
    if verify:
        _check_trained_result(result, data)
    if measure_latency or analysis.cost.latency is not None:
        from onnxmorph.latency.report import latency_report

        result.extra["latency"] = latency_report(analysis, alive, sliced,
                                                 expr=analysis.cost.latency,
                                                 measure=measure_latency, threads=threads,
                                                 batch=batch)
    return result


def _check_trained_result(result: PruneResult, data) -> None:
    """A trained result: a method that sliced by itself verified its slice before training
    (gates with the gates folded, gdp with them absorbed, …: its "verify_…" entries), which
    must have passed; the trained model must pass the checker, load and run like the seed."""
    for key, check in result.extra.items():
        if key.startswith("verify_") and isinstance(check, dict) and "passed" in check:
            require_passed(check, f"verify ({key.removeprefix('verify_').replace('_', ' ')}, "
                                  "before fine-tuning)")
    if data is not None:
        loaded = result.analysis.loaded
        result.extra["postconditions"] = check_trained(loaded.model, result.model,
                                                       loaded.input_shapes)


def _check_arguments(method, target, budget, round_to, min_channels) -> None:
    names = ("auto", *method_names())  # METHODS, plus methods registered since the import
    if method not in names:
        raise PruningError(f"unknown method '{method}'; use one of {', '.join(names)}")
    if target not in (*TARGETS, LATENCY_TARGET):
        raise PruningError(f"unknown target '{target}'; use one of "
                           f"{', '.join((*TARGETS, LATENCY_TARGET))}")
    check_budget(budget)
    if round_to < 1 or min_channels < 0:
        raise PruningError("--round-to must be at least 1 and --min-channels at least 0")
