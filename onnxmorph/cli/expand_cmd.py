"""`onnxmorph expand MODEL --width W`: scale every layer's width (MorphNet's expand step)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxmorph.cli.options import (
    allow_uncounted_option,
    check_range,
    check_ranges,
    input_shape_option,
    json_option,
    round_to_number,
    round_to_option,
    tolerance_options,
    verify_option,
)


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output path (default: MODEL's name + .expanded.onnx, next to it).")
@click.option("--width", type=float, help="Width multiplier: < 1 slices, > 1 grows.")
@click.option("--budget", type=float,
              help="Largest width whose cost is at most this fraction of MODEL's (may be > 1).")
@click.option("--target", type=click.Choice(["flops", "params"]), default="flops",
              show_default=True)
@round_to_option
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed of the new channels' weights.")
@verify_option
@tolerance_options
@input_shape_option
@allow_uncounted_option
@json_option
def expand(model: str, output: str | None, width: float | None, budget: float | None,
           target: str, round_to: str, seed: int, verify: bool, atol: float | None, rtol: float,
           input_shapes: tuple[str, ...], allow_uncounted: bool, as_json: bool) -> None:
    """Multiply every prunable group's channel count by a width."""
    from onnxmorph.expand import expand as run_expand
    from onnxmorph.graph import parse_input_shapes
    from onnxmorph.io import check_output_path, sidecar

    out = Path(output) if output else Path(model).with_name(Path(model).stem + ".expanded.onnx")
    check_range("--budget", budget, above=0)  # may exceed 1: expand grows
    check_ranges({"--width": width, "--round-to": round_to_number(round_to), "--seed": seed,
                  "--atol": atol, "--rtol": rtol})
    for path in (out, sidecar(out, "report.json")):
        check_output_path(path, inputs=[model])
    result = run_expand(model, width=width, budget=budget, target=target, round_to=round_to,
                        input_shapes=parse_input_shapes(input_shapes), seed=seed,
                        verify=verify, atol=atol, rtol=rtol, allow_uncounted=allow_uncounted)
    paths = result.save(out)
    if as_json:
        click.echo(json.dumps({**result.report, "files": {k: str(v) for k, v in paths.items()}},
                              indent=2))
        return
    report = result.report
    click.echo(f"width {result.width:g}: MACs {report['seed']['macs']} → "
               f"{report['expanded']['macs']}, params {report['seed']['params']} → "
               f"{report['expanded']['params']}")
    for group, why in report["not_grown"].items():
        click.echo(f"group {group} kept its width: {why}")
    for kind, path in paths.items():
        click.echo(f"wrote {kind}: {path}")
