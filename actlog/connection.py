"""A fork-safe gRPC connection to storage, and the mapping of its failures to typed errors."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from actlog.errors import from_rpc_error
from actlog_common.defaults import BULK_STREAM_OPTIONS, message_size_options
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from actlog_common.wire import decode_chunk

CHANNEL_OPTIONS = [*message_size_options(-1), *BULK_STREAM_OPTIONS]


@dataclass(frozen=True)
class Connection:
    """A gRPC channel to storage and its stubs, owned by the process that opened it."""

    channel: grpc.Channel
    stub: storage_pb2_grpc.StorageStub
    stream_activations: Any
    pid: int

    @classmethod
    def open(cls, address: str, security: GrpcSecurity) -> Connection:
        # A subchannel pool of its own: gRPC otherwise shares connections between channels
        # to the same address, so a forked child's new channel would reuse the TCP
        # connection it inherited ("Wrong file descriptor generation").
        options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
        channel = security.channel(address, options=options)
        # Chunks as views into the received messages: one copy of the rows fewer.
        stream = channel.unary_stream(
            f"/{storage_pb2.DESCRIPTOR.services_by_name['Storage'].full_name}/StreamActivations",
            request_serializer=storage_pb2.StreamActivationsRequest.SerializeToString,
            response_deserializer=decode_chunk,
        )
        return cls(channel, storage_pb2_grpc.StorageStub(channel), stream, os.getpid())


class ProcessConnection:
    """The calling process's own Connection: opened afresh in a forked child.

    Connections a forked child inherited are never used or closed there, since their
    sockets and gRPC's polling state belong to the parent.
    """

    def __init__(self, address: str, security: GrpcSecurity) -> None:
        self.address = address
        self._security = security
        self._connection = Connection.open(address, security)
        self._inherited: list[Connection] = []
        self._lock = threading.Lock()

    @property
    def live(self) -> Connection:
        connection = self._connection
        if connection.pid == os.getpid():
            return connection
        with self._lock:
            if self._connection.pid != os.getpid():
                self._inherited.append(self._connection)
                self._connection = Connection.open(self.address, self._security)
            return self._connection

    def close(self) -> None:
        if self._connection.pid == os.getpid():
            self._connection.channel.close()


def call(method: Any, request: Any, timeout: float) -> Any:
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


def stream(method: Any, request: Any, timeout: float) -> Iterator[Any]:
    try:
        yield from method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
