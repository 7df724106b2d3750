"""Op handlers, one small function per kind of op, registered by op type.

Importing this package registers every built-in handler. Adding an op means one handler in
the module of its kind (or a new module imported here) and one test.
"""

from onnxmorph.graph.handlers import (
    attention,
    contrib,
    conv,
    elementwise,
    linear,
    quantize,
    reshape,
    spatial,
    structure,
)
from onnxmorph.graph.handlers.base import (
    Coupling,
    Fresh,
    Layout,
    NodeContext,
    handler_for,
    register,
    registered_op_types,
)

__all__ = [
    "Coupling", "Fresh", "Layout", "NodeContext", "handler_for", "register",
    "registered_op_types", "attention", "conv", "elementwise", "linear", "quantize", "reshape",
    "spatial", "structure", "contrib",
]
