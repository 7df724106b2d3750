"""`onnxmorph sweep MODEL --data loader.py --budgets 0.3,0.5,0.75 -o OUTDIR`: one prune per
budget and seed on Ray, then the accuracy–cost Pareto front."""

from __future__ import annotations

import dataclasses
import json

import click

from onnxmorph.cli.options import (
    input_shape_option,
    json_option,
    steps_options,
    training_options,
)
from onnxmorph.cli.table import format_count, render_table
from onnxmorph.methods.registry import method_names


def _numbers(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            return [kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"'{value}' is not a comma-separated list of "
                                     f"{kind.__name__}s") from None
    return parse


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--outdir", required=True, type=click.Path(dir_okay=True, file_okay=False),
              help="Folder for the runs, pareto.json and pareto.png (created if missing).")
@click.option("--budgets", required=True, callback=_numbers(float), metavar="0.3,0.5,0.75",
              help="Fractions of the seed's cost, one run each.")
@click.option("--seeds", callback=_numbers(int), metavar="0,1",
              help="Seeds, one run per budget and seed (default: --seed).")
@click.option("--method", type=click.Choice(["auto", *method_names()]),
              default="auto", show_default=True, help="As in prune (auto: gates).")
@click.option("--calibration-batches", type=int, help="As in prune.")
@click.option("--target", default="flops", show_default=True,
              help="The cost the budgets apply to and the front is drawn on, as in prune.")
@training_options
@steps_options
# The rest default to what prune does (None: not passed on).
@click.option("--strength", type=float, help="As in prune.")
@click.option("--alive-threshold", type=float, help="As in prune.")
@click.option("--round-to", metavar="auto|N", help="As in prune (default auto).")
@click.option("--min-channels", type=int, help="As in prune.")
@click.option("--exclude", multiple=True, metavar="PATTERN", help="As in prune (repeatable).")
@click.option("--address", metavar="HOST:PORT",
              help="Run on this Ray cluster (default: a local Ray instance, no set-up).")
@click.option("--threads-per-run", type=int, default=1, show_default=True,
              help="onnxruntime threads (and Ray CPUs) of each run; a local sweep runs "
                   "cores / this many runs at once.")
@input_shape_option
@json_option
def sweep(model: str, outdir: str, budgets: list[float], seeds: list[int] | None, method: str,
          calibration_batches: int | None, target: str, data: str | None, loss: str,
          learning_rate: float, optimizer: str,
          workdir: str | None, log: str | None, seed: int, device: str, steps: int,
          finetune_steps: int, strength: float | None, alive_threshold: float | None,
          round_to: str | None, min_channels: int | None, exclude: tuple[str, ...],
          address: str | None,
          threads_per_run: int, input_shapes: tuple[str, ...], as_json: bool,
          **more_training) -> None:
    """Prune MODEL once per budget (and seed) in parallel on Ray; write the Pareto front.

    Re-running with the same options reuses finished runs and retries failed ones. --log
    writes one JSON line per finished run.
    """
    from onnxmorph.errors import DataError
    from onnxmorph.graph import parse_input_shapes
    from onnxmorph.sweep import sweep as run_sweep
    from onnxmorph.training.trainer import TrainOptions

    # Options added to training_options later reach each run when TrainOptions knows them.
    fields = {f.name for f in dataclasses.fields(TrainOptions)}
    more_training = {k: v for k, v in more_training.items() if k in fields}

    if data is None:
        raise DataError("sweep learns and fine-tunes on data: pass --data loader.py")

    def report_run(record: dict) -> None:
        report = record.get("report") or {}
        detail = (record.get("reason") if record["status"] == "failed" else
                  f"accuracy {_fmt(report.get('accuracy_after'), '.4f')}, "
                  f"MACs {_fmt((report.get('ratio') or {}).get('macs'), '.1%')}")
        click.echo(f"{record['name']}: {record['status']} ({detail})", err=True)
        if log:  # opened per line: a sweep that never starts leaves no log behind
            with open(log, "a") as handle:
                handle.write(json.dumps({k: v for k, v in record.items() if k != "report"})
                             + "\n")

    result = run_sweep(
        model, data=data, budgets=budgets, seeds=seeds or [seed], outdir=outdir,
        method=method, target=target, address=address, threads_per_run=threads_per_run,
        on_run_done=report_run, exclude=exclude,
        input_shapes=parse_input_shapes(input_shapes),
        **_given(round_to=round_to, min_channels=min_channels,
             calibration_batches=calibration_batches),
        training=dict(steps=steps, finetune_steps=finetune_steps, loss=loss,
                      learning_rate=learning_rate, optimizer=optimizer, workdir=workdir,
                      device=device, **more_training,
                      **_given(strength=strength, alive_threshold=alive_threshold)))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(sweep_table(result))
        click.echo(f"wrote {result.outdir / 'pareto.json'}")
        click.echo(f"wrote {result.plot}" if result.plot == result.outdir / "pareto.png"
                   else f"plot: {result.plot}")
    if any(r["status"] == "failed" for r in result.runs):
        raise SystemExit(1)


def sweep_table(result) -> str:
    header = ["run", "budget", "seed", "status", result.quality.replace("_", " "), "MACs",
              "params", "latency", "front"]
    rows = [[r["name"], f"{r['budget']:g}", str(r["seed"]), r["status"],
             _fmt(r["quality"], ".4f"),
             _count(r["macs"], r["macs_ratio"]), _count(r["params"], r["params_ratio"]),
             _fmt(r["latency"], ".3g"), "*" if r["on_front"] else ""] for r in result.runs]
    failed = [f"{r['name']} failed: {r['reason']}" for r in result.runs if r["reason"]]
    return "\n".join([render_table(header, rows), *failed])


def _given(**options) -> dict:
    """The options the user set; the others keep prune's defaults."""
    return {k: v for k, v in options.items() if v is not None}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _count(value, ratio) -> str:
    if value is None:
        return "-"
    return format_count(value) + (f" ({ratio:.0%})" if ratio is not None else "")
