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

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
