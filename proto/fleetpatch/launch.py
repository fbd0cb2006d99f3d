"""The console scripts' entry points import their program here, under a
guard: Ctrl-C while a command is still loading (its imports take a few
tenths of a second) ends it as Ctrl-C does once it runs, with one line
and exit code 130, not a traceback.

Only what the interpreter has loaded already is imported here, so that
the guard is in place a moment after Python itself has started (Ctrl-C
before that is Python's own to report)."""

from __future__ import annotations

import importlib
import sys

INTERRUPTED_EXIT = 130  # 128 + SIGINT, as a shell reports it


def launch(module: str) -> None:
    """Import ``module`` and call its ``main()``. A KeyboardInterrupt
    that reaches here, in the import or past the program's own handling,
    is one line on stderr and exit 130."""
    try:
        importlib.import_module(module).main()
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
