"""A record storage always fails (INTERNAL) no longer blocks the records behind it: after
CAPTURE_MAX_ATTEMPTS it moves to the spool's dead-letter area, with the reason, and can be
put back in line. A storage that is down (UNAVAILABLE) is waited for, as ever.

The sender runs for real against a real gRPC server on loopback; that server is a stand-in
for storage only because a storage that fails one record with INTERNAL on every attempt
cannot be produced otherwise."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import grpc
import pytest

from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from inference_service.capture.sink import RecordSink
from inference_service.capture.spool import Spool
from tests.integration.helpers import ROW_BYTES, spool_record


class OneRecordFails(storage_pb2_grpc.StorageServicer):
    def __init__(self, poison: set[str]) -> None:
        self.poison = poison
        self.attempts: Counter[str] = Counter()
        self.stored: list[str] = []

    async def Ingest(self, request_iterator, context):  # noqa: N802
        header = None
        async for request in request_iterator:
            if request.WhichOneof("item") == "header":
                header = request.header
        assert header is not None
        self.attempts[header.record_id] += 1
        if header.record_id in self.poison:
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the storage service")
        self.stored.append(header.record_id)
        return storage_pb2.IngestResponse(
            record_id=header.record_id, status=storage_pb2.RECORD_STATUS_COMPLETE
        )


async def until(condition, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_a_record_that_always_fails_is_set_aside_and_the_rest_delivered(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool(tmp_path / "spool")
        ids = [spool_record(spool, f"record {i}") for i in range(4)]
        poison = ids[1]
        fake = OneRecordFails({poison})
        server = grpc.aio.server()
        storage_pb2_grpc.add_StorageServicer_to_server(fake, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        sink = RecordSink(spool, f"127.0.0.1:{port}", max_attempts=3)
        await sink.start()
        try:
            # Storage has the last record a moment before the sink hears so and removes it.
            await until(lambda: len(fake.stored) == 3 and spool.ready() == [])
            assert sink.last_error == ""  # the last send succeeded
            assert fake.stored == [ids[0], ids[2], ids[3]], "the rest, in order"
            assert fake.attempts[poison] == 3
            [(dead, reason)] = spool.dead_letters()
            assert dead == poison and "INTERNAL after 3 attempts" in reason
            assert spool.ready() == []
            assert spool.usage()[0] == 0  # no record waits; the dead letter is aside

            # Fixed on storage's side: put it back in line, and it is delivered.
            fake.poison.clear()
            assert sink.retry_dead_letters() == [poison]
            await until(lambda: poison in fake.stored)
            assert spool.dead_letters() == []
            assert sink.retry_dead_letters([new_record_id()]) == []
        finally:
            await sink.stop()
            await server.stop(None)

    asyncio.run(scenario())


def test_storage_down_is_waited_for_not_dead_lettered(tmp_path: Path) -> None:
    async def scenario() -> None:
        spool = Spool(tmp_path / "spool")
        record_id = spool_record(spool, "waits")
        sink = RecordSink(spool, "127.0.0.1:1", max_attempts=2)  # nothing listens there
        await sink.start()
        try:
            await until(lambda: sink.failures >= 4)
            assert spool.dead_letters() == [] and spool.ready() == [record_id]
            assert not sink.reachable
            assert sink.last_error.startswith("UNAVAILABLE: ")  # what /health shows
        finally:
            await sink.stop()

    asyncio.run(scenario())


def test_dead_letters_keep_their_data_and_header(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    record_id = spool_record(spool, "aside")
    where = spool.dead_letter(record_id, "INVALID_ARGUMENT after 1 attempts: bad layers")
    assert json.loads((where / "header.json").read_text())["header"]["record_id"] == record_id
    assert (where / "layer_0.bin").stat().st_size == 2 * ROW_BYTES
    assert spool.dead_letters() == [(record_id, "INVALID_ARGUMENT after 1 attempts: bad layers")]
    assert spool.usage()[1] >= 2 * ROW_BYTES  # it still holds disk space
    with pytest.raises(FileNotFoundError):
        spool.load(record_id)
