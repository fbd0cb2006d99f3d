"""Options every admin command shares, and the connection they open."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from fleetpatch.labels import MAX_RING

from controller.cli.admin_client import AdminClient
from controller.cli.renewing import renew_if_due
from controller.datadir import DataDir

DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="FLEETPATCH_DATA_DIR",
        help="Controller data dir (CA, keys, database, settings).",
        show_default=True,
    ),
]
ControllerOption = Annotated[
    str | None,
    typer.Option(
        "--controller",
        envvar="FLEETPATCH_CONTROLLER",
        metavar="HOST:PORT[,HOST:PORT...]",
        help="Controller address, or several replicas' comma-separated (the next is "
        "asked when one cannot be reached); default: [cli] controllers in the "
        "settings, else the address recorded in the data dir.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
# A ring to filter by: refused here, naming the option, when no host can be
# in it (the request's int32 refused 2**31 as "Value out of range").
RingFilterOption = Annotated[
    int | None, typer.Option("--ring", min=0, max=MAX_RING, help="Only hosts of this ring.")
]


def client(data_dir: Path, controller: str | None) -> AdminClient:
    """The admin connection for a data dir (address overridable); the
    admin certificate is renewed first when it is due."""
    connection = AdminClient(DataDir.at(data_dir), controller)
    renew_if_due(connection, DataDir.at(data_dir))
    return connection
