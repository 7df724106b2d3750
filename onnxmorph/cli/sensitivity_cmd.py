"""`onnxmorph sensitivity MODEL --data loader.py`: how much each group can lose."""

from __future__ import annotations

import json
from pathlib import Path

import click

from onnxmorph.cli.options import (
    allow_uncounted_option,
    input_shape_option,
    json_option,
    prune_embedding_option,
)
from onnxmorph.methods.registry import DEFAULT_CALIBRATION_BATCHES, method_names


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Python file with train_batches() [and eval_batches()].")
@click.option("--method", type=click.Choice(list(method_names(criteria_only=True))),
              default="l1", show_default=True, help="Which channels of a group go first.")
@click.option("--fractions", default="0.25,0.5,0.75", show_default=True,
              help="Comma-separated fractions of each group's channels to remove.")
@click.option("--calibration-batches", type=int, default=DEFAULT_CALIBRATION_BATCHES,
              show_default=True, help="Batches of --data that data-aware criteria rank on.")
@click.option("--eval-batches", type=int,
              help="Evaluate on the first N evaluation batches only (default: all).")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Skip groups with a layer matching this name or glob (repeatable).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Write the report as JSON here, and the heat map next to it (.png).")
@input_shape_option
@allow_uncounted_option
@prune_embedding_option
@json_option
def sensitivity(model: str, data: str, method: str, fractions: str, calibration_batches: int,
                eval_batches: int | None, exclude: tuple[str, ...], output: str | None,
                input_shapes: tuple[str, ...], allow_uncounted: bool, prune_embedding: bool,
                as_json: bool) -> None:
    """Accuracy after removing a fraction of one group's channels, group by group."""
    from onnxmorph.errors import PruningError
    from onnxmorph.graph import parse_input_shapes
    from onnxmorph.io import check_output_path, save_json, sidecar
    from onnxmorph.plot import SKIP_NOTE
    from onnxmorph.sensitivity import sensitivity as run_sensitivity

    try:
        parsed = [float(f) for f in fractions.split(",") if f.strip()]
    except ValueError as exc:
        raise PruningError(f"--fractions '{fractions}' is not a comma-separated list of "
                           "numbers, e.g. 0.25,0.5,0.75") from exc
    if output:
        check_output_path(output)
        if Path(output).resolve() == Path(model).resolve():
            raise PruningError(f"-o '{output}' is the model itself; name a .json file")
    report = run_sensitivity(model, data=data, method=method, fractions=parsed,
                             input_shapes=parse_input_shapes(input_shapes), exclude=exclude,
                             calibration_batches=calibration_batches,
                             eval_batches=eval_batches, allow_uncounted=allow_uncounted,
                             prune_embedding=prune_embedding)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.table())
    if output:
        save_json(report.to_dict(), output)
        png = sidecar(output, "png")
        drawn = report.write_plot(png)
        if not as_json:
            click.echo(f"wrote report: {output}")
            click.echo(f"wrote plot: {png}" if drawn else f"plot: {SKIP_NOTE}")
