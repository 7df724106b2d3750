"""onnxmorph: make ONNX models smaller and faster under a resource budget.

The pipeline is one straight line through the subpackages:
load → analyse (`graph`) → gate → learn (`training`) → slice → verify (`rewrite`).
"""

from onnxmorph.api import PruneResult, prune
from onnxmorph.errors import OnnxMorphError
from onnxmorph.expand import ExpandResult, expand
from onnxmorph.graph import Analysis, analyze, load_model
from onnxmorph.rewrite import verify_models as verify
from onnxmorph.sensitivity import SensitivityReport, sensitivity

__version__ = "0.1.0"

__all__ = ["Analysis", "ExpandResult", "OnnxMorphError", "PruneResult", "SensitivityReport",
           "analyze", "expand", "load_model", "prune", "sensitivity", "verify", "__version__"]
