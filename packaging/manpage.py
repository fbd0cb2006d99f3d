"""Write a manual page (roff, man(7)) from a fleetpatch CLI's own --help.

    python manpage.py MODULE PROG VERSION DATE SUMMARY > PROG.1

Run by build_debs.py with the package's own interpreter, so the page says
exactly what `PROG --help` and `PROG VERB --help` print from that package:
the page is the help, every command's in turn, never a second text that
could drift from it. MODULE is the CLI module (agent.cli, controller.cli.main,
simulator.cli): its typer `app` gives the command tree, its `main()` prints
each help as the console script does (exit codes included).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import sys
from collections.abc import Iterator
from typing import Any


def _paths(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path under a click command, depth first, hidden ones left out."""
    yield prefix
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not getattr(sub, "hidden", False):
            yield from _paths(sub, (*prefix, name))


def _help(module: Any, prog: str, path: tuple[str, ...]) -> str:
    """What `prog *path --help` prints, captured from the CLI's main()."""
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [prog, *path, "--help"]
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            module.main()
    finally:
        sys.argv = saved
    return out.getvalue()


def roff_text(text: str) -> str:
    """Plain text as literal roff lines: backslashes escaped, and no line
    may start with a control character."""
    lines = []
    for line in text.rstrip("\n").splitlines():
        escaped = line.replace("\\", "\\e").replace("-", "\\-")
        if escaped.startswith((".", "'")):
            escaped = "\\&" + escaped
        lines.append(escaped)
    return "\n".join(lines)


def page(module_name: str, prog: str, version: str, date: str, summary: str) -> str:
    import typer

    module = importlib.import_module(module_name)
    command = typer.main.get_command(module.app)
    parts = [
        f'.TH {prog.upper()} 1 "{date}" "fleetpatch {version}" "fleetpatch manual"',
        ".SH NAME",
        f"{prog} \\- {summary}",
        ".SH SYNOPSIS",
        f".B {prog}",
        ".I COMMAND",
        "[\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        "This page is the text of each command's \\fB\\-\\-help\\fR, in turn.",
    ]
    for path in _paths(command):
        title = " ".join((prog, *path))
        parts += [".SH " + (title.upper() if not path else " ".join(path).upper()), ".nf"]
        parts += [roff_text(_help(module, prog, path)), ".fi"]
    parts += [
        ".SH SEE ALSO",
        "/usr/share/doc/fleetpatch\\-agent/README.md or "
        "/usr/share/doc/fleetpatch\\-controller/README.md",
    ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    module_name, prog, version, date, summary = sys.argv[1:6]
    sys.stdout.write(page(module_name, prog, version, date, summary))
