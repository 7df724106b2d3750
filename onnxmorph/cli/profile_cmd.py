"""`onnxmorph profile MODEL`: measure each weight layer's onnxruntime latency over widths."""

from __future__ import annotations

import json

import click

from onnxmorph.cli.options import input_shape_option, json_option, latency_table_option
from onnxmorph.cli.table import unpriced_lines


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--runtime", type=click.Choice(["ort-cpu"]), default="ort-cpu", show_default=True,
              help="The runtime the pruned model will be deployed on.")
@click.option("--threads", type=int, help="onnxruntime intra-op threads (default: its own).")
@click.option("--batch", type=int, default=1, show_default=True, help="Batch size to time.")
@latency_table_option
@click.option("--force", is_flag=True, help="Measure again even if a table exists.")
@input_shape_option
@json_option
def profile(model: str, runtime: str, threads: int | None, batch: int,
            latency_table: str | None, force: bool, input_shapes: tuple[str, ...],
            as_json: bool) -> None:
    """Measure the latency table `prune --target latency` uses (cached per model, machine,
    runtime version, threads and batch; --latency-table FILE keeps it where you say)."""
    from onnxmorph.graph import analyze, parse_input_shapes
    from onnxmorph.latency.expr import latency_expr
    from onnxmorph.latency.model import measured_table

    analysis = analyze(model, parse_input_shapes(input_shapes))
    def progress(done: int, total: int) -> None:
        if not as_json:
            click.echo(f"\rprofiling layer configurations: {done}/{total}", nl=done == total,
                       err=True)

    table, path, measured = measured_table(
        analysis, runtime=runtime, threads=threads, batch=batch, table_path=latency_table,
        progress=progress, remeasure=force)
    expr = latency_expr(analysis, table)
    weights_ms, others_ms = expr.split()
    summary = {"table": str(path), "measured_now": measured, **table.info,
               "seed_ms": weights_ms + others_ms, "seed_ms_weight_layers": weights_ms,
               "seed_ms_other_ops": others_ms, "unpriced_ops": expr.unpriced}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    state = "measured" if measured else "cached (use --force to measure again)"
    click.echo(f"latency table: {path} ({state})")
    click.echo(f"{table.info.get('layers')} layers, {table.info.get('configs')} distinct "
               f"configurations, {table.info.get('measurements')} measurements in "
               f"{table.info.get('seconds')} s")
    click.echo(f"predicted seed latency: {summary['seed_ms']:.3f} ms (weight layers "
               f"{weights_ms:.3f} ms, other ops {others_ms:.3f} ms, {len(expr.fused)} of them "
               "fused into a Conv)")
    for line in unpriced_lines(expr.unpriced, "NOT PRICED"):
        click.echo(line)
    if table.info.get("warning"):
        click.echo(f"warning: {table.info['warning']}", err=True)
