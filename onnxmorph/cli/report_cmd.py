"""`onnxmorph report STRUCTURE.json`: the layer table and the picture of a pruning result."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxmorph.cli.table import render_table
from onnxmorph.errors import OnnxMorphError

FORMAT = "onnxmorph-structure"


class ReportInputError(OnnxMorphError):
    """The structure file or training log given to `onnxmorph report` cannot be read."""


@click.command()
@click.argument("structure_file", metavar="STRUCTURE.json", type=click.Path(dir_okay=False))
@click.option("--log", "log_file", type=click.Path(dir_okay=False), metavar="TRAINING_LOG.jsonl",
              help="Training log written by `prune --log`: adds cost and loss curves.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), metavar="OUT.png",
              help="Picture path (default: STRUCTURE's name + .png, next to it).")
def report(structure_file: str, log_file: str | None, output: str | None) -> None:
    """Show channels per layer (seed → pruned) of a structure file and draw them to a PNG."""
    from onnxmorph.io import check_output_path
    from onnxmorph.plot import SKIP_NOTE, write_structure_plot

    structure = load_structure(structure_file)
    history = load_history(log_file) if log_file else None
    out = check_output_path(output or Path(structure_file).with_suffix(".png"))
    click.echo(_layer_table(structure["layers"]))
    if "transformer" in structure:
        click.echo(_transformer_lines(structure["transformer"]))
    if history:
        last = history[-1]
        click.echo(f"\ntraining log: {len(history)} rows, last step {last['step']}"
                   + "".join(f", {key} {last[key]:.4g}" for key in ("task_loss", "cost",
                                                                      "alive_cost_ratio")
                             if isinstance(last.get(key), (int, float))))
    if write_structure_plot(structure, out, history):
        click.echo(f"wrote plot: {out}")
    else:
        click.echo(f"plot: {SKIP_NOTE}")


def load_structure(path: str | Path) -> dict:
    """Read a `<stem>.structure.json` that `onnxmorph prune` wrote, or raise ReportInputError."""
    data = _read_json(path, "structure file")
    layers = data.get("layers") if isinstance(data, dict) else None
    if (not isinstance(data, dict) or data.get("format", FORMAT) != FORMAT
            or not isinstance(layers, dict)
            or not all(isinstance(info, dict) and _is_count(info.get("channels_before"))
                       and _is_count(info.get("channels_after")) for info in layers.values())):
        raise ReportInputError(
            f"'{path}' is not an onnxmorph structure file (the <stem>.structure.json that "
            "`onnxmorph prune` writes next to the pruned model)")
    if "transformer" in data and not _valid_transformer(data["transformer"]):
        raise ReportInputError(f"'{path}' has a malformed \"transformer\" section (heads and "
                               "MLP widths); pass the file `onnxmorph prune` wrote")
    return data


def _valid_transformer(section) -> bool:
    if not isinstance(section, dict):
        return False
    rows = [(row, keys) for key, keys in (("attention", ("heads_before", "heads_after")),
                                          ("mlp", ("units_before", "units_after")))
            for row in (section.get(key) or [])]
    return all(isinstance(row, dict) and isinstance(row.get("name"), str)
               and all(_is_count(row.get(k)) for k in keys) for row, keys in rows)


def _transformer_lines(section: dict) -> str:
    heads = ", ".join(f"{r['heads_after']}/{r['heads_before']}"
                      for r in section.get("attention") or [])
    units = ", ".join(f"{r['units_after']}/{r['units_before']}" for r in section.get("mlp") or [])
    text = f"\nheads kept per attention layer: {heads}\nMLP units per block: {units}"
    from onnxmorph.plot import embedding_widths

    widths = embedding_widths(section)
    if widths:
        text += f"\nembedding width: {widths}"
    return text


def load_history(path: str | Path) -> list[dict]:
    """Read the JSON-lines training log of `prune --log`, or raise ReportInputError."""
    text = _read_text(path, "training log")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not _is_count(row.get("step")):
            raise ReportInputError(f"training log '{path}' line {number} is not a JSON object "
                                   "with a \"step\"; pass the file `onnxmorph prune --log` wrote")
        rows.append(row)
    if not rows:
        raise ReportInputError(f"training log '{path}' is empty")
    return rows


def _read_text(path: str | Path, what: str) -> str:
    path = Path(path)
    if not path.is_file():
        raise ReportInputError(f"{what} '{path}' does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(f"cannot read {what} '{path}': {exc}") from None


def _read_json(path: str | Path, what: str):
    try:
        return json.loads(_read_text(path, what))
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{what} '{path}' is not JSON ({exc.msg}, line {exc.lineno})") \
            from None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _layer_table(layers: dict, width: int = 44) -> str:
    rows = []
    for name, info in layers.items():
        before, after = info["channels_before"], info["channels_after"]
        short = name if len(name) <= width else "…" + name[-(width - 1):]
        rows.append([short, str(info.get("op", "")), f"{before} → {after}",
                     f"{after / before:.0%}" if before else "-"])
    before = sum(i["channels_before"] for i in layers.values())
    after = sum(i["channels_after"] for i in layers.values())
    rows.append(["total", "", f"{before} → {after}", f"{after / before:.0%}" if before else "-"])
    return render_table(["layer", "op", "channels", "kept"], rows)
