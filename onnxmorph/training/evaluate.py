"""Evaluate a model on the user's data: accuracy, agreement with a reference, latency."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx

from onnxmorph.training.data import DataSource


@dataclass
class EvalResult:
    batches: int
    samples: int
    accuracy: float | None  # when labels exist
    agreement: float | None  # top-1 agreement with a reference model
    latency_ms: float  # mean per batch
    # ‖output − reference‖ / ‖reference‖ over all samples: regression, detection maps
    output_error: float | None = None
    # The reference writes class scores, so `agreement` means something (see is_class_scores)
    classifier: bool = True

    @property
    def class_agreement(self) -> float | None:
        """Top-1 agreement where it is meaningful (class scores), else None."""
        return self.agreement if self.classifier else None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def inference_session(model: onnx.ModelProto | str, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def evaluate(
    model: onnx.ModelProto | str, data: DataSource, reference: onnx.ModelProto | str | None = None,
    max_batches: int | None = None,
) -> EvalResult:
    session = inference_session(model)
    ref_session = inference_session(reference) if reference is not None else None
    correct = agree = samples = batches = 0
    error_sq = reference_sq = 0.0
    has_labels, classifier = True, True
    elapsed = 0.0
    for batch in data.eval():
        if max_batches is not None and batches >= max_batches:
            break
        start = time.perf_counter()
        logits = session.run(None, batch.inputs)[0]
        elapsed += time.perf_counter() - start
        predicted = _top1(logits)
        if batch.labels is None or not np.issubdtype(batch.labels.dtype, np.integer):
            has_labels = False
        else:
            correct += int((predicted == batch.labels.reshape(predicted.shape)).sum())
        if ref_session is not None:
            expected = ref_session.run(None, batch.inputs)[0]
            classifier = classifier and is_class_scores(expected)
            agree += int((_top1(expected) == predicted).sum())
            difference = logits.astype(np.float64) - expected.astype(np.float64)
            error_sq += float(np.square(difference).sum())
            reference_sq += float(np.square(expected.astype(np.float64)).sum())
        samples += batch.size
        batches += 1
    if batches == 0:
        from onnxmorph.errors import DataError

        raise DataError("the loader yielded no evaluation batches")
    return EvalResult(
        batches=batches, samples=samples,
        accuracy=correct / samples if has_labels else None,
        agreement=agree / samples if ref_session is not None else None,
        latency_ms=1000 * elapsed / batches,
        output_error=(float(np.sqrt(error_sq / reference_sq)) if reference_sq > 0
                      else float(np.sqrt(error_sq))) if ref_session is not None else None,
        classifier=classifier,
    )


def is_class_scores(output: np.ndarray) -> bool:
    """[N, K] (or [N, K, 1, 1] as SqueezeNet writes it) scores with K > 1: top-1 agreement
    is meaningful. Anything else (a box/score map, a regression value) is compared by its
    relative error."""
    return output.ndim >= 2 and output.shape[1] > 1 and all(d == 1 for d in output.shape[2:])


def quality_lines(result: EvalResult, reference: str = "the seed") -> list[str]:
    """Human lines for what could be measured: accuracy with labels, and without them the
    agreement with (classifiers) or relative output error against the reference."""
    lines = []
    if result.accuracy is not None:
        lines.append(f"accuracy:  {result.accuracy:.4f}")
    if result.class_agreement is not None:
        lines.append(f"agreement: {result.class_agreement:.4f} (top-1, with {reference})")
    if result.output_error is not None:
        lines.append(f"output error: {result.output_error:.4f} (relative L2, against "
                     f"{reference})")
    return lines


def _top1(logits: np.ndarray) -> np.ndarray:
    return np.argmax(logits.reshape(logits.shape[0], -1), axis=1)
