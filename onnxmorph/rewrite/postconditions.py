"""Post-conditions every model onnxmorph writes must meet, checked before anything is written.

- a sliced model (prune l1/uniform/gates before fine-tuning, expand W <= 1, expand W > 1 whose
  new channels are silent): onnx's full checker, loads in onnxruntime, and `verify` against the
  seed with the removed channels zeroed at two batch sizes;
- a model whose weights were trained after slicing (prune --data, finetune): its slice is
  verified before training where one exists; the trained model itself passes the checker,
  loads, and runs at two batch sizes with output shapes equal to the seed's and finite values
  wherever the seed's are finite. Trained weights cannot be compared numerically with anything.

A failure raises PostconditionError: exit code 1, one line naming the check and the first
offending node (or output).
"""

from __future__ import annotations

import re

import numpy as np
import onnx

from onnxmorph.errors import ModelLoadError, OnnxMorphError
from onnxmorph.graph.analysis import Analysis
from onnxmorph.rewrite.verify import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    SeedRunError,
    VerifyReport,
    check_same_inputs,
    default_batch_sizes,
    random_feeds,
    seed_fails,
    session_for,
    verify_models,
)


class PostconditionError(OnnxMorphError):
    """A model onnxmorph made fails a post-condition: a bug in onnxmorph, not bad input."""

    exit_code = 1


_NODE_PATTERNS = (
    re.compile(r"[Nn]ame: ?'([^']+)'"),          # onnxruntime: "… node. Name:'conv1' …"
    re.compile(r"[Nn]ode \(([^)]+)\)"),         # onnxruntime: "Node (conv1) Op (Conv) …"
    re.compile(r"[Nn]ame: ([^\s]+) OpType"),     # onnx checker: "name: conv1 OpType: Conv"
    re.compile(r"node[^']*'([^']+)'"),
)


def offending_node(message: str) -> str | None:
    for pattern in _NODE_PATTERNS:
        match = pattern.search(message)
        if match:
            return match.group(1)
    return None


def _fail(check: str, message: str, where: str | None = None) -> PostconditionError:
    """`where`: "output 'y'"; by default the node the message names."""
    node = offending_node(message)
    where = where or (f"node '{node}'" if node else None)
    first = " ".join(message.replace("\x1b", "").split())
    if len(first) > 300:
        first = first[:297] + "..."
    at = f" at {where}" if where else ""
    return PostconditionError(
        f"post-condition '{check}' failed{at}: {first} — nothing was written; this is a bug "
        "in onnxmorph, please report it with the model")


def check_valid(model: onnx.ModelProto) -> None:
    """onnx.checker with the full check (strict shape inference)."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:  # ValidationError, InferenceError and friends
        raise _fail("onnx.checker", str(exc)) from exc


def check_loads(model: onnx.ModelProto):
    """The model loads in onnxruntime; returns its session."""
    try:
        return session_for(model)
    except Exception as exc:
        raise _fail("loads in onnxruntime", str(exc), _unregistered_op(model, str(exc))) from exc


def _unregistered_op(model: onnx.ModelProto, message: str) -> str | None:
    """onnxruntime names the op it lacks ("com.example:Relu(-1) is not a registered …"),
    not the node: the first node of that op is the one to look at."""
    match = re.search(r"([\w.]*):(\w+)\(-?\d+\) is not a registered", message)
    if not match:
        return None
    domain, op_type = match.groups()
    for node in model.graph.node:
        if node.op_type == op_type and node.domain in (domain, "ai.onnx" if not domain else ""):
            return f"node '{node.name}' ({op_type})"
    return None


def check_seed_runs(seed: Analysis) -> None:
    """Before any work: the seed loads and runs in onnxruntime at its analysed shapes — else
    nothing made from it could be verified, and the fault is the seed's (exit code 2)."""
    try:
        session = session_for(seed.loaded.model)
    except Exception as exc:
        raise seed_fails("does not load", exc) from exc
    feeds = random_feeds(seed.loaded.model, seed.loaded.input_shapes, np.random.default_rng(0))
    try:
        outputs = session.run(None, feeds)
    except Exception as exc:
        raise seed_fails("fails to run", exc) from exc
    batches = default_batch_sizes(seed.loaded.model, seed.loaded.input_shapes)
    if batches[1] != batches[0]:
        # A dynamic batch the seed does not really have (a broadcast that takes over axis 0)
        # would fail only in verify, as if onnxmorph had sliced it wrongly.
        other = random_feeds(seed.loaded.model, seed.loaded.input_shapes,
                             np.random.default_rng(0), batches[1])
        try:
            session.run(None, other)
        except Exception as exc:
            raise seed_fails(f"declares a dynamic batch but fails to run at batch "
                             f"{batches[1]}", exc) from exc
    for output, value in zip(session.get_outputs(), outputs):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            # Removing a channel that makes NaN is not the same as zeroing it: nothing made
            # from this seed could be verified.
            raise SeedRunError(
                f"the seed model's output '{output.name}' is not finite (NaN or inf) on "
                "standard-normal inputs, so onnxmorph cannot verify what it makes from it; "
                "fix the model, or skip the checks with --no-verify")


