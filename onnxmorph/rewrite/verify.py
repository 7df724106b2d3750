"""Check that a pruned model computes what the seed computes with removed channels zeroed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from onnxmorph.errors import ModelLoadError
from onnxmorph.graph.analysis import Analysis, analyze
from onnxmorph.graph.model_file import read_model_file
from onnxmorph.rewrite.slice_model import removed_channels
from onnxmorph.rewrite.zero_channels import zero_removed_channels

DEFAULT_TOLERANCE = 1e-4


@dataclass
class VerifyReport:
    max_abs_diff: float
    output_scale: float
    tolerance: float
    outputs: dict[str, float]  # output name → max abs difference

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.output_scale, 1e-12)

    @property
    def passed(self) -> bool:
        return self.relative_diff <= self.tolerance

    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "max_abs_diff": self.max_abs_diff,
            "relative_diff": self.relative_diff, "output_scale": self.output_scale,
            "tolerance": self.tolerance, "outputs": self.outputs,
        }


def verify_models(
    seed: str | os.PathLike | onnx.ModelProto | Analysis,
    pruned: str | os.PathLike | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    trials: int = 2,
    random_seed: int = 0,
) -> VerifyReport:
    """Run both models in onnxruntime on the same random inputs and compare outputs."""
    analysis = seed if isinstance(seed, Analysis) else analyze(seed, input_shapes)
    pruned_model = pruned if isinstance(pruned, onnx.ModelProto) else read_model_file(pruned)
    reference = zero_removed_channels(
        analysis.loaded.model, analysis.channels.layouts, analysis.loaded.shapes,
        _keep_masks(analysis, removed_channels(pruned_model)),
    )
    seed_session, pruned_session = _session(reference), _session(pruned_model)
    rng = np.random.default_rng(random_seed)
    diffs: dict[str, float] = {}
    scale = 0.0
    for _ in range(trials):
        feeds = random_inputs(analysis, rng)
        expected = seed_session.run(None, feeds)
        got = pruned_session.run(None, feeds)
        names = [o.name for o in seed_session.get_outputs()]
        for name, want, have in zip(names, expected, got):
            if want.shape != have.shape:
                raise ModelLoadError(
                    f"output '{name}' has shape {have.shape} in the pruned model but "
                    f"{want.shape} in the seed; the models do not belong together"
                )
            diff = float(np.max(np.abs(want.astype(np.float64) - have))) if want.size else 0.0
            diffs[name] = max(diffs.get(name, 0.0), diff)
            scale = max(scale, float(np.max(np.abs(want))) if want.size else 0.0)
    return VerifyReport(max_abs_diff=max(diffs.values(), default=0.0), output_scale=scale,
                        tolerance=tolerance, outputs=diffs)


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


def random_inputs(analysis: Analysis, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    types = {i.name: i.type.tensor_type.elem_type for i in analysis.loaded.model.graph.input}
    for name, shape in analysis.loaded.input_shapes.items():
        dtype = onnx.helper.tensor_dtype_to_np_dtype(types[name])
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
