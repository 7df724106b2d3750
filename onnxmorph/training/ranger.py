"""Ranger: RAdam + Lookahead + Gradient Centralization, in numpy on a training session.

ONNX Runtime has no Ranger, so with `--optimizer ranger` the session skips ORT's own step and
calls `Ranger.step` instead, which reads each parameter's gradient and value from the session
and writes the new value back. Per trainable parameter p with gradient g, at step t (1-based):

1. Gradient Centralization (Yong et al., 2020), for the weights of Conv, ConvTranspose, Gemm
   and MatMul (the layer registry, graph/layers.py, says which axis holds output channels):
   g ← g − mean of g over every axis but the output-channel one. Skipped where an output
   channel has a single weight (the centred gradient would be zero).
2. RAdam (Liu et al., 2020), as the Ranger reference code writes it:
   m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²,
   ρ∞ = 2 / (1 − β2) − 1,   ρt = ρ∞ − 2 t β2ᵗ / (1 − β2ᵗ);
   decoupled weight decay p ← p − lr · wd · p; then while ρt ≤ `rectify_threshold` (the
   variance of the adaptive rate is not yet tractable) an un-adapted momentum step
   p ← p − lr · m / (1 − β1ᵗ); after, the rectified step
   p ← p − lr · r_t √(1 − β2ᵗ) / (1 − β1ᵗ) · m / (√v + ε),
   r_t = √((ρt − 4)(ρt − 2) ρ∞ / ((ρ∞ − 4)(ρ∞ − 2) ρt)).
3. Lookahead (Zhang et al., 2019): slow weights start at the parameters' values before the
   first step; every `lookahead_steps` (k) steps slow ← slow + α (p − slow) and p ← slow.

Defaults are the Ranger reference implementation's (lessw2020/Ranger-Deep-Learning-Optimizer):
β = (0.95, 0.999), ε = 1e-5, k = 6, α = 0.5, threshold 5, no weight decay, GC on. The
learning rate is the session's (`--lr`, and the schedule's per-step value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from onnxmorph.errors import TrainingError
from onnxmorph.graph.layers import LAYER_KINDS, WeightLayout
from onnxmorph.graph.onnx_utils import is_default_domain

OPTIMIZERS = ("adamw", "sgd", "ranger")
_STEP_KEY = "ranger/step"


@dataclass(frozen=True)
class RangerSettings:
    """Ranger's hyper-parameters (the learning rate is TrainOptions.learning_rate)."""

    beta1: float = 0.95
    beta2: float = 0.999
    eps: float = 1e-5
    weight_decay: float = 0.0
    lookahead_steps: int = 6  # k
    lookahead_alpha: float = 0.5  # α
    gradient_centralization: bool = True
    rectify_threshold: float = 5.0  # ρt above this: the rectified adaptive step

    def __post_init__(self) -> None:
        if not (0 <= self.beta1 < 1 and 0 < self.beta2 < 1):
            raise TrainingError("Ranger's betas must lie in [0, 1) and (0, 1)")
        if self.eps <= 0 or self.weight_decay < 0:
            raise TrainingError("Ranger's eps must be positive and its weight decay >= 0")
        if self.lookahead_steps < 1 or not 0 < self.lookahead_alpha <= 1:
            raise TrainingError("Ranger's lookahead_steps must be >= 1 and its alpha in (0, 1]")


def weight_layouts(model: onnx.ModelProto) -> dict[str, WeightLayout]:
    """Initializer name → layout, for the weights of the registry's weight layers."""
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    layouts: dict[str, WeightLayout] = {}
    for node in model.graph.node:
        kind = LAYER_KINDS.get(node.op_type) if is_default_domain(node) else None
        if kind is None or kind.weight is None or len(node.input) <= kind.weight:
            continue
        name = node.input[kind.weight]
        if name in shapes and name not in layouts:
            layout = kind.weight_layout(node, shapes[name])
            if layout is not None:
                layouts[name] = layout
    return layouts


def centralize(grad: np.ndarray, layout: WeightLayout) -> np.ndarray:
    """`grad` minus its mean over every axis but the output-channel one."""
    shaped = grad
    out_axis = layout.out_axis
    if layout.groups > 1 and out_axis == layout.grouped_axis:
        # Grouped ConvTranspose [Cin, Cout/g, k…]: output channel = (group, index in group),
        # and the groups split the input axis.
        shaped = grad.reshape(layout.groups, -1, *grad.shape[1:])
        keep = (0, out_axis + 1)
    else:
        keep = (out_axis,)
    axes = tuple(a for a in range(shaped.ndim) if a not in keep)
    if math.prod(shaped.shape[a] for a in axes) <= 1:
        return grad
    return (shaped - shaped.mean(axis=axes, keepdims=True)).reshape(grad.shape)


