"""Lazy access to onnxruntime's training modules without importing torch.

`import onnxruntime.training` imports `onnxruntime.training.optim`, whose modules import
torch (microsoft/onnxruntime#22070). The on-device training pieces we use (`artifacts`,
`onnxblock`, `api`) do not need it, so we register an empty stand-in for `optim` first.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from typing import Any

from onnxmorph.errors import TrainingError

_OPTIM = "onnxruntime.training.optim"


def import_training_modules() -> tuple[Any, Any, Any]:
    """Return `(artifacts, onnxblock, api)` from onnxruntime.training, torch-free."""
    if _OPTIM not in sys.modules:
        stub = types.ModuleType(_OPTIM)
        stub.__doc__ = "onnxmorph stand-in: the real module imports torch, which we do not need."
        sys.modules[_OPTIM] = stub
    try:
        from onnxruntime.training import api, artifacts, onnxblock
    except ImportError as exc:  # plain onnxruntime, or a broken install
        raise TrainingError(
            "onnxruntime training support is missing: install onnxruntime-training-cpu==1.19.2 "
            f"(it replaces plain onnxruntime). Import failed with: {exc}"
        ) from exc
    return artifacts, onnxblock, api


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Capture C++ writes to file descriptor 2 while building artifacts.

    ORT's graph optimizer used by onnxblock logs every transformer at INFO level through a
    logger that `set_default_logger_severity` does not reach. The captured text is yielded
    (filled on exit) so a failure message can include its tail.
    """
    captured: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))
