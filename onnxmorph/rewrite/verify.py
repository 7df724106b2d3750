"""Check that a pruned model computes what the seed computes with removed channels zeroed.

Outputs `a` (pruned) and `b` (seed, channels zeroed) agree when `|a - b| <= atol + rtol*|b|`
element by element — numpy's allclose form, so outputs near zero are judged by `atol` and
large ones by `rtol`. float32 rounding in an element is set by the size of the sums behind it,
not by the element itself (an element near 0 of a layer whose outputs reach 700 carries ~1e-4
of noise), so `atol` by default is 1e-5 × max(1, largest |b| of that output): near-zero outputs
(a text detector's ~1e-8 maps) are judged at 1e-5, never relative to their own tiny scale.
A dynamic batch is run at two sizes: a batch folded into a constant fails at the second.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxmorph.errors import ModelLoadError, OnnxMorphError
from onnxmorph.graph.analysis import Analysis, analyze
from onnxmorph.graph.model_file import read_model_file
from onnxmorph.graph.shapes import graph_inputs
from onnxmorph.rewrite.slice_model import pruned_embedding, removed_channels
from onnxmorph.rewrite.zero_channels import zero_removed_channels

# float32 sums of a few thousand terms in a different order differ by ~1e-6 relative.
DEFAULT_ATOL = None  # auto: AUTO_ATOL × max(1, largest |b| of the output)
AUTO_ATOL = 1e-5
DEFAULT_RTOL = 1e-3
SECOND_BATCH = 3


class ToleranceError(OnnxMorphError):
    """--atol/--rtol is negative or not a number."""


class InputMismatchError(OnnxMorphError):
    """Two models that are compared do not take the same inputs."""


class SeedRunError(OnnxMorphError):
    """The seed model itself does not load or run in onnxruntime: bad input, not a bug."""


def seed_fails(what: str, exc: Exception) -> SeedRunError:
    message = " ".join(str(exc).split())
    return SeedRunError(f"the seed model {what} in onnxruntime ({message[:300]}); onnxmorph "
                        "needs a model that runs: check it with onnxruntime first")


@dataclass
class VerifyReport:
    max_abs_diff: float
    atol: float | None  # None: auto (see AUTO_ATOL)
    rtol: float
    outputs: dict[str, float]  # output name → max abs difference
    worst_excess: float = 0.0  # max of |a-b| - (atol + rtol*|b|); <= 0 passes
    worst_output: str | None = None
    used_atol: dict[str, float] = field(default_factory=dict)  # output → atol applied
    batch_sizes: list[int] = field(default_factory=list)
    failed_batch: int | None = None

    @property
    def passed(self) -> bool:
        return self.worst_excess <= 0.0

    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "max_abs_diff": self.max_abs_diff, "atol": self.atol,
            "rtol": self.rtol, "atol_used": self.used_atol, "worst_excess": self.worst_excess,
            "worst_output": self.worst_output, "batch_sizes": self.batch_sizes,
            "failed_batch": self.failed_batch, "outputs": self.outputs,
        }

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        where = (f", worst at output '{self.worst_output}' batch {self.failed_batch}"
                 if not self.passed else "")
        return (f"{verdict}: max |a-b| {self.max_abs_diff:.3e} (allowed atol {self.atol_text()} "
                f"+ rtol {self.rtol:g} × |b|), batch sizes "
                f"{', '.join(map(str, self.batch_sizes))}{where}")


    def atol_text(self) -> str:
        if self.atol is not None:
            return f"{self.atol:g}"
        used = max(self.used_atol.values(), default=AUTO_ATOL)
        return f"{used:.2g} (auto: {AUTO_ATOL:g} × max(1, max |b|))"


def check_tolerances(atol: float | None, rtol: float) -> None:
    for name, value in (("--atol", atol), ("--rtol", rtol)):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ToleranceError(f"{name} must be a finite number >= 0 (got {value})")


def check_same_inputs(first: onnx.ModelProto, second: onnx.ModelProto,
                      first_label: str, second_label: str) -> None:
    """Models that are fed the same inputs must name them alike."""
    a = [i.name for i in graph_inputs(first)]
    b = [i.name for i in graph_inputs(second)]
    if sorted(a) != sorted(b):
        raise InputMismatchError(
            f"the models take different inputs: {first_label} has {', '.join(a) or 'none'}, "
            f"{second_label} has {', '.join(b) or 'none'}; compare models with the same inputs")


def verify_models(
    seed: str | os.PathLike | onnx.ModelProto | Analysis,
    pruned: str | os.PathLike | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    atol: float | None = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    batch_sizes: Sequence[int] | None = None,
    random_seed: int = 0,
) -> VerifyReport:
    """Run both models in onnxruntime on the same random inputs and compare outputs, once per
    batch size (default: the analysed batch and 3 when the batch is dynamic, else the fixed
    batch twice with different inputs)."""
    check_tolerances(atol, rtol)
    # verify compares outputs and reports no cost: a MAC it cannot count is no reason to stop.
    pruned_model = pruned if isinstance(pruned, onnx.ModelProto) else read_model_file(pruned)
    # The seed's tensors are laid out as the pruning saw them (embedding as a group or not).
    analysis = (seed if isinstance(seed, Analysis)
                else analyze(seed, input_shapes, allow_uncounted=True,
                             prune_embedding=pruned_embedding(pruned_model)))
    check_same_inputs(analysis.loaded.model, pruned_model, "the seed", "the pruned model")
    reference = zero_removed_channels(
        analysis.loaded.model, analysis.channels.layouts, analysis.loaded.shapes,
        _keep_masks(analysis, removed_channels(pruned_model)),
    )
    try:
        seed_session = session_for(reference)
    except Exception as exc:
        raise seed_fails("does not load", exc) from exc
    pruned_session = session_for(pruned_model)
    rng = np.random.default_rng(random_seed)
    report = VerifyReport(max_abs_diff=0.0, atol=atol, rtol=rtol, outputs={},
                          worst_excess=-math.inf)
    for batch in batch_sizes or default_batch_sizes(analysis.loaded.model,
                                                    analysis.loaded.input_shapes):
        feeds = random_inputs(analysis, rng, batch)
        expected = _reference_outputs(seed_session, feeds, batch, analysis)
        got = pruned_session.run(None, feeds)
        names = [o.name for o in seed_session.get_outputs()]
        for name, want, have in zip(names, expected, got):
            if want.shape != have.shape:
                raise ModelLoadError(
                    f"output '{name}' has shape {have.shape} in the pruned model but "
                    f"{want.shape} in the seed at batch {batch}; the models do not belong "
                    "together")
            used = atol if atol is not None else auto_atol(want)
            report.used_atol[name] = max(report.used_atol.get(name, 0.0), used)
            diff, excess = compare_outputs(have, want, used, rtol)
            report.outputs[name] = max(report.outputs.get(name, 0.0), diff)
            if excess > report.worst_excess:
                report.worst_excess, report.worst_output = excess, name
                report.failed_batch = batch if excess > 0 else None
        report.batch_sizes.append(batch)
    report.max_abs_diff = max(report.outputs.values(), default=0.0)
    if not report.outputs:
        report.worst_excess = -1.0
    return report


def auto_atol(want: np.ndarray) -> float:
    finite = np.abs(want[np.isfinite(want)]) if want.dtype.kind == "f" else np.abs(want)
    return AUTO_ATOL * max(1.0, float(finite.max()) if finite.size else 1.0)


def compare_outputs(have: np.ndarray, want: np.ndarray, atol: float,
                    rtol: float) -> tuple[float, float]:
    """(max |a-b|, max of |a-b| - atol - rtol*|b|); NaN where both are NaN counts as equal."""
    if not want.size:
        return 0.0, -atol
    a, b = have.astype(np.float64), want.astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))  # equal infinities too
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, counted as infinitely apart
        diff = np.where(same, 0.0, np.abs(a - b))
    diff = np.where(np.isnan(diff), np.inf, diff)
    excess = np.where(same, -atol, diff - atol - rtol * np.abs(np.nan_to_num(b)))
    return float(diff.max()), float(excess.max())


def default_batch_sizes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]],
                        ) -> list[int]:
    first = next(iter(input_shapes.values()), (1,))
    batch = first[0] if first else 1
    if not dynamic_batch_inputs(model):
        return [batch, batch]
    return [batch, SECOND_BATCH if batch != SECOND_BATCH else 1]


def dynamic_batch_inputs(model: onnx.ModelProto) -> set[str]:
    """Inputs whose leading dimension is not fixed in the model."""
    names = set()
    for inp in graph_inputs(model):
        dims = inp.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            names.add(inp.name)
    return names


def _keep_masks(analysis: Analysis, removed: dict[str, list[int]]) -> dict[str, np.ndarray]:
    masks = {}
    for name, indices in removed.items():
        layout = analysis.channels.layouts.get(name)
        if layout is None:
            raise ModelLoadError(
                f"the pruned model removed channels of '{name}', which the seed does not "
                "have; compare the pruned model with the seed it was made from"
            )
        mask = np.ones(layout.ids.size, dtype=bool)
        mask[np.asarray(indices, dtype=np.int64)] = False
        masks[name] = mask.reshape(layout.ids.shape)
    return masks


def random_inputs(analysis: Analysis, rng: np.random.Generator,
                  batch: int | None = None) -> dict[str, np.ndarray]:
    return random_feeds(analysis.loaded.model, analysis.loaded.input_shapes, rng, batch)


def random_feeds(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]],
                 rng: np.random.Generator, batch: int | None = None) -> dict[str, np.ndarray]:
    """Standard-normal float inputs (zeros for other types) at `input_shapes`, with the
    leading dimension of dynamic-batch inputs set to `batch`."""
    feeds = {}
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    dynamic = dynamic_batch_inputs(model) if batch is not None else set()
    for name, shape in input_shapes.items():
        if name in dynamic and shape:
            shape = (batch, *shape[1:])
        dtype = onnx.helper.tensor_dtype_to_np_dtype(types[name])
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds


def session_for(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as exceptions; no copy on stderr
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])



def _reference_outputs(session, feeds: dict[str, np.ndarray], batch: int,
                       analysis: Analysis) -> list[np.ndarray]:
    """The zeroed seed's outputs at `batch`. A channel axis merged with the batch (attention
    heads as [T, B·H, D]) gets a zero mask that only broadcasts at the analysed batch; then each
    sample is run alone at that batch and the results are joined along the batch axis."""
    try:
        return session.run(None, feeds)
    except Exception as exc:
        analysed = {shape[0] for shape in analysis.loaded.input_shapes.values() if shape}
        if analysed != {1} or batch == 1:
            raise seed_fails(f"fails to run at batch {batch}", exc) from exc
        try:
            alone = [session.run(None, {name: value[i:i + 1] for name, value in feeds.items()})
                     for i in range(batch)]
        except Exception:
            raise seed_fails(f"fails to run at batch {batch}", exc) from exc
        return [np.concatenate(parts) for parts in zip(*alone)]
