"""`onnxmorph analyze MODEL`: channel groups and cost of a seed model."""

from __future__ import annotations

import json

import click

from onnxmorph.cli.options import (
    allow_uncounted_option,
    batch_option,
    check_ranges,
    input_shape_option,
    json_option,
    latency_device_option,
    latency_model_option,
    latency_table_option,
    prune_embedding_option,
    threads_option,
)
from onnxmorph.cli.table import format_count, render_table, unpriced_lines


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@input_shape_option
@json_option
@click.option("--all-groups", is_flag=True, help="List non-prunable groups too.")
@allow_uncounted_option
@prune_embedding_option
@latency_model_option
@latency_table_option
@latency_device_option
@threads_option
@batch_option
def analyze(model: str, input_shapes: tuple[str, ...], as_json: bool, all_groups: bool,
            allow_uncounted: bool, prune_embedding: bool, latency_model: str | None,
            latency_table: str | None, latency_device: str, threads: int | None,
            batch: int) -> None:
    """Show MACs, parameters (and, when asked, predicted latency) and the channel groups."""
    from onnxmorph.graph import analyze as run_analysis
    from onnxmorph.graph import parse_input_shapes

    check_ranges({"--threads": threads, "--batch": batch})
    result = run_analysis(model, parse_input_shapes(input_shapes),
                          allow_uncounted=allow_uncounted, prune_embedding=prune_embedding)
    summary = result.to_dict()
    if latency_model or latency_table:
        from onnxmorph.latency import latency_model as build_latency

        expr = build_latency(result, kind=latency_model or "table", table_path=latency_table,
                             device=latency_device, threads=threads, batch=batch)
        summary["latency_ms"] = expr()
        summary["latency_other_ops_ms"] = expr.split()[1]
        summary["latency_unpriced_ops"] = expr.unpriced
        summary["latency_model"] = latency_model or "table"
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    groups = summary["groups"]
    prunable = [g for g in groups if g["prunable"]]
    click.echo(f"model:   {model}")
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in summary["input_shapes"].items())
    click.echo(f"inputs:  {shapes}")
    click.echo(f"MACs:    {format_count(summary['macs'])}")
    click.echo(f"params:  {format_count(summary['params'])}")
    if "latency_ms" in summary:
        click.echo(f"latency: {summary['latency_ms']:.3f} ms predicted "
                   f"({summary['latency_model']}; ops other than weight layers: "
                   f"{summary['latency_other_ops_ms']:.3f} ms)")
        for line in unpriced_lines(summary["latency_unpriced_ops"]):
            click.echo(line)
    for node in summary["uncounted"]:
        click.echo(f"NOT COUNTED in MACs: {node['op_type']} '{node['node']}' ({node['reason']})")
    click.echo(f"groups:  {len(groups)} ({len(prunable)} prunable, "
               f"{sum(g['channels'] for g in prunable)} prunable channels)")
    shown = groups if all_groups else prunable
    rows = [
        [str(g["id"]), str(g["channels"]), "yes" if g["prunable"] else "no",
         format_count(g["macs"]), _layers(g["layers"]), g["reason"] or ""]
        for g in sorted(shown, key=lambda g: -g["macs"])
    ]
    click.echo("")
    click.echo(render_table(["group", "channels", "prunable", "MACs", "layers", "why not"], rows))
    hidden = len(groups) - len(shown)
    if hidden:
        click.echo(f"({hidden} non-prunable groups hidden; --all-groups shows them)")


def _layers(names: list[str], limit: int = 2, width: int = 36) -> str:
    # Exported names are long paths; their ends say which layer it is.
    short = [n if len(n) <= width else "…" + n[-(width - 1):] for n in names[:limit]]
    more = f", … (+{len(names) - limit})" if len(names) > limit else ""
    return ", ".join(short) + more
