"""`onnxmorph verify SEED PRUNED`: does PRUNED compute what SEED does with channels zeroed?"""

from __future__ import annotations

import json

import click

from onnxmorph.cli.options import check_ranges, input_shape_option, json_option, tolerance_options
from onnxmorph.errors import OnnxMorphError


class ReplacedOptionError(OnnxMorphError):
    """An option that no longer exists, with what replaced it."""


def _refuse_tolerance(ctx: click.Context, param: click.Parameter, value: float | None) -> None:
    if value is not None:  # its meaning changed: reinterpreting it silently would mislead
        raise ReplacedOptionError(
            "--tolerance (relative to the largest output) was replaced by --atol and --rtol: "
            "outputs pass where |pruned - seed| <= atol + rtol*|seed|")


@click.command()
@click.argument("seed", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@tolerance_options
@click.option("--tolerance", type=float, hidden=True, expose_value=False,
              callback=_refuse_tolerance)
@input_shape_option
@json_option
def verify(seed: str, pruned: str, atol: float | None, rtol: float, input_shapes: tuple[str, ...],
           as_json: bool) -> None:
    """Compare PRUNED with SEED on random inputs (two batch sizes when the batch is dynamic);
    exit 1 if an output differs by more than atol + rtol × |seed's output|."""
    from onnxmorph.graph import parse_input_shapes
    from onnxmorph.graph.model_file import read_model_file
    from onnxmorph.rewrite import verify_models
    from onnxmorph.rewrite.verify import check_same_inputs

    check_ranges({"--atol": atol, "--rtol": rtol})
    seed_model, pruned_model = read_model_file(seed), read_model_file(pruned)
    check_same_inputs(seed_model, pruned_model, f"'{seed}'", f"'{pruned}'")
    report = verify_models(seed_model, pruned_model, parse_input_shapes(input_shapes),
                           atol=atol, rtol=rtol)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(report.summary())
    if not report.passed:
        raise SystemExit(1)
