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

Output that cannot be written is said by `run` too, the same for every
command (`--help` included): a reader that stops reading (`| head`, `|
true`) is the reader's choice, so the command ends quietly with exit 0, as
if it had written all (click's own answer, a silent exit 1, looked like a
failure); a full disk or an I/O error is one line, `cannot write the
output: No space left on device`, exit 1; a closed standard output is one
line too, exit 1, when something is written to it.
"""

from __future__ import annotations

import errno
import functools
import io
import math
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO, cast

import click
import typer

USAGE_EXIT = 2
INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports it
OUTPUT_EXIT = 1  # the output cannot be written: a full disk, an I/O error
# The reader stopped reading (`| head`): what was written is what it wanted.
READER_GONE_EXIT = 0


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


class OutputFailed(Exception):
    """Standard output cannot be written; ``errno`` says why (EPIPE: the
    reader stopped reading). Not an OSError: click takes a broken pipe for
    a silent exit 1, and a command's own handling of its files must not
    take it either."""

    def __init__(self, code: int, strerror: str) -> None:
        super().__init__(strerror)
        self.errno = code
        self.strerror = strerror


def _failed(exc: OSError) -> OutputFailed:
    code = exc.errno or errno.EIO
    return OutputFailed(code, exc.strerror or os.strerror(code))


# Characters a piece of output may hold: at 4 bytes a character (UTF-8's
# most), still within the buffer.
_PIECE = io.DEFAULT_BUFFER_SIZE // 4


class _Guarded:
    """Standard output as a command writes it: the stream it is, its write
    errors raised as OutputFailed, whoever writes (print, click, json)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        # In pieces the buffer takes whole: CPython's BufferedWriter hands a
        # write larger than its buffer to the file directly, and when the
        # file takes part of it and then refuses the rest (a disk that
        # fills up) it returns the short count, which TextIOWrapper
        # ignores: the rest is lost without an error (18,447 bytes to a 16
        # KiB tmpfs: 16,384 written, exit 0). Through the buffer, a flush
        # that cannot finish raises ENOSPC.
        try:
            if len(text) <= _PIECE:  # b"" too: click probes for a binary stream so
                return self._stream.write(text)
            for start in range(0, len(text), _PIECE):
                self._stream.write(text[start : start + _PIECE])
        except OSError as exc:
            raise _failed(exc) from None
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise _failed(exc) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _AfterOutput:
    """Standard error, which writes out what standard output holds before
    each message: a failure to write the output comes out before anything
    the command says after it (`audit checkpoint > /dev/full` printed "checkpoint of
    record 7" first), and the two keep their order in a file."""

    def __init__(self, stream: TextIO, output: TextIO) -> None:
        self._stream = stream
        self._output = output

    def write(self, text: str) -> int:
        self._output.flush()
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _Closed:
    """Standard output when the command was started without one (`>&-`):
    what is written to it fails; a command that writes nothing there runs."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, text: str) -> int:
        raise OutputFailed(errno.EBADF, "standard output is closed")

    def writelines(self, lines: Iterable[str]) -> None:
        self.write("")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _hold_fd(fd: int) -> None:
    """``fd`` on /dev/null if it is closed, so that no file or socket opened
    later becomes it (where a child process or a library writing to
    standard output would write)."""
    try:
        os.fstat(fd)
    except OSError:
        opened = os.open(os.devnull, os.O_WRONLY)
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)


def _discard(stream: TextIO | None) -> None:
    """What ``stream`` still holds goes to /dev/null, as will anything
    written to it later: flushed at exit, it would fail again, in Python's
    "Exception ignored" lines."""
    if stream is None:
        return
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (a test's StringIO)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def _settle(stream: TextIO | None) -> None:
    """Write out what ``stream`` holds now, on the way out of an error of
    the program's own: the caller says that error; output that cannot be
    written now is discarded without a word more."""
    if stream is None:
        return
    try:
        stream.flush()
    except OSError:
        _discard(stream)


def _output_failed(exc: OutputFailed, stream: TextIO | None, prog_name: str | None) -> int:
    """The exit code when standard output fails: the reader gone (EPIPE)
    is its choice, exit 0 without a word; anything else is one line."""
    _discard(stream)
    if exc.errno == errno.EPIPE:
        return READER_GONE_EXIT
    prog = prog_name or os.path.basename(sys.argv[0])
    print(f"{prog}: error: cannot write the output: {exc.strerror}", file=sys.stderr)
    return OUTPUT_EXIT


def run(typer_app: typer.Typer, prog_name: str | None = None, epilog: str | None = None) -> None:
    """Run a typer app as a console script. Usage errors become one line on
    stderr and exit 2; a bare command prints its help, exit 2;
    ``typer.Exit`` keeps its code. ``epilog`` (the exit codes) ends every
    command's help. Standard output that cannot be written: exit 0 when the
    reader stopped reading, else one line and exit 1. Errors of the
    program's own are for the caller's ``except``."""
    command = typer.main.get_command(typer_app)
    if epilog is not None:
        with_epilog(command, epilog)
    _interruptible(command)
    _finite(command)
    stdout: TextIO | None = sys.stdout
    if stdout is None:
        _hold_fd(1)
    stderr: TextIO | None = sys.stderr
    output = cast(TextIO, _Closed() if stdout is None else _Guarded(stdout))
    sys.stdout = output
    if stderr is not None:
        sys.stderr = cast(TextIO, _AfterOutput(stderr, output))
    try:
        code = _main(command, prog_name)
        output.flush()  # here, where a failure is said; not at exit
    except OutputFailed as exc:
        sys.stdout, sys.stderr = cast(TextIO, stdout), cast(TextIO, stderr)
        code = _output_failed(exc, stdout, prog_name)
    except BaseException:
        _settle(stdout)
        raise
    finally:
        sys.stdout, sys.stderr = cast(TextIO, stdout), cast(TextIO, stderr)
    sys.exit(code)


def _main(command: click.Command, prog_name: str | None) -> int:
    """Parse and run; the exit code of what went as it should, or wrong in
    a way the framework says (a usage error, Ctrl-C)."""
    try:
        code = command.main(standalone_mode=False, prog_name=prog_name)
    except Interrupted:
        print("aborted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except click.exceptions.NoArgsIsHelpError as exc:
        if exc.ctx is not None:
            print(exc.ctx.get_help(), file=sys.stderr)
        return USAGE_EXIT
    except click.UsageError as exc:
        print(usage_line(exc), file=sys.stderr)
        return USAGE_EXIT
    except click.Abort:
        print("aborted", file=sys.stderr)
        return INTERRUPTED_EXIT
    except click.ClickException as exc:  # click's own non-usage errors (FileError)
        print(" ".join(exc.format_message().split()), file=sys.stderr)
        return exc.exit_code
    return code if isinstance(code, int) else 0
