"""How the agent and the controller write their logs: one record, one line.

A service's standard error goes to the journal line by line. A message
holding a line break would become entries of their own, without time,
level or source, which a log shipper reading line by line misreads: libpq's
errors hold one (`connection to server on socket ... failed: No such file
or directory` then `Is the server running locally ...?`), and so may a
peer's words quoted in a message, which could then forge a line of their
own. A message's line breaks, and the blanks around them, are folded into
one space. Other control characters (a NUL, a terminal's escape sequences,
which journalctl would show as "[blob data]" and a terminal would obey)
are written as ``\\xNN``; a tab stays. A traceback (``exc_info``) is left
as Python writes it: one is logged only for a bug. A peer's words are
also cut short (`quoted`), before they go into an error message that is
shown, stored and logged.
"""

from __future__ import annotations

import copy
import logging
import re
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_BREAKS = re.compile(r"[ \t]*[\r\n\v\f\x1c-\x1e\x85\u2028\u2029][\s]*")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f]")
_UNSAFE = re.compile(f"{_BREAKS.pattern}|{_CONTROL.pattern}")


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the blanks around them) one space,
    and its other control characters but tabs escaped (``\\x1b``)."""
    if not _UNSAFE.search(text):
        return text
    folded = _BREAKS.sub(" ", text).strip()
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", folded)


# A peer's words quoted in a message (a gRPC status's details, say): at most
# this many characters, so that a peer cannot fill the journal with one.
QUOTE_LIMIT = 500
_PARTIAL_ESCAPE = re.compile(r"\\(x[0-9a-f]?)?$")


def quoted(text: str, limit: int = QUOTE_LIMIT) -> str:
    """A peer's ``text`` as `one_line` writes it, cut to at most ``limit``
    characters (more than 3) ending in "..." when longer, never within an
    escape: for words quoted in an error message, before it is shown,
    stored or logged."""
    head = text[: 8 * limit]  # folding may shorten it; no need to fold megabytes
    folded = one_line(head)
    if len(folded) <= limit and len(head) == len(text):
        return folded
    cut = _PARTIAL_ESCAPE.sub("", folded[: limit - 3]).rstrip()
    return cut + "..."


class OneLineFormatter(logging.Formatter):
    """A formatter whose messages are one line each."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        folded = one_line(record.message)
        if folded is not record.message:
            record = copy.copy(record)  # other handlers see the record as it was
            record.message = folded
        return super().formatMessage(record)


def setup(level: int | str) -> None:
    """Log records of ``level`` and above to standard error, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
