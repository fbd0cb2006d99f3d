"""A real PostgreSQL server for the tests (Debian's `postgresql` package,
which the Makefile installs): a throwaway cluster in a temp dir, listening
only on a unix socket there, started once per test session and stopped at
its end. PostgreSQL refuses to run as root, so under root (CI) the cluster
belongs to `nobody`.

Each test that needs isolation gets a database of its own, copied from a
template (CREATE DATABASE ... TEMPLATE): milliseconds, not a new cluster.
The cluster trades durability for speed (fsync off): it is thrown away.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.support.waiting import scaled

KEEP = ("fleetpatch_migrations",)  # tables empty_tables leaves as they are
RUN_AS = "nobody"  # under root: PostgreSQL will not run as root
# Durability traded for speed: the cluster is thrown away.
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def binaries() -> Path | None:
    """The newest /usr/lib/postgresql/VERSION/bin with initdb, if installed."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def missing_reason() -> str | None:
    """Why no PostgreSQL server can run here; None when one can."""
    if binaries() is None:
        return "PostgreSQL is not installed (Debian package postgresql: make deps)"
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"psycopg cannot load libpq ({exc}; Debian package libpq5: make deps)"
    return None


class PostgresServer:
    """One cluster; ``url(db)`` for a database in it, ``create_database``
    for a fresh one (optionally a copy of a template)."""

    def __init__(self, settings: Sequence[str] = FAST) -> None:
        self.settings = tuple(settings)  # -c NAME=VALUE, each start
        bindir = binaries()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed")
        self.bindir = bindir
        # Short: a unix socket path must fit in 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="fp-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "server.log"
        self._names = itertools.count(1)
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam(RUN_AS)
            self.root.chmod(0o755)  # mkdtemp's 0700 would keep nobody out

    def _run(self, argv: list[str], timeout: float = 60) -> None:
        user = self._user
        done = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
            timeout=scaled(timeout), cwd=self.root,
            user=user.pw_uid if user else None, group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            env={"PATH": f"{self.bindir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        )  # fmt: skip
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{argv[0]} exited {done.returncode}: {done.stderr.strip()}\n{log}".strip()
            )

    def _make_dirs(self) -> None:
        for path in (self.data, self.socket_dir):
            path.mkdir(mode=0o700)
            if self._user is not None:
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        self.log.touch()
        if self._user is not None:
            os.chown(self.log, self._user.pw_uid, self._user.pw_gid)

    def start(self) -> None:
        """Make the cluster and start the server."""
        self._make_dirs()
        # Locale C: text sorts by code point, as SQLite's does.
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "--locale=C", "--encoding=UTF8", "--no-sync"])  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Start the server (again) on the cluster."""
        options = (
            f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}'"
            f" -c max_connections=200 {' '.join(f'-c {s}' for s in self.settings)}"
        )
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                   "-o", options, "-w", "-t", str(int(scaled(60))), "start"])  # fmt: skip

    def standby(self, settings: Sequence[str] = FAST) -> PostgresServer:
        """A streaming standby of this server (pg_basebackup), started."""
        standby = PostgresServer(settings)
        standby._make_dirs()
        standby._run([str(self.bindir / "pg_basebackup"), "-D", str(standby.data), "-R",
                      "-X", "stream", "-d", f"host={self.socket_dir} user=postgres"])  # fmt: skip
        standby.resume()
        return standby

    def promote(self) -> None:
        """A standby made the primary (what a failover manager does)."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "promote"])

    def crash(self) -> None:
        """Stop at once, without a checkpoint, as a machine lost would."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                   "-w", "stop"])  # fmt: skip

    def halt(self) -> None:
        """Stop the server, keeping the cluster (a database outage)."""
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.crash()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one statement outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, template: str = "template0") -> str:
        """A new, empty (or template-copied) database; its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def empty_tables(
        self, database: str, keep: tuple[str, ...] = ("fleetpatch_migrations",)
    ) -> None:
        """Empty every table of ``database`` but ``keep``, in one statement."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
            names = ", ".join(f'"{name}"' for (name,) in rows if name not in keep)
            if names:
                conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE".encode())

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
