"""The fleet's lineage: the CAs and signing keys of the data dirs that
serve this database (controller/fleet/lineage.py says why)."""

from __future__ import annotations

import json

from controller.fleet.lineage import Lineage
from controller.store.backend import StoreBase

_ROW = "fleet"


def _marks(text: str) -> frozenset[str]:
    return frozenset(str(mark) for mark in json.loads(text))


def _text(marks: frozenset[str]) -> str:
    return json.dumps(sorted(marks))


class LineageStore(StoreBase):
    """A part of Store."""

    def recorded_lineage(self) -> Lineage | None:
        row = self._conn.execute(
            "SELECT in_use, known FROM fleet_lineage WHERE name = ?", (_ROW,)
        ).fetchone()
        return None if row is None else Lineage(_marks(row[0]), _marks(row[1]))

    def record_lineage(self, lineage: Lineage, replacing: Lineage | None) -> bool:
        """Record ``lineage`` where ``replacing`` is recorded (None: nothing
        yet); False when another replica recorded something else first."""
        new = (_text(lineage.current), _text(lineage.known))
        if replacing is None:
            sql = "INSERT OR IGNORE INTO fleet_lineage (name, in_use, known) VALUES (?, ?, ?)"
            return bool(self._conn.execute(sql, (_ROW, *new)).rowcount)
        old = (_text(replacing.current), _text(replacing.known))
        sql = (
            "UPDATE fleet_lineage SET in_use = ?, known = ?"
            " WHERE name = ? AND in_use = ? AND known = ?"
        )
        return bool(self._conn.execute(sql, (*new, _ROW, *old)).rowcount)
