"""`onnxmorph eval MODEL --data loader.py`: accuracy, agreement and latency."""

from __future__ import annotations

import json

import click

from onnxmorph.cli.options import json_option


@click.command(name="eval")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--data", required=True, type=click.Path(dir_okay=False),
              help="Python file with eval_batches() (or train_batches()).")
@click.option("--reference", type=click.Path(dir_okay=False),
              help="Also report top-1 agreement with this model (e.g. the seed).")
@json_option
def evaluate_command(model: str, data: str, reference: str | None, as_json: bool) -> None:
    """Evaluate MODEL on the loader's evaluation batches."""
    from onnxmorph.graph.model_file import read_model_file
    from onnxmorph.rewrite.verify import check_same_inputs
    from onnxmorph.training.data import DataSource
    from onnxmorph.training.evaluate import evaluate

    proto = read_model_file(model)
    ref = read_model_file(reference) if reference else None
    if ref is not None:
        check_same_inputs(proto, ref, f"'{model}'", f"reference '{reference}'")
    result = evaluate(proto, DataSource.for_model(data, proto), reference=ref)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    if result.accuracy is not None:
        click.echo(f"accuracy:  {result.accuracy:.4f}")
    if result.agreement is not None:
        click.echo(f"agreement: {result.agreement:.4f} (top-1, with {reference})")
    click.echo(f"latency:   {result.latency_ms:.2f} ms per batch ({result.batches} batches, "
               f"{result.samples} samples)")
