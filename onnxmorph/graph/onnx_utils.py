"""Small ONNX protobuf helpers every stage uses: attribute and opset look-ups, in one place."""

from __future__ import annotations

from typing import Any

import onnx
from onnx import helper

DEFAULT_DOMAINS = ("", "ai.onnx")


def get_attribute(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    """The value of attribute `name` of `node` (ints, floats, lists, tensors…), or `default`."""
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def set_attribute(node: onnx.NodeProto, name: str, value: Any) -> None:
    """Set (replace or add) attribute `name` of `node`."""
    remove_attribute(node, name)
    node.attribute.append(helper.make_attribute(name, value))


def remove_attribute(node: onnx.NodeProto, name: str) -> None:
    for index, attribute in enumerate(node.attribute):
        if attribute.name == name:
            del node.attribute[index]
            return


def opset_versions(model: onnx.ModelProto) -> dict[str, int]:
    """Domain → imported opset version; the default domain is spelled ""."""
    return {("" if e.domain == "ai.onnx" else e.domain): e.version for e in model.opset_import}


def default_opset(model: onnx.ModelProto, fallback: int | None = None) -> int | None:
    """Version of the default ONNX domain the model imports (`fallback` if it imports none)."""
    for entry in model.opset_import:
        if entry.domain in DEFAULT_DOMAINS:
            return entry.version
    return fallback


def is_default_domain(node: onnx.NodeProto) -> bool:
    return node.domain in DEFAULT_DOMAINS
