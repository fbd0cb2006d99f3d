"""The committed generated code is exactly what `make proto` produces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
GENERATED = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def test_generated_code_is_fresh(tmp_path):
    if shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy-protobuf is not installed in this environment (make test installs it)")
    protos = sorted(p.relative_to(PROTO) for p in (PROTO / "fleetpatch" / "v1").glob("*.proto"))
    assert protos, "no .proto files found"
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", "-I.",
            f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}", f"--mypy_grpc_out={tmp_path}",
            *map(str, protos),
        ],
        cwd=PROTO,
        check=True,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )  # fmt: skip
    stale = []
    for proto in protos:
        stem = str(proto)[: -len(".proto")]
        for suffix in GENERATED:
            fresh = (tmp_path / (stem + suffix)).read_bytes()
            committed = PROTO / (stem + suffix)
            if not committed.exists() or committed.read_bytes() != fresh:
                stale.append(str(committed.relative_to(ROOT)))
    assert not stale, f"generated code is stale, run `make proto`: {stale}"