def check_sliced(seed: Analysis, model: onnx.ModelProto, *,
                 atol: float | None = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> dict:
    """Checker, loads, and `verify` against the seed at two batch sizes; the verify report."""
    check_valid(model)
    check_loads(model)
    report = _verified(seed, model, atol, rtol)
    if not report.passed:
        raise _fail("verify", report.summary(), f"output '{report.worst_output}'")
    return report.to_dict()


def require_passed(report: dict, check: str) -> None:
    """A verify report made elsewhere (the gates folded before fine-tuning) must pass."""
    if not report.get("passed", False):
        raise _fail(check, f"max |a-b| {report.get('max_abs_diff', float('nan')):.3e} "
                    f"(atol {report.get('atol') or 'auto'}, rtol {report.get('rtol')})",
                    f"output '{report.get('worst_output')}'")


def _verified(seed: Analysis, model: onnx.ModelProto, atol: float | None,
              rtol: float) -> VerifyReport:
    try:
        return verify_models(seed, model, atol=atol, rtol=rtol)
    except ModelLoadError as exc:  # shapes that differ from the seed's
        raise _fail("verify", str(exc)) from exc
    except OnnxMorphError:
        raise
    except Exception as exc:  # onnxruntime failing to run, e.g. at the second batch size
        raise _fail("verify (runs at two batch sizes)", str(exc)) from exc


def check_trained(seed_model: onnx.ModelProto, model: onnx.ModelProto,
                  input_shapes: dict[str, tuple[int, ...]]) -> dict:
    """Checker, loads, and runs at two batch sizes with the seed's output shapes and finite
    values wherever the seed's are finite."""
    check_valid(model)
    session = check_loads(model)
    try:
        check_same_inputs(seed_model, model, "the seed", "the written model")
    except OnnxMorphError as exc:
        raise _fail("same inputs as the seed", str(exc)) from exc
    try:
        reference = session_for(seed_model)
    except Exception as exc:
        raise seed_fails("does not load", exc) from exc
    names = [o.name for o in reference.get_outputs()]
    rng = np.random.default_rng(0)
    batches = default_batch_sizes(seed_model, input_shapes)
    for batch in batches:
        feeds = random_feeds(seed_model, input_shapes, rng, batch)
        try:
            expected = reference.run(names, feeds)
        except Exception as exc:
            raise seed_fails(f"fails to run at batch {batch}", exc) from exc
        try:
            got = session.run(names, feeds)
        except Exception as exc:
            raise _fail(f"runs at batch {batch}", str(exc)) from exc
        for name, want, have in zip(names, expected, got):
            if want.shape != have.shape:
                raise _fail("output shapes equal the seed's",
                            f"shape {have.shape}, the seed's {want.shape} at batch {batch}",
                            f"output '{name}'")
            bad = ~np.isfinite(have) & np.isfinite(want) if have.dtype.kind == "f" else None
            if bad is not None and bad.any():
                raise _fail("finite outputs", f"{int(bad.sum())} values are not finite at "
                            f"batch {batch}", f"output '{name}'")
    return {"passed": True, "checks": ["onnx.checker", "loads", "output shapes", "finite"],
            "batch_sizes": batches}
