"""What the storage tests share beside their fixtures (conftest.py)."""

from __future__ import annotations

from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.testing import SyntheticRecord


def ingest(
    stub: storage_pb2_grpc.StorageStub, record: SyntheticRecord, rows_per_chunk: int = 5
) -> SyntheticRecord:
    """Store `record` in chunks of `rows_per_chunk` rows; it must come out COMPLETE."""
    reply = stub.Ingest(iter(record.requests(rows_per_chunk)), timeout=120)
    assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE
    return record
