"""Emit the smaller model: slice initializers and fix shapes, then verify the result."""

from onnxmorph.rewrite.slice_model import SliceResult, slice_channels
from onnxmorph.rewrite.verify import VerifyReport, verify_models
from onnxmorph.rewrite.zero_channels import zero_removed_channels

__all__ = [
    "SliceResult", "VerifyReport", "slice_channels", "verify_models", "zero_removed_channels",
]
