"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

input_shape_option = click.option(
    "--input-shape",
    "input_shapes",
    multiple=True,
    metavar="NAME=1x3x224x224",
    help="Static shape for a model input with dynamic dimensions (repeatable).",
)

round_to_option = click.option(
    "--round-to", default="auto", show_default=True, metavar="auto|N",
    help="Keep channel counts multiples of N where the seed's were; auto: the block "
         "onnxruntime's fast CPU kernels need on this machine (8 with AVX2, 16 with "
         "AVX-512); 1: no rounding.")

latency_model_option = click.option(
    "--latency-model", type=click.Choice(["table", "roofline"]), default=None,
    help="How latency is predicted: table (per-layer onnxruntime measurements, made by "
         "`onnxmorph profile` and cached) or roofline (FLOPs and bytes; no measuring).")
latency_table_option = click.option(
    "--latency-table", type=click.Path(dir_okay=False),
    help="Latency table JSON to use (made here if missing) instead of the cache.")
latency_device_option = click.option(
    "--latency-device", default="cpu", show_default=True,
    help="Roofline constants: cpu (this machine) or p100, v100, t4, a100, h100.")
threads_option = click.option(
    "--threads", type=int, help="onnxruntime intra-op threads (default: one per core).")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")


def training_options(command):
    """Options of every command that trains (prune with --data, finetune)."""
    decorators = [
        click.option("--data", type=click.Path(dir_okay=False),
                     help="Python file with train_batches() [and eval_batches()]."),
        click.option("--loss", type=click.Choice(["auto", "cross-entropy", "mse", "distill"]),
                     default="auto", show_default=True,
                     help="auto: cross-entropy with integer labels, distillation from the "
                          "seed without labels."),
        click.option("--lr", "learning_rate", type=float, default=2e-3, show_default=True,
                     help="Learning rate."),
        click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw",
                     show_default=True),
        click.option("--workdir", type=click.Path(file_okay=False),
                     help="Keep training artifacts here (default: a temporary folder)."),
        click.option("--log", type=click.Path(dir_okay=False),
                     help="Write a JSON-lines training log here."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command
