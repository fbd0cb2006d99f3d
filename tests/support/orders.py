"""Signed work orders for tests, made the way the controller makes them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleetpatch.envelope import WORK_ORDER_TYPE, key_id, raw_public_key, seal
from fleetpatch.v1 import types_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def _ts(when: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def trusted(key: Ed25519PrivateKey) -> dict[str, bytes]:
    public = raw_public_key(key.public_key())
    return {key_id(public): public}


def work_order(
    host_id: str,
    sequence: int,
    packages: Sequence[tuple[str, str]] = (("fp-demo", ""),),
    *,
    order_id: str | None = None,
    campaign_id: str = "c-test",
    checks: Sequence[types_pb2.HealthCheckSpec] = (),
    expires_in: timedelta = timedelta(hours=1),
    verify_timeout: timedelta = timedelta(seconds=5),
    now: datetime | None = None,
    action: int = types_pb2.WORK_ORDER_ACTION_PATCH,
    reboot: int = types_pb2.REBOOT_POLICY_NEVER,
    window_closes_at: datetime | None = None,
    restart_services: int = types_pb2.RESTART_POLICY_UNSPECIFIED,
) -> types_pb2.WorkOrder:
    now = now or datetime.now(UTC)
    verify = Duration()
    verify.FromTimedelta(verify_timeout)
    order = types_pb2.WorkOrder(
        order_id=order_id or f"o-{host_id}-{sequence}",
        host_id=host_id,
        campaign_id=campaign_id,
        sequence=sequence,
        issued_at=_ts(now),
        expires_at=_ts(now + expires_in),
        action=action,  # type: ignore[arg-type]
        patch=types_pb2.PatchSpec(
            packages=[types_pb2.PackageTarget(name=n, min_version=v) for n, v in packages]
        ),
        reboot=reboot,  # type: ignore[arg-type]
        checks=list(checks),
        verify_timeout=verify,
        restart_services=restart_services,  # type: ignore[arg-type]
    )
    if window_closes_at is not None:
        order.window_closes_at.CopyFrom(_ts(window_closes_at))
    return order


def sign(order: types_pb2.WorkOrder, key: Ed25519PrivateKey) -> types_pb2.SignedEnvelope:
    return seal(order.SerializeToString(), WORK_ORDER_TYPE, key)


def tcp_check(port: int, name: str = "service") -> types_pb2.HealthCheckSpec:
    return types_pb2.HealthCheckSpec(name=name, tcp=types_pb2.TcpCheck(host="127.0.0.1", port=port))


def command_check(argv: Sequence[str], name: str = "cmd") -> types_pb2.HealthCheckSpec:
    return types_pb2.HealthCheckSpec(name=name, command=types_pb2.CommandCheck(argv=list(argv)))
