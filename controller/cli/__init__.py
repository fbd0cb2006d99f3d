"""The admin CLI (`fleetpatch`): its commands, the campaign commands, shared
options and output, and the admin gRPC client.
"""

import os

# grpc's C core reads this once, when grpc is imported. Unset, it logs a
# failed TLS handshake on stderr in a line of its own; the CLI says what went
# wrong in one line itself (TrustFailure). Errors of the core still show.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def console() -> None:
    """The `fleetpatch` console script: controller.cli.main, with Ctrl-C
    while it loads one line (fleetpatch.launch). Not named ``main``: the
    submodule of that name, once imported, is that attribute of this
    package."""
    from fleetpatch.launch import launch

    launch("controller.cli.main")
