"""`convert.to_json`, read at every check-in, converts plain messages
itself: it must give what protobuf's own JSON mapping gives (with 64-bit
integers as numbers), for every shape of message it takes on."""

from __future__ import annotations

import random

import pytest
from fleetpatch.v1 import admin_pb2, agent_pb2, types_pb2
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from controller.api import convert


def reference(message: Message) -> dict[str, object]:
    doc = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    convert._int64_as_numbers(message, doc)
    return doc


def facts(rng: random.Random) -> types_pb2.HostFacts:
    message = types_pb2.HostFacts()
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.5:
            continue
        if field.type == field.TYPE_STRING:
            setattr(message, field.name, rng.choice(["", "debian", "ünïcode", "x" * 300]))
        else:  # uint32 / uint64, up to their largest
            bits = 64 if field.type == field.TYPE_UINT64 else 32
            setattr(message, field.name, rng.choice([0, 1, 2**bits - 1, rng.getrandbits(bits)]))
    return message


def health(rng: random.Random) -> types_pb2.HealthSummary:
    message = types_pb2.HealthSummary(healthy=rng.random() < 0.5)
    for n in range(rng.randrange(4)):
        message.checks.add(name=f"c{n}", kind=rng.choice(["", "tcp"]), ok=rng.random() < 0.5,
                           detail=rng.choice(["", "fine"]))  # fmt: skip
    if rng.random() < 0.5:
        message.observed_at.FromNanoseconds(rng.getrandbits(62))
    return message


@pytest.mark.parametrize("seed", range(200))
def test_facts_and_health_convert_as_protobuf_s_json_mapping_does(seed):
    rng = random.Random(seed)
    for message in (facts(rng), health(rng)):
        assert convert.to_json(message) == reference(message)


@pytest.mark.parametrize(
    "message",
    [
        types_pb2.SigningKey(key_id="k", public_key=b"\x00\xff"),  # bytes
        agent_pb2.CheckInResponse(next_checkin=Duration(seconds=300)),  # a Duration, nested orders
        admin_pb2.Host(host_id="h", labels={"role": "web"}),  # a map
    ],
    ids=["bytes", "duration", "map"],
)
def test_messages_it_does_not_convert_itself_go_through_json_format(message):
    assert convert.to_json(message) == reference(message)


def test_a_converted_document_owns_its_lists():
    first = convert.to_json(types_pb2.HealthSummary())
    first["checks"].append({"name": "added"})
    assert convert.to_json(types_pb2.HealthSummary())["checks"] == []


def test_a_listed_campaign_carries_what_its_file_says_but_not_the_file() -> None:
    from datetime import UTC, datetime, timedelta

    from controller.campaigns import parse_campaign
    from controller.campaigns.tallies import CampaignState
    from controller.model import CampaignRecord

    text = (
        '[campaign]\nname = "up"\n[agent_update]\nversion = "0.2.0"\nrollback_after = "7m"\n'
        "[[rollout.rings]]\nring = 0\n"
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    record = CampaignRecord("c-1", "up", text, CampaignState.DRAFT, now, "admin:a", now)
    spec = parse_campaign(text, "c-1")
    listed = convert.campaign_to_pb(record, [], spec, with_text=False)
    assert listed.spec == ""
    assert (listed.kind, listed.agent_update_version) == ("agent-update 0.2.0", "0.2.0")
    assert listed.agent_update_rollback_after.ToTimedelta() == timedelta(minutes=7)
    shown = convert.campaign_to_pb(record, [], spec)
    assert shown.spec == text
