"""The `onnxmorph` command: turns OnnxMorphError into one line on stderr and exit code 2."""

from __future__ import annotations

import signal
import sys
import traceback
from typing import NoReturn

import click

from onnxmorph.errors import Interrupted, OnnxMorphError

EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1  # also a model onnxmorph made that fails its post-conditions


class _Group(click.Group):
    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        # The group's own options (`onnxmorph --bogus prune ...`) are parsed here.
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as exc:
            _exit_click_error(exc)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # unknown option or command, bad choice, ...
            _exit_click_error(exc)
        except OnnxMorphError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                traceback.print_exc()
            click.echo(f"onnxmorph: error: {one_line(str(exc))}", err=True)
            # A model onnxmorph made that fails its post-conditions says so with exit code 1.
            sys.exit(getattr(exc, "exit_code", EXIT_BAD_INPUT))
        except (KeyboardInterrupt, Interrupted) as exc:  # 130 for SIGINT, 143 for SIGTERM
            signum = exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT)
            where = exc.where if isinstance(exc, Interrupted) and exc.where else "interrupted"
            click.echo(f"onnxmorph: {where}", err=True)
            sys.exit(128 + signum)
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # a bug in onnxmorph or a library: one line, exit code 1
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"onnxmorph: internal error: {type(exc).__name__}: "
                       f"{one_line(str(exc))[:500]} (a bug: rerun with --debug for the "
                       "traceback and report it)", err=True)
            sys.exit(EXIT_INTERNAL)


# click >= 8.2 shows a bare group's help through this UsageError.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _exit_click_error(exc: click.ClickException) -> NoReturn:
    """click's usage errors in our one-line form (its own is a usage block plus a hint), with
    its exit code (2 for usage errors). A bare `onnxmorph` still shows the help."""
    if isinstance(exc, _NO_ARGS_IS_HELP):
        exc.show()
        sys.exit(exc.exit_code)
    where = ""
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        where = f"; see '{exc.ctx.command_path} --help'"
    message = one_line(exc.format_message()).rstrip(".")
    click.echo(f"onnxmorph: error: {message}{where}", err=True)
    sys.exit(exc.exit_code)


def one_line(message: str) -> str:
    """Errors are one line (scripts grep them); a library's multi-line message is joined."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


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
        sensitivity_cmd,
        sweep_cmd,
        verify_cmd,
    )

    cli.add_command(analyze_cmd.analyze)
    cli.add_command(prune_cmd.prune)
    cli.add_command(verify_cmd.verify)
    cli.add_command(finetune_cmd.finetune)
    cli.add_command(finetune_cmd.train_from_scratch)
    cli.add_command(eval_cmd.evaluate_command)
    cli.add_command(expand_cmd.expand)
    cli.add_command(report_cmd.report)
    cli.add_command(profile_cmd.profile)
    cli.add_command(sensitivity_cmd.sensitivity)
    cli.add_command(sweep_cmd.sweep)


_register_commands()


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


def main() -> None:
    # SIGTERM (timeout, schedulers) unwinds like Ctrl-C: temporary folders are removed.
    signal.signal(signal.SIGTERM, _raise_interrupted)
    cli(prog_name="onnxmorph")
