"""A latency table: per layer, latency (ms) on a grid of (input, output) channel counts."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from onnxmorph.errors import OnnxMorphError
from onnxmorph.latency.interpolate import BilinearTable

FORMAT_VERSION = 2  # 2: prices of the ops other than weight layers ("ops", "unpriced")
READABLE_FORMATS = (1, 2)  # a format-1 table leaves those ops unpriced (the report says so)


class LatencyTableError(OnnxMorphError):
    """A latency table that cannot be read or does not describe this model."""


@dataclass
class Grid:
    grid_in: list[int]
    grid_out: list[int]
    ms: list[list[float]]  # [len(grid_in)][len(grid_out)]

    def table(self) -> BilinearTable:
        return BilinearTable.from_grid(self.grid_in, self.grid_out, self.ms)


@dataclass
class LatencyTable:
    key: dict  # what the numbers depend on: model, machine, runtime, threads, batch
    layers: dict[str, str]  # layer name → config key
    configs: dict[str, Grid]
    info: dict = field(default_factory=dict)  # how it was made: seconds, measurements …
    # Other ops (onnxmorph/latency/other_ops.py), by node name: {"ms": at the seed's widths,
    # "channels": seed channels of the output, "fused_into": Conv or None, "layout_changes"};
    # None: a table made before they were priced.
    ops: dict[str, dict] | None = None
    unpriced: dict[str, str] = field(default_factory=dict)  # node name → why no price
    overhead_ms: float = 0.0  # one session.run of a one-node model: paid once per inference

    def grid(self, layer: str) -> Grid:
        config = self.layers.get(layer)
        if config is None:
            raise LatencyTableError(
                f"the latency table has no entry for layer '{layer}'; it was made for another "
                "model: run `onnxmorph profile` on this one")
        return self.configs[config]

    def lookup(self, layer: str, cin: float, cout: float) -> float:
        return float(self.grid(layer).table()(cin, cout)[0])

    def to_dict(self) -> dict:
        return {"format": FORMAT_VERSION, "key": self.key, "info": self.info,
                "layers": self.layers,
                "configs": {k: {"grid_in": g.grid_in, "grid_out": g.grid_out, "ms": g.ms}
                            for k, g in self.configs.items()},
                "ops": self.ops, "unpriced": self.unpriced, "overhead_ms": self.overhead_ms}

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".part")
        temporary.write_text(json.dumps(self.to_dict(), indent=1))
        temporary.replace(path)  # never a half-written table
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatencyTable:
        try:
            data = json.loads(Path(path).read_text())
            if data.get("format") not in READABLE_FORMATS:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT_VERSION}")
            configs = {k: Grid(list(map(int, v["grid_in"])), list(map(int, v["grid_out"])),
                               [list(map(float, row)) for row in v["ms"]])
                       for k, v in data["configs"].items()}
            ops = data.get("ops")
            ops = None if ops is None else {str(k): {"ms": float(v["ms"]),
                                                     "channels": int(v["channels"]),
                                                     "fused_into": v.get("fused_into"),
                                                     "layout_changes": int(v.get(
                                                         "layout_changes", 0))}
                                            for k, v in ops.items()}
            return cls(key=dict(data["key"]), layers=dict(data["layers"]), configs=configs,
                       info=dict(data.get("info", {})), ops=ops,
                       overhead_ms=float(data.get("overhead_ms", 0.0)),
                       unpriced={str(k): str(v) for k, v in data.get("unpriced", {}).items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise LatencyTableError(f"cannot read latency table '{path}' ({exc}); run "
                                    "`onnxmorph profile MODEL --latency-table FILE`") from exc
