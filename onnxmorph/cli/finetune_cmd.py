"""`onnxmorph finetune MODEL --data loader.py` and `onnxmorph train-from-scratch MODEL`:
train a (pruned) model's weights, from its own or from freshly initialised ones."""

from __future__ import annotations

from pathlib import Path

import click

from onnxmorph.cli.options import check_ranges, threads_option, training_options, verify_option

_REINIT_HELP = ("Re-initialise the weights as PyTorch does (Kaiming-uniform, BN 1/0; seeded "
                "by --seed) before training: the structure trained from scratch.")


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output path (default: MODEL's name + .finetuned.onnx, next to it).")
@click.option("--steps", type=int, default=250, show_default=True, help="Training steps.")
@click.option("--teacher", type=click.Path(dir_okay=False),
              help="Model whose outputs are the distillation targets of --loss distill and "
                   "ce+distill (default: MODEL).")
@click.option("--reinit", is_flag=True, help=_REINIT_HELP)
@training_options
@threads_option
@verify_option
def finetune(model: str, output: str | None, steps: int, teacher: str | None, reinit: bool,
             **options) -> None:
    """Fine-tune MODEL on the loader's training batches."""
    out = Path(output) if output else Path(model).with_name(Path(model).stem + ".finetuned.onnx")
    run_training(model, out, steps, None, teacher, reinit, options)


@click.command("train-from-scratch")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output path (default: MODEL's name + .scratch.onnx, next to it).")
@click.option("--steps", type=int, help="Training steps (or --epochs).")
@click.option("--epochs", type=int, help="Passes over the loader's training batches.")
@training_options
@verify_option
def train_from_scratch(model: str, output: str | None, steps: int | None, epochs: int | None,
                       **options) -> None:
    """Re-initialise MODEL's weights as PyTorch does and train its structure from scratch."""
    from onnxmorph.errors import TrainingError

    if (steps is None) == (epochs is None):
        raise TrainingError("train-from-scratch needs either --steps or --epochs")
    out = Path(output) if output else Path(model).with_name(Path(model).stem + ".scratch.onnx")
    run_training(model, out, steps, epochs, None, True, options)


def run_training(model: str, out: Path, steps: int | None, epochs: int | None,
                 teacher: str | None, reinit: bool, options: dict) -> None:
    """Check everything, train (checkpointed), verify, write, print the quality lines."""
    from onnxmorph.errors import DataError
    from onnxmorph.io import check_distinct_outputs, check_output_path, save_model
    from onnxmorph.rewrite.postconditions import check_trained
    from onnxmorph.train_api import epoch_steps, finetune
    from onnxmorph.training.checkpoint import checkpointed_run, default_workdir
    from onnxmorph.training.evaluate import quality_lines

    data, log, workdir = options["data"], options["log"], options["workdir"]
    if data is None:
        raise DataError("training needs --data loader.py")
    check_ranges({"--steps": steps, "--epochs": epochs, "--lr": options["learning_rate"],
                  "--seed": options["seed"], "--threads": options.get("threads"),
                  "--distill-temperature": options["distill_temperature"],
                  "--distill-weight": options["distill_weight"]})
    for path in (out, log):
        if path is not None:
            check_output_path(path, inputs=[model, data, teacher])
    check_distinct_outputs([out, log])
    folder = workdir or str(default_workdir(out))
    if epochs is not None:
        steps = epoch_steps(data, model, epochs)
    training = dict(loss=options["loss"], learning_rate=options["learning_rate"],
                    optimizer=options["optimizer"], workdir=folder, seed=options["seed"],
                    log=log, progress=not options["quiet"], resume=options["resume"],
                    checkpoint_every=options["checkpoint_every"], device=options["device"],
                    lr_schedule=options["lr_schedule"], reinit=reinit,
                    threads=options.get("threads"),
                    distill_temperature=options["distill_temperature"],
                    distill_weight=options["distill_weight"])
    with checkpointed_run(folder, click.get_current_context().params, options["resume"],
                          owned=workdir is None):
        result = finetune(model, data=data, steps=steps, teacher=teacher, training=training)
        if options["verify"]:  # trained weights compare with nothing: checker, loads, runs
            check_trained(result.loaded, result.model, result.input_shapes)
        save_model(result.model, out)
    for line in quality_lines(result.quality, "MODEL before training" if reinit
                              else "MODEL before fine-tuning"):
        click.echo(line)
    click.echo(f"wrote model: {out}")
