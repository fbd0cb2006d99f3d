"""What the three CLIs (`fleetpatch`, `fleetpatch-agent`, `fleetpatch-sim`)
share about their command-line framework: how an app is made and how a
usage error is said.

Typer (over click) parses; it is pinned in pyproject.toml to the range these
settings were tested with. Two of its defaults are unwanted here:

- Rich markup in help text, which eats anything in brackets (`[[checks]]`,
  `[server]`, `[failures]` vanish): `new_app` turns markup off, so help is
  click's plain text, brackets as written.
- Usage errors drawn as multi-line Rich boxes: `run` parses with click's
  standalone mode off and says each usage error in one line, naming the
  option and what it accepts, exit 2.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Sequence
from typing import Any

import click
import typer

USAGE_EXIT = 2
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports it


def new_app(help: str, epilog: str | None = None, **options: Any) -> typer.Typer:
    """A typer app (or sub-app) with plain help text and no Rich boxes."""
    return typer.Typer(
        help=help,
        epilog=epilog,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        rich_markup_mode=None,
        # click 8.4 suggests the nearest command itself: typer's suggestion
        # on top said "Did you mean 'hosts'?" twice.
        suggest_commands=not hasattr(click.exceptions, "NoSuchCommand"),
        **options,
    )


def usage_line(error: click.UsageError) -> str:
    """One line for a usage error: the command, what was wrong, and for a
    bad or missing option what it accepts."""
    ctx = error.ctx
    where = ctx.command_path if ctx is not None else ""
    message = " ".join(error.format_message().split())
    param = getattr(error, "param", None)
    if isinstance(error, click.BadParameter | click.MissingParameter) and param is not None:
        message = message.rstrip(".")
        if not isinstance(param, click.Argument) or getattr(param, "help", None):
            message += f"; {_accepts(param, ctx)}"
    elif ctx is not None and not isinstance(error, click.NoSuchOption):
        message = message.rstrip(".")
    message = message[:1].lower() + message[1:]
    if ctx is not None:
        message += f" (see {where} --help)"
    return f"{where}: error: {message}" if where else f"error: {message}"


def _accepts(param: click.Parameter, ctx: click.Context | None) -> str:
    """``--ring takes INTEGER: Ring (canary wave) ...``"""
    name = param.opts[0] if param.opts else (param.name or "?").upper()
    metavar = param.make_metavar(ctx) if ctx is not None else param.type.name.upper()
    if isinstance(param.type, click.Choice):
        metavar = " | ".join(str(c) for c in param.type.choices)
    described = getattr(param, "help", None)
    what = metavar if isinstance(param, click.Argument) else f"{name} takes {metavar}"
    return f"{what}: {described}" if described else what


def exit_codes_epilog(codes: Sequence[tuple[int, str]], title: str = "Exit codes") -> str:
    """A table of exit codes for the end of ``--help``, kept as written
    (click rewraps paragraphs unless they start with \\b)."""
    return "\b\n" + f"{title}:\n" + "\n".join(f"  {code:<3} {what}" for code, what in codes)


def with_epilog(command: click.Command, epilog: str) -> click.Command:
    """``command`` and every command under it, each with ``epilog`` after
    its own (the exit codes in every command's ``--help``)."""
    command.epilog = f"{command.epilog}\n\n{epilog}" if command.epilog else epilog
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            with_epilog(sub, epilog)
    return command


class Interrupted(Exception):
    """Ctrl-C within a command."""


@functools.cache
def _finite_kind(kind: type[click.types.FloatParamType]) -> type[click.types.FloatParamType]:
    """``kind`` (click's float, or float range), refusing nan and inf:
    click's range checks let nan through (every comparison with it is
    false), and a `--seconds nan` would measure nothing and exit 0. A
    subclass, so that help still shows the range."""

    class Finite(kind):  # type: ignore[valid-type, misc]
        def convert(
            self, value: Any, param: click.Parameter | None, ctx: click.Context | None
        ) -> Any:
            number = super().convert(value, param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value!r} is not a finite number", param, ctx)
            return number

    return Finite


def _finite(command: click.Command) -> None:
    """Every float option of ``command`` (and its subcommands) finite."""
    for sub in getattr(command, "commands", {}).values():
        _finite(sub)
    for param in command.params:
        if isinstance(param.type, click.types.FloatParamType):
            param.type.__class__ = _finite_kind(type(param.type))


def _interruptible(command: click.Command) -> None:
    """Have Ctrl-C within ``command`` (and its subcommands) raise
    `Interrupted`: typer turns a KeyboardInterrupt into a silent exit 130,
    where the contract is one line, `aborted`."""
    for sub in getattr(command, "commands", {}).values():
        _interruptible(sub)
    callback = command.callback
    if callback is None or getattr(callback, "interruptible", False):
        return

    @functools.wraps(callback)
    def interruptible(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            raise Interrupted from None

    interruptible.interruptible = True  # type: ignore[attr-defined]
    command.callback = interruptible


def run(typer_app: typer.Typer, prog_name: str | None = None, epilog: str | None = None) -> None:
    """Run a typer app as a console script. Usage errors become one line on
    stderr and exit 2; a bare command prints its help, exit 2;
    ``typer.Exit`` keeps its code. ``epilog`` (the exit codes) ends every
    command's help. Errors of the program's own are for the caller's
    ``except``."""
    command = typer.main.get_command(typer_app)
    if epilog is not None:
        with_epilog(command, epilog)
    _interruptible(command)
    _finite(command)
    try:
        code = command.main(standalone_mode=False, prog_name=prog_name)
    except Interrupted:
        print("aborted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except click.exceptions.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            print(exc.ctx.get_help(), file=sys.stderr)
        sys.exit(USAGE_EXIT)
    except click.UsageError as exc:
        print(usage_line(exc), file=sys.stderr)
        sys.exit(USAGE_EXIT)
    except click.Abort:
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as exc:  # click's own non-usage errors (FileError)
        print(" ".join(exc.format_message().split()), file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
