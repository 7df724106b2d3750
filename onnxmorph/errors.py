"""Errors that onnxmorph raises for bad input; the CLI turns each into one line and exit code 2."""


class OnnxMorphError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ModelLoadError(OnnxMorphError):
    """The model file is missing, not ONNX, truncated, or points to unsafe external data."""


class UnsupportedModelError(OnnxMorphError):
    """The model is valid ONNX but uses something onnxmorph cannot handle (opset, shapes)."""


class ShapeResolutionError(OnnxMorphError):
    """A dynamic input dimension could not be resolved; the user must give --input-shape."""


class PruningError(OnnxMorphError):
    """A pruning request cannot be satisfied (bad budget, nothing prunable, ...)."""


class DataError(OnnxMorphError):
    """The user's data loader is missing, raises, or yields batches that do not fit the model."""


class TrainingError(OnnxMorphError):
    """Structure learning or fine-tuning failed (NaN loss, unreachable budget, ...)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; the CLI exits with 128 + the signal number (130, 143).

    Not an OnnxMorphError (exit code 2), and a BaseException like KeyboardInterrupt, so that
    `except Exception` blocks let it through to the CLI."""

    def __init__(self, signum: int, where: str = "") -> None:
        super().__init__(where or f"signal {signum}")
        self.signum, self.where = signum, where
