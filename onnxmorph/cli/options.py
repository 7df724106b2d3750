"""Options shared by several commands, defined once."""

from __future__ import annotations

import math

import click

from onnxmorph.errors import OnnxMorphError

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



def steps_options(command):
    """Structure-learning and fine-tuning step counts (prune, sweep)."""
    command = click.option("--finetune-steps", type=int, default=250, show_default=True,
                           help="Training steps of the pruned model without gates.")(command)
    return click.option("--steps", type=int, default=250, show_default=True,
                        help="Structure-learning steps (gates).")(command)


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
batch_option = click.option(
    "--batch", type=int, default=1, show_default=True,
    help="Deployment batch size: the latency table and the measured latency use it.")

allow_uncounted_option = click.option(
    "--allow-uncounted", is_flag=True,
    help="Go on when some node's MACs cannot be counted (custom op, unknown shape); "
         "the report lists those nodes.")

prune_embedding_option = click.option(
    "--prune-embedding", is_flag=True,
    help="Transformers: make the embedding dimension (the residual stream through every "
         "LayerNormalization, projection, positional embedding and the head) one prunable "
         "group. Off, it stays (a boundary with a reason).")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")


def training_options(command):
    """Options of every command that trains (prune with --data, finetune)."""
    decorators = [
        click.option("--data", type=click.Path(dir_okay=False),
                     help="Python file with train_batches() [and eval_batches()]."),
        click.option("--loss",
                     type=click.Choice(["auto", "ce+distill", "cross-entropy", "mse",
                                        "distill"]),
                     default="auto", show_default=True,
                     help="auto: ce+distill with integer labels (cross-entropy plus KL to the "
                          "seed's outputs at --distill-temperature), distillation from the "
                          "seed without labels (MSE for outputs that are not class scores), "
                          "mse with float labels."),
        click.option("--distill-temperature", type=float, default=4.0, show_default=True,
                     help="Temperature T of ce+distill's KL term (scaled by T²)."),
        click.option("--distill-weight", type=float, default=0.5, show_default=True,
                     help="Weight a of ce+distill: (1 - a) × CE + a × T² × KL."),
        click.option("--lr", "learning_rate", type=float, default=2e-3, show_default=True,
                     help="Learning rate."),
        click.option("--optimizer", type=click.Choice(["adamw", "sgd", "ranger"]),
                     default="adamw", show_default=True,
                     help="ranger: RAdam + Lookahead + gradient centralization, with the "
                          "defaults the README lists (Python API: TrainOptions.ranger)."),
        click.option("--lr-schedule",
                     type=click.Choice(["auto", "constant", "cosine", "one-cycle"]),
                     default="auto", show_default=True,
                     help="Learning rate per step of each phase: cosine = 5 % linear warm-up, "
                          "then cosine decay; one-cycle = up over 30 %, then down; auto = "
                          "constant in structure learning, cosine in fine-tuning."),
        click.option("--workdir", type=click.Path(file_okay=False),
                     help="Keep checkpoints for --resume here (default: OUTPUT.onnxmorph-work "
                          "next to the output, removed when the command ends)."),
        click.option("--resume", is_flag=True,
                     help="Continue an interrupted run from its last checkpoint (same "
                          "arguments)."),
        click.option("--checkpoint-every", type=click.IntRange(min=1), default=50,
                     show_default=True, help="Training steps between checkpoints."),
        click.option("--quiet", is_flag=True, help="No progress output."),
        click.option("--log", type=click.Path(dir_okay=False),
                     help="Write a JSON-lines training log here."),
        click.option("--seed", type=int, default=0, show_default=True, help="Random seed."),
        click.option("--device", default="cpu", show_default=True, metavar="cpu|cuda[:N]",
                     help="Where to train: cuda needs the onnxruntime-training CUDA build "
                          "(README: Training on a GPU)."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


# The post-conditions (onnxmorph/rewrite/postconditions.py) run unless --no-verify.
verify_option = click.option(
    "--verify/--no-verify", default=True, show_default=True,
    help="Check the written model: onnx full check, loads in onnxruntime, and computes what "
         "the seed computes with the removed channels zeroed at two batch sizes (a trained "
         "model: runs with the seed's output shapes and finite values). On by default; "
         "--no-verify skips it for speed.")

# Copies of rewrite.verify.DEFAULT_RTOL and AUTO_ATOL (a test keeps them equal): importing
# that module here would load onnx for every `--help`.
DEFAULT_RTOL = 1e-3
AUTO_ATOL = 1e-5


def tolerance_options(command):
    """--atol/--rtol of the numeric comparison `|a-b| <= atol + rtol*|b|`."""
    decorators = [
        click.option("--atol", type=float, default=None,
                     help="Absolute tolerance: |pruned - seed| <= atol + rtol*|seed|. "
                          f"Default: {AUTO_ATOL:g} × max(1, largest |seed output|), because "
                          "float32 rounding grows with the scale of the outputs."),
        click.option("--rtol", type=float, default=DEFAULT_RTOL, show_default=True,
                     help="Relative tolerance (see --atol)."),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


class OptionValueError(OnnxMorphError):
    """A numeric option is out of its range."""


def check_range(option: str, value: float | int | None, *, above: float | None = None,
                at_least: float | None = None, below: float | None = None,
                at_most: float | None = None) -> None:
    """Refuse, in one line, a numeric option outside its range (NaN and ±inf included)."""
    if value is None:
        return
    bounds = [(above, ">", lambda v, b: v > b), (at_least, ">=", lambda v, b: v >= b),
              (below, "<", lambda v, b: v < b), (at_most, "<=", lambda v, b: v <= b)]
    wanted = [f"{sign} {bound:g}" for bound, sign, _ in bounds if bound is not None]
    if not math.isfinite(value) or not all(ok(value, bound) for bound, _, ok in bounds
                                           if bound is not None):
        raise OptionValueError(f"{option} must be a finite number {' and '.join(wanted)} "
                               f"(got {value})")


# The range of every numeric option that has one, in check_range's words.
RANGES: dict[str, dict[str, float]] = {
    "--steps": {"at_least": 1}, "--epochs": {"at_least": 1}, "--finetune-steps": {"at_least": 0},
    "--lr": {"above": 0},
    "--strength": {"at_least": 0}, "--alive-threshold": {"above": 0, "below": 1},
    "--round-to": {"at_least": 1}, "--min-channels": {"at_least": 0},
    "--seed": {"at_least": 0}, "--atol": {"at_least": 0}, "--rtol": {"at_least": 0},
    "--width": {"above": 0, "at_most": 8}, "--threads": {"at_least": 1},
    "--batch": {"at_least": 1},
    "--distill-temperature": {"above": 0}, "--distill-weight": {"at_least": 0, "at_most": 1},
}


def check_ranges(values: dict[str, float | int | None]) -> None:
    """check_range for each `--option: value` by RANGES."""
    for option, value in values.items():
        check_range(option, value, **RANGES[option])


def round_to_number(value: str | int) -> int | None:
    """--round-to as a number for check_range (None for auto); a word is refused in one line."""
    if value == "auto":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise OptionValueError(
            f"--round-to must be auto or a whole number (got {value!r})") from None
