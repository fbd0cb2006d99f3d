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

import sys
from collections.abc import Sequence
from typing import Any

import click
import typer

USAGE_EXIT = 2


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


def run(typer_app: typer.Typer, prog_name: str | None = None, epilog: str | None = None) -> None:
    """Run a typer app as a console script. Usage errors become one line on
    stderr and exit 2; a bare command prints its help, exit 2;
    ``typer.Exit`` keeps its code. ``epilog`` (the exit codes) ends every
    command's help. Errors of the program's own are for the caller's
    ``except``."""
    command = typer.main.get_command(typer_app)
    if epilog is not None:
        with_epilog(command, epilog)
    try:
        code = command.main(standalone_mode=False, prog_name=prog_name)
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
