"""`onnxmorph finetune MODEL --data loader.py`: train a (pruned) model's weights."""

from __future__ import annotations

from pathlib import Path

import click

from onnxmorph.cli.options import check_ranges, threads_option, training_options, verify_option


@click.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Output path (default: MODEL's name + .finetuned.onnx, next to it).")
@click.option("--steps", type=int, default=250, show_default=True, help="Training steps.")
@click.option("--teacher", type=click.Path(dir_okay=False),
              help="Model whose outputs are the targets of --loss distill (default: MODEL).")
@training_options
@threads_option
@verify_option
def finetune(model: str, output: str | None, steps: int, teacher: str | None, data: str | None,
             loss: str, learning_rate: float, optimizer: str, workdir: str | None,
             resume: bool, checkpoint_every: int, quiet: bool, log: str | None, seed: int,
             device: str, lr_schedule: str, threads: int | None, verify: bool) -> None:
    """Fine-tune MODEL on the loader's training batches."""
    from onnxmorph.errors import DataError
    from onnxmorph.graph.load import load_model
    from onnxmorph.graph.model_file import read_model_file
    from onnxmorph.io import check_distinct_outputs, check_output_path, save_model
    from onnxmorph.methods.gated import finetune_training_copy
    from onnxmorph.rewrite.postconditions import check_trained
    from onnxmorph.rewrite.verify import check_same_inputs
    from onnxmorph.training.checkpoint import checkpointed_run, default_workdir
    from onnxmorph.training.data import DataSource
    from onnxmorph.training.evaluate import evaluate, quality_lines
    from onnxmorph.training.prepare import SameShapeBatches, batch_shapes
    from onnxmorph.training.trainer import Teacher, TrainOptions, choose_loss

    if data is None:
        raise DataError("finetune needs --data loader.py")
    # MODEL's whole stem, as prune does: "a.v2.onnx" → "a.v2.finetuned.onnx".
    out = Path(output) if output else Path(model).with_name(Path(model).stem + ".finetuned.onnx")
    check_ranges({"--steps": steps, "--lr": learning_rate, "--seed": seed, "--threads": threads})
    for path in (out, log):
        if path is not None:
            check_output_path(path, inputs=[model, data, teacher])
    check_distinct_outputs([out, log])
    folder = workdir or str(default_workdir(out))
    options = TrainOptions(steps=max(steps, 1), finetune_steps=steps, loss=loss,
                           learning_rate=learning_rate, optimizer=optimizer, workdir=folder,
                           seed=seed, log=log, progress=not quiet, resume=resume,
                           checkpoint_every=checkpoint_every, device=device,
                           lr_schedule=lr_schedule, threads=threads)
    proto = read_model_file(model)
    teacher_model = read_model_file(teacher) if teacher else proto
    check_same_inputs(proto, teacher_model, f"'{model}'", f"teacher '{teacher}'")
    source = DataSource.for_model(data, proto)
    first = next(iter(source.train()), None)
    if first is None:
        raise DataError(f"loader '{data}' train_batches() yielded no batches")
    # The same loading as prune/analyze (constants folded into initializers, shapes resolved
    # at the loader's batch), so weights kept in Constant nodes (Paddle exports) train too.
    shapes = batch_shapes(first)
    loaded = load_model(model, shapes).model
    teacher_model = teacher_model if teacher else loaded
    source = SameShapeBatches(source, shapes)
    kind = choose_loss(options.loss, first)
    with checkpointed_run(folder, click.get_current_context().params, resume,
                          owned=workdir is None):
        tuned = finetune_training_copy(loaded, source, options, kind, Teacher(teacher_model)
                                       if kind == "distill" else None, steps, shapes)
        if verify:  # trained weights compare with nothing: checker, loads, runs like MODEL
            check_trained(loaded, tuned, {name: value.shape
                                          for name, value in first.inputs.items()})
        save_model(tuned, out)
    result = evaluate(tuned, source, reference=loaded if kind == "distill" else None)
    for line in quality_lines(result, "MODEL before fine-tuning"):
        click.echo(line)
    click.echo(f"wrote model: {out}")
