"""The `onnxmorph` command: turns OnnxMorphError into one line on stderr and exit code 2."""

from __future__ import annotations

import sys
import traceback

import click

from onnxmorph.errors import OnnxMorphError

EXIT_BAD_INPUT = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OnnxMorphError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"onnxmorph: error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show the full traceback of errors.")
@click.version_option(package_name="onnxmorph")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Make ONNX models smaller and faster under a resource budget."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _register_commands() -> None:
    # Each command lives in its own module; heavy imports stay inside the commands.
    from onnxmorph.cli import (
        analyze_cmd,
        eval_cmd,
        expand_cmd,
        finetune_cmd,
        profile_cmd,
        prune_cmd,
        report_cmd,
        verify_cmd,
    )

    cli.add_command(analyze_cmd.analyze)
    cli.add_command(prune_cmd.prune)
    cli.add_command(verify_cmd.verify)
    cli.add_command(finetune_cmd.finetune)
    cli.add_command(eval_cmd.evaluate_command)
    cli.add_command(expand_cmd.expand)
    cli.add_command(report_cmd.report)
    cli.add_command(profile_cmd.profile)


_register_commands()


def main() -> None:
    cli(prog_name="onnxmorph")
