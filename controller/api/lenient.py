"""Registering servicers so that a request that does not parse is answered
INVALID_ARGUMENT in one log line, like any other bad input.

The generated ``add_*Servicer_to_server`` functions decode requests with
``FromString``; garbage bytes then raise inside gRPC, which answers UNKNOWN
and logs a traceback per call: an easy way for any peer to fill the logs.
Here each method's request is decoded leniently: bytes that do not parse
become a `Malformed` value, and the servicer's `rpc` wrapper refuses it.
(Client-streaming methods keep strict decoding: one is admin-only.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.message_factory import GetMessageClass


class Malformed:
    """A request whose bytes did not parse; ``problem`` says why."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


def _lenient(message: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def decode(data: bytes) -> Message | Malformed:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(f"the request is not a valid {message.DESCRIPTOR.name}: {exc}")

    return decode


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
            decode = _lenient(request)
        handlers[method.name] = make(
            behaviour, request_deserializer=decode, response_serializer=serialize
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
