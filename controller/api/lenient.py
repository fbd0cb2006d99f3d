"""Registering servicers so that a request that does not parse is answered
INVALID_ARGUMENT in one log line, like any other bad input.

The generated ``add_*Servicer_to_server`` functions decode requests with
``FromString``; garbage bytes then raise inside gRPC, which answers UNKNOWN
and logs a traceback per call: an easy way for any peer to fill the logs.
Here each method's request arrives as `Undecoded` bytes; the servicer's
`rpc` wrapper decodes it (`decoded`) after admitting the caller, and bytes
that do not parse are a UsageError like any other. (Client-streaming
methods keep strict decoding: the one there is is admin-only.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass

from controller.errors import UsageError

# Requests larger than this are decoded on a worker thread, so a big
# inventory does not hold up every other call on the event loop.
DECODE_INLINE_BYTES = 64 * 1024


class Undecoded:
    """A request's bytes, decoded only once its caller has been admitted:
    a peer refused for sending too much at once costs no parsing."""

    def __init__(self, data: bytes, message: type[Message]) -> None:
        self.data = data
        self.message = message

    def decode(self) -> Message:
        """The request; raises UsageError for bytes that do not parse."""
        try:
            return self.message.FromString(self.data)
        except DecodeError as exc:
            raise UsageError(
                f"the request is not a valid {self.message.DESCRIPTOR.name}: {exc}"
            ) from None


async def decoded(request: object) -> Any:
    """``request`` decoded (off the event loop when large); other values,
    such as a stream of requests, as they are."""
    if not isinstance(request, Undecoded):
        return request
    if len(request.data) <= DECODE_INLINE_BYTES:
        return request.decode()
    return await asyncio.to_thread(request.decode)


def _deferred(message: type[Message]) -> Callable[[bytes], Undecoded]:
    return lambda data: Undecoded(data, message)


def add_servicer(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Register ``servicer``'s methods for ``service`` with lenient decoding."""
    handlers = {}
    for method in service.methods:
        request = GetMessageClass(method.input_type)
        response = GetMessageClass(method.output_type)
        behaviour = getattr(servicer, method.name)
        serialize = response.SerializeToString
        if method.client_streaming:
            make = (grpc.stream_stream_rpc_method_handler if method.server_streaming
                    else grpc.stream_unary_rpc_method_handler)  # fmt: skip
            decode: Callable[[bytes], Any] = request.FromString
        else:
            make = (grpc.unary_stream_rpc_method_handler if method.server_streaming
                    else grpc.unary_unary_rpc_method_handler)  # fmt: skip
            decode = _deferred(request)
        handlers[method.name] = make(
            behaviour, request_deserializer=decode, response_serializer=serialize
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