class Ranger:
    """Ranger's state and step over the parameters `names` of a TrainingSession."""

    def __init__(self, names: list[str], layouts: dict[str, WeightLayout],
                 settings: RangerSettings | None = None, learning_rate: float = 1e-3) -> None:
        self.names = list(names)
        self.layouts = {n: layouts[n] for n in self.names if n in layouts}
        self.settings = settings or RangerSettings()
        self.learning_rate = float(learning_rate)
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.slow: dict[str, np.ndarray] = {}

    def rectified(self, t: int) -> bool:
        """Whether step t (1-based) takes the rectified adaptive step."""
        return self._rho(t) > self.settings.rectify_threshold

    def step(self, session) -> None:
        """One update of every parameter from the session's last gradients."""
        s = self.settings
        self.t += 1
        t, lr = self.t, self.learning_rate
        rho = self._rho(t)
        if rho > s.rectify_threshold:
            rho_inf = 2 / (1 - s.beta2) - 1
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            step_size = r * math.sqrt(1 - s.beta2 ** t) / (1 - s.beta1 ** t)
        else:
            step_size = 1 / (1 - s.beta1 ** t)
        for name in self.names:
            param = session.value(name)
            grad = session.gradient(name).astype(param.dtype, copy=False)
            if s.gradient_centralization and name in self.layouts:
                grad = centralize(grad, self.layouts[name])
            if name not in self.m:
                self.m[name], self.v[name] = np.zeros_like(param), np.zeros_like(param)
                self.slow[name] = param.copy()
            m = self.m[name] = s.beta1 * self.m[name] + (1 - s.beta1) * grad
            v = self.v[name] = s.beta2 * self.v[name] + (1 - s.beta2) * grad * grad
            if s.weight_decay:
                param = param - lr * s.weight_decay * param
            if rho > s.rectify_threshold:
                param = param - lr * step_size * m / (np.sqrt(v) + s.eps)
            else:
                param = param - lr * step_size * m
            if t % s.lookahead_steps == 0:
                self.slow[name] = self.slow[name] + s.lookahead_alpha * (param - self.slow[name])
                param = self.slow[name].copy()
            session.set_parameter(name, param)

    # -- resume ---------------------------------------------------------------------------------

    def state(self) -> dict[str, np.ndarray]:
        arrays = {_STEP_KEY: np.array(self.t)}
        for kind, table in (("m", self.m), ("v", self.v), ("slow", self.slow)):
            arrays.update({f"ranger/{kind}/{name}": value for name, value in table.items()})
        return arrays

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        if _STEP_KEY not in arrays:
            raise TrainingError("the checkpoint holds no Ranger state; resume with the "
                                "optimizer it was written with, or run without --resume")
        self.t = int(arrays[_STEP_KEY])
        tables = {"m": self.m, "v": self.v, "slow": self.slow}
        for key, value in arrays.items():
            _, kind, name = key.split("/", 2) if key.count("/") >= 2 else (None, None, None)
            if kind in tables and name in self.names:
                tables[kind][name] = np.array(value)

    def save(self, path: str) -> None:
        np.savez(path, **self.state())

    def load(self, path: str) -> None:
        try:
            with np.load(path) as npz:
                self.load_state({k: npz[k] for k in npz.files})
        except OSError as exc:
            raise TrainingError(f"the Ranger state {path} is unreadable ({exc}); run again "
                                "without --resume") from exc

    def _rho(self, t: int) -> float:
        b2 = self.settings.beta2
        rho_inf = 2 / (1 - b2) - 1
        return rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)


def make_ranger(options, model: onnx.ModelProto, trainable: list[str] | tuple[str, ...],
                skip: list[str] | tuple[str, ...] = ()) -> Ranger | None:
    """The Ranger of a training phase when `options.optimizer` is "ranger" (else None):
    every trainable parameter but `skip` (the gate logits, which GateOptimizer moves)."""
    if options.optimizer != "ranger":
        return None
    names = [n for n in trainable if n not in set(skip)]
    return Ranger(names, weight_layouts(model), options.ranger, options.learning_rate)
