"""The dependency direction of DESIGN.md: agent and controller never import
each other; nothing imports the simulator; the wire package imports
neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "agent": {"controller", "simulator"},
    "controller": {"agent", "simulator"},
    "proto/fleetpatch": {"agent", "controller", "simulator"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_it_must_not(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = {
        str(f.relative_to(ROOT)): sorted(_imports(f) & FORBIDDEN[package])
        for f in files
        if _imports(f) & FORBIDDEN[package]
    }
    assert not bad, f"forbidden imports: {bad}"


def test_the_controller_server_loads_no_cli():
    """The server process must not pay for (or depend on) the admin CLI.
    (click is not checked: sqlite-utils loads it for its own CLI's plugins.)"""
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import sys, controller.api.server; print(' '.join(sorted(m for m in sys.modules "
         "if m.split('.')[0] in ('typer', 'rich') or m.startswith('controller.cli'))))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert loaded.stdout.strip() == ""


def test_the_admin_cli_loads_no_store_no_version_schemes_and_no_campaign_engine():
    """Every `fleetpatch` command starts by importing controller.cli.main;
    the store (sqlite-utils), the feeds' version schemes (univers) and the
    campaign rules with the model conversion (controller.campaigns,
    controller.model) would add about a third to the start of each, so only
    the commands that use them (controller init, rotate-ca, vulns import,
    plan, campaign create and list, audit verify) import them."""
    heavy = ("controller.store", "controller.campaigns", "controller.model",
             "controller.api.convert", "controller.checkpoint")  # fmt: skip
    loaded = subprocess.run(
        [sys.executable, "-c",
         "import sys, controller.cli.main; print(' '.join(sorted(m for m in sys.modules "
         "if m.split('.')[0] in ('sqlite_utils', 'univers')"
         f" or m.startswith({heavy!r}))))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert loaded.stdout.strip() == ""
