"""`onnxmorph prune MODEL`: make MODEL fit a cost budget."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

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
    round_to_number,
    round_to_option,
    steps_options,
    threads_option,
    tolerance_options,
    training_options,
    verify_option,
)
from onnxmorph.cli.table import format_count, unpriced_lines
from onnxmorph.methods.registry import (
    DEFAULT_CALIBRATION_BATCHES,
    check_request,
    method_help,
    method_names,
    resolve_method,
)

METHODS = ["auto", *method_names()]


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Pruned model path (default: MODEL's name + .pruned.onnx, next to it).")
@click.option("--method", type=click.Choice(METHODS), default="auto", show_default=True,
              help="auto: gates with --data, else l1. " + method_help())
@click.option("--calibration-batches", type=int, default=DEFAULT_CALIBRATION_BATCHES,
              show_default=True,
              help="Batches of --data that apoz, activation and taylor rank channels on.")
@click.option("--target", type=click.Choice(["flops", "params", "latency"]), default="flops",
              show_default=True, help="The cost the budget applies to (flops = MACs; latency: "
                                      "predicted by --latency-model).")
@click.option("--budget", type=float, default=0.5, show_default=True,
              help="Fraction of the seed's cost to keep, in (0, 1].")
@training_options
@steps_options
@click.option("--strength", type=float,
              help="Fixed regularisation strength λ (morph-net style) instead of the budget "
                   "controller; the final structure still respects --budget.")
@click.option("--reinit", is_flag=True,
              help="Re-initialise the pruned structure's weights as PyTorch does (seeded by "
                   "--seed) and train it from scratch for --finetune-steps: the control of "
                   "whether the structure itself is better.")
@click.option("--alive-threshold", type=float, default=0.1, show_default=True,
              help="A channel lives while its gate probability is above this.")
@round_to_option
@click.option("--min-channels", type=int, default=1, show_default=True,
              help="Never shrink a group below this many channels (0 lets a group vanish: "
                   "its residual branch is removed where that is exact).")
@click.option("--exclude", multiple=True, metavar="PATTERN",
              help="Leave layers matching this name or glob untouched (repeatable).")
@verify_option
@tolerance_options
@latency_model_option
@latency_table_option
@latency_device_option
@threads_option
@batch_option
@click.option("--measure-latency/--no-measure-latency", default=True, show_default=True,
              help="Time seed and pruned model in onnxruntime (interleaved) for the report.")
@input_shape_option
@allow_uncounted_option
@prune_embedding_option
@json_option
def prune(model: str, output: str | None, method: str, calibration_batches: int, target: str,
          budget: float, data: str | None, loss: str, distill_temperature: float,
          distill_weight: float, learning_rate: float, optimizer: str,
          workdir: str | None, resume: bool, checkpoint_every: int, quiet: bool,
          log: str | None, seed: int, device: str, lr_schedule: str, steps: int,
          finetune_steps: int,
          strength: float | None, reinit: bool, alive_threshold: float, round_to: str,
          min_channels: int,
          exclude: tuple[str, ...], verify: bool, atol: float | None, rtol: float,
          latency_model: str | None, latency_table: str | None, latency_device: str,
          threads: int | None, batch: int, measure_latency: bool, input_shapes: tuple[str, ...],
          allow_uncounted: bool, prune_embedding: bool, as_json: bool) -> None:
    """Prune MODEL to BUDGET × its cost and write a smaller ONNX model."""
    from onnxmorph.api import prune as run_prune
    from onnxmorph.graph import parse_input_shapes
    from onnxmorph.training.checkpoint import check_resume, checkpointed_run, default_workdir

    # MODEL's whole stem: "a.v2.onnx" → "a.v2.pruned.onnx", and never the input itself.
    out = Path(output) if output else Path(model).with_name(Path(model).stem + ".pruned.onnx")
    check_prune_options(model, out, data, log, budget=budget, steps=steps,
                        finetune_steps=finetune_steps, learning_rate=learning_rate,
                        strength=strength, alive_threshold=alive_threshold, round_to=round_to,
                        min_channels=min_channels, seed=seed, atol=atol, rtol=rtol,
                        threads=threads, batch=batch)
    chosen = resolve_method(method, data)
    check_resume(resume, chosen.name, data, steps, finetune_steps, learns=chosen.learns)
    check_request(chosen, target=target, data=data, resume=resume)
    resumable = chosen.resumable
    check_ranges({"--distill-temperature": distill_temperature,
                  "--distill-weight": distill_weight})
    folder = workdir or str(default_workdir(out))
    # Without data nothing trains: no checkpoints, and --resume has nothing to do.
    run = checkpointed_run(folder, click.get_current_context().params, resume,
                           owned=workdir is None, unresumable=None if resumable else method
                           ) if data else contextlib.nullcontext()
    with run:
        result = run_prune(
            model, method=method, target=target, budget=budget, data=data,
            input_shapes=parse_input_shapes(input_shapes), round_to=round_to,
            min_channels=min_channels, exclude=exclude, verify=verify, atol=atol, rtol=rtol,
            calibration_batches=calibration_batches, allow_uncounted=allow_uncounted,
            prune_embedding=prune_embedding,
            latency_model=latency_model, latency_table=latency_table,
            latency_device=latency_device, threads=threads, batch=batch,
            measure_latency=measure_latency,
            training=dict(steps=steps, finetune_steps=finetune_steps,
                          learning_rate=learning_rate, optimizer=optimizer, loss=loss,
                          strength=strength, alive_threshold=alive_threshold, workdir=folder,
                          seed=seed, log=log, progress=not (as_json or quiet), resume=resume,
                          checkpoint_every=checkpoint_every, device=device,
                          lr_schedule=lr_schedule, distill_temperature=distill_temperature,
                          distill_weight=distill_weight, reinit=reinit),
        )
        paths = result.save(out)
    report = result.report()
    if as_json:
        click.echo(json.dumps({**report, "files": {k: str(v) for k, v in paths.items()}},
                              indent=2))
    else:
        _print_summary(report, paths)


def check_prune_options(model: str, out: Path, data: str | None, log: str | None, *,
                        budget: float, steps: int, finetune_steps: int, learning_rate: float,
                        strength: float | None, alive_threshold: float, round_to: str,
                        min_channels: int, seed: int, atol: float | None, rtol: float,
                        threads: int | None = None, batch: int = 1) -> None:
    """Everything that can be refused before the model is even read."""
    from onnxmorph.io import check_distinct_outputs, check_output_path, sidecar
    from onnxmorph.methods.select import check_budget

    check_budget(budget)
    check_ranges({"--steps": steps, "--finetune-steps": finetune_steps, "--lr": learning_rate,
                  "--strength": strength, "--alive-threshold": alive_threshold,
                  "--round-to": round_to_number(round_to), "--min-channels": min_channels,
                  "--seed": seed, "--atol": atol, "--rtol": rtol, "--threads": threads,
                  "--batch": batch})
    outputs = [out, *(sidecar(out, s) for s in ("structure.json", "report.json",
                                                 "structure.png")), log]
    for path in outputs:
        if path is not None:
            check_output_path(path, inputs=[model, data])
    check_distinct_outputs(outputs)


def _print_summary(report: dict, paths: dict) -> None:
    seed, pruned, ratio = report["seed"], report["pruned"], report["ratio"]
    click.echo(f"method {report['method']}, target {report['target']}, budget {report['budget']}")
    for key, label in (("macs", "MACs"), ("params", "params")):
        click.echo(f"{label:7s} {format_count(seed[key]):>9s} → {format_count(pruned[key]):>9s}"
                   f"  ({ratio[key]:.1%})")
    _print_latency(report.get("latency"))
    for node in report.get("uncounted", []):
        click.echo(f"NOT COUNTED in MACs: {node['op_type']} '{node['node']}' ({node['reason']})")
    for key in ("accuracy_before", "accuracy_gated", "accuracy_after_slice", "accuracy_after",
                "agreement_with_seed"):
        if report.get(key) is not None:  # None: no labels, or not a classifier
            click.echo(f"{key.replace('_', ' ')}: {report[key]:.4f}")
    if report.get("output_error_vs_seed") is not None and report.get("accuracy_after") is None:
        # Trained on labels, the outputs may move far from the seed's (1.2 is common) while
        # accuracy is what counts; without labels the distance is the only measure.
        click.echo(f"output error vs seed: {report['output_error_vs_seed']:.4f} (relative L2 "
                   "of the outputs)")
    if "verify" in report:
        check = report["verify"]
        atol = max(check["atol_used"].values(), default=0.0)
        click.echo(f"verify: passed (max |a-b| {check['max_abs_diff']:.2e} <= atol "
                   f"{atol:.2g} + rtol {check['rtol']:g} × |b|, batch sizes "
                   f"{', '.join(map(str, check['batch_sizes']))})")
    for kind, path in paths.items():  # a str instead of a path: why it was not written
        click.echo(f"wrote {kind}: {path}" if isinstance(path, Path) else f"{kind}: {path}")


def _print_latency(latency: dict | None) -> None:
    if not latency:
        return
    if "predicted" in latency:
        p = latency["predicted"]
        click.echo(f"latency predicted {p['seed_ms']:.3f} → {p['pruned_ms']:.3f} ms  "
                   f"({p['ratio']:.1%}; other ops {p['other_ops_ms'][0]:.3f} → "
                   f"{p['other_ops_ms'][1]:.3f} ms of it)")
        for line in unpriced_lines(p["unpriced_ops"]):
            click.echo(line)
        if p.get("table_warning"):
            click.echo(f"warning: latency table: {p['table_warning']}")
    if "error" in latency.get("measured", {}):
        click.echo(f"latency not measured: {latency['measured']['error']}")
    elif "measured" in latency:
        m = latency["measured"]
        click.echo(f"latency measured {m['seed_ms']:.3f} → {m['pruned_ms']:.3f} ms "
                   f"(batch {m['batch']}, median of {m['runs']}): speed-up {m['speedup']:.2f}× "
                   f"of an ideal {latency['ideal_speedup']:.2f}× (1 / MACs ratio)")
