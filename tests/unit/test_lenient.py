"""`controller.api.lenient` on a real grpc.aio server (loopback, no TLS):
requests read after admission, through the call's context."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from fleetpatch.v1 import agent_pb2, agent_pb2_grpc

from controller.api import lenient
from controller.api.servicers import rpc, rpc_stream

SERVICE = agent_pb2.DESCRIPTOR.services_by_name["AgentService"]


class _Agents(agent_pb2_grpc.AgentServiceServicer):
    """CheckIn echoes the inventory hash and how many packages came;
    Watch nudges twice. No admission: `rpc` serves any caller."""

    @rpc
    async def CheckIn(
        self, request: agent_pb2.CheckInRequest, context: object
    ) -> agent_pb2.CheckInResponse:
        return agent_pb2.CheckInResponse(
            known_inventory_hash=f"{request.inventory_hash}/{len(request.inventory.packages)}"
        )

    @rpc_stream
    async def Watch(
        self, request: agent_pb2.WatchRequest, context: object
    ) -> AsyncIterator[agent_pb2.Nudge]:
        for reason in ("campaign", "revert"):
            yield agent_pb2.Nudge(reason=reason)


def _served(test: Callable[[grpc.aio.Channel], Awaitable[None]]) -> None:
    async def run() -> None:
        server = grpc.aio.server()
        lenient.add_servicer(server, _Agents(), SERVICE)  # type: ignore[abstract]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                await test(channel)
        finally:
            await server.stop(None)

    asyncio.run(run())


def test_requests_are_read_and_decoded_small_and_large():
    large = agent_pb2.CheckInRequest(inventory_hash="big")
    large.inventory.packages.add(name="p" * 100, version="1", arch="all")
    while large.ByteSize() <= lenient.DECODE_INLINE_BYTES:  # decoded off the loop
        large.inventory.packages.add().CopyFrom(large.inventory.packages[0])

    async def test(channel: grpc.aio.Channel) -> None:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        small = await stub.CheckIn(agent_pb2.CheckInRequest(inventory_hash="h"))
        assert small.known_inventory_hash == "h/0"
        answered = await stub.CheckIn(large)
        assert answered.known_inventory_hash == f"big/{len(large.inventory.packages)}"
        nudges = [n.reason async for n in stub.Watch(agent_pb2.WatchRequest())]
        assert nudges == ["campaign", "revert"]

    _served(test)


def test_a_call_without_its_request_is_invalid_argument():
    async def test(channel: grpc.aio.Channel) -> None:
        # Unary on the wire is a stream of one message; send none.
        call = channel.stream_unary(
            f"/{SERVICE.full_name}/CheckIn",
            request_serializer=agent_pb2.CheckInRequest.SerializeToString,
            response_deserializer=agent_pb2.CheckInResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(_nothing())
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "the call carries no CheckInRequest"

    _served(test)


async def _nothing() -> AsyncIterator[agent_pb2.CheckInRequest]:
    return
    yield  # an async generator that yields nothing


def test_no_async_generator_is_left_to_the_event_loop_per_call():
    """The request stream gRPC passes a handler is an async generator; read
    through it, each call left one half-read for the event loop to finalize
    (a thread-safe callback and a task, per call). Read through the
    context, a call starts none."""
    started: list[Any] = []

    async def test(channel: grpc.aio.Channel) -> None:
        hooks = sys.get_asyncgen_hooks()  # the running loop's

        def firstiter(agen: Any) -> None:
            started.append(agen)
            if hooks.firstiter is not None:
                hooks.firstiter(agen)

        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=hooks.finalizer)
        try:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            for n in range(20):
                answered = await stub.CheckIn(agent_pb2.CheckInRequest(inventory_hash=str(n)))
                assert answered.known_inventory_hash == f"{n}/0"
        finally:
            sys.set_asyncgen_hooks(*hooks)

    _served(test)
    assert started == []
