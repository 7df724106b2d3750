"""`onnxmorph verify SEED PRUNED`: does PRUNED compute what SEED does with channels zeroed?"""

from __future__ import annotations

import json

import click

from onnxmorph.cli.options import input_shape_option, json_option


@click.command()
@click.argument("seed", type=click.Path(dir_okay=False))
@click.argument("pruned", type=click.Path(dir_okay=False))
@click.option("--tolerance", type=float, default=1e-4, show_default=True,
              help="Largest allowed difference, relative to the output scale.")
@input_shape_option
@json_option
def verify(seed: str, pruned: str, tolerance: float, input_shapes: tuple[str, ...],
           as_json: bool) -> None:
    """Compare PRUNED with SEED on random inputs; exit 1 if they differ."""
    from onnxmorph.graph import parse_input_shapes
    from onnxmorph.rewrite import verify_models

    report = verify_models(seed, pruned, parse_input_shapes(input_shapes), tolerance=tolerance)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        verdict = "passed" if report.passed else "FAILED"
        click.echo(f"{verdict}: max difference {report.max_abs_diff:.3e}, relative "
                   f"{report.relative_diff:.3e} (tolerance {tolerance:g})")
    if not report.passed:
        raise SystemExit(1)
