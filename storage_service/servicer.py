"""gRPC servicer: protobuf in, store call, protobuf out. Errors are mapped by interceptors.py."""

from __future__ import annotations

import mmap
import time
from collections.abc import Iterator

import grpc

from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.errors import InvalidRequest
from storage_service.features import FeatureQuery
from storage_service.ingest import IngestSession
from storage_service.metrics import StorageMetrics
from storage_service.queries import Selection
from storage_service.shm import SegmentCache
from storage_service.store import ActivationStore


class StorageServicer(storage_pb2_grpc.StorageServicer):
    def __init__(
        self, store: ActivationStore, segments: SegmentCache, metrics: StorageMetrics
    ) -> None:
        self._store = store
        self._segments = segments
        self._metrics = metrics

    def Ingest(
        self,
        request_iterator: Iterator[storage_pb2.IngestRequest],
        context: grpc.ServicerContext,
    ) -> storage_pb2.IngestResponse:
        started = time.perf_counter()
        session = IngestSession(self._store)
        try:
            for request in request_iterator:
                session.add(request)
            result = session.finish()
        finally:
            session.settle()  # answer only once this stream's writes are settled
        m = self._metrics
        m.ingest_duration.observe(time.perf_counter() - started)
        m.ingest_bytes.inc(result.bytes_written)
        status = storage_pb2.RecordStatus.Name(result.status).removeprefix("RECORD_STATUS_")
        m.ingested_records.labels(status.lower()).inc()
        return storage_pb2.IngestResponse(
            record_id=result.record_id, status=result.status, bytes_written=result.bytes_written
        )

    def GetRecord(
        self, request: storage_pb2.GetRecordRequest, context: grpc.ServicerContext
    ) -> storage_pb2.RecordHeader:
        return self._store.get(request.record_id)

    def FindByPromptHash(
        self, request: storage_pb2.FindByPromptHashRequest, context: grpc.ServicerContext
    ) -> storage_pb2.RecordList:
        headers = self._store.find_by_prompt_hash(request.prompt_hash, request.model)
        return storage_pb2.RecordList(records=headers)

    def StreamActivations(
        self, request: storage_pb2.StreamActivationsRequest, context: grpc.ServicerContext
    ) -> Iterator[bytes]:
        """Serialized ActivationChunks, passed to gRPC as they are (see interceptors.py).

        With `shm_name` the rows go into the caller's shared-memory segment (shm.py) and
        each layer's chunk carries only its offset there.
        """
        if not request.shm_name:
            selection = self._store.select(
                request.record_id, list(request.layers), request.row_start, request.row_end
            )
            return self._metrics.timed_read(
                "stream", selection.nbytes, self._store.stream_activations(selection)
            )
        chunks = self.shm_read(request)  # checks the request before the stream starts
        return (
            storage_pb2.ActivationChunk(
                record_id=request.record_id,
                sequence=sequence,
                layer=layer,
                row_start=row_start,
                row_count=row_count,
                shm_offset=offset,
            ).SerializeToString()
            for sequence, (layer, row_start, row_count, offset) in enumerate(chunks)
        )

    def shm_read(
        self, request: storage_pb2.StreamActivationsRequest
    ) -> Iterator[tuple[int, int, int, int]]:
        """Check a shared-memory read, then (lazily) copy each layer into the segment.

        Yields (layer, row_start, row_count, shm_offset) per layer. Also served by the
        local read socket (local_socket.py).
        """
        selection = self._store.select(
            request.record_id, list(request.layers), request.row_start, request.row_end
        )
        segment = self._segments.open(request.shm_name, request.shm_size)
        if selection.nbytes > request.shm_size:
            raise InvalidRequest(
                f"the selection holds {selection.nbytes} bytes, more than shm_size "
                f"{request.shm_size}"
            )
        return self._metrics.timed_read(
            "shm", selection.nbytes, self._copy(selection, segment.mapping)
        )

    def _copy(self, selection: Selection, out: mmap.mmap) -> Iterator[tuple[int, int, int, int]]:
        rows = selection.row_end - selection.row_start
        offsets = self._store.copy_activations(selection, out)
        for layer, offset in zip(selection.layers, offsets, strict=True):
            yield layer, selection.row_start, rows, offset

    def Stats(
        self, request: storage_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> storage_pb2.StatsResponse:
        stats = self._store.stats()
        return storage_pb2.StatsResponse(
            stored_bytes=stats.stored_bytes,
            records=stats.records,
            complete_records=stats.complete_records,
            activation_bytes=stats.activation_bytes,
            prompt_hashes=stats.prompt_hashes,
            models=[
                storage_pb2.ModelStats(
                    model=model, records=m.records, activation_bytes=m.activation_bytes
                )
                for model, m in stats.models.items()
            ],
            lmdb_used_bytes=stats.lmdb_used_bytes,
            lmdb_map_size=stats.lmdb_map_size,
        )

    def ListRecords(
        self, request: storage_pb2.ListRecordsRequest, context: grpc.ServicerContext
    ) -> storage_pb2.ListRecordsResponse:
        headers, token = self._store.list_records(
            model=request.model,
            labels=dict(request.labels),
            since_ms=request.since_ms,
            until_ms=request.until_ms,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return storage_pb2.ListRecordsResponse(records=headers, next_page_token=token)

    def SetLabels(
        self, request: storage_pb2.SetLabelsRequest, context: grpc.ServicerContext
    ) -> storage_pb2.RecordHeader:
        return self._store.set_labels(request.record_id, dict(request.labels), list(request.remove))

    def DeleteRecord(
        self, request: storage_pb2.DeleteRecordRequest, context: grpc.ServicerContext
    ) -> storage_pb2.DeleteRecordResponse:
        header = self._store.delete(request.record_id)
        return storage_pb2.DeleteRecordResponse(
            record_id=header.record_id,
            activation_bytes=header.activation_bytes,
            stored_bytes=header.stored_bytes,
        )

    def Features(
        self, request: storage_pb2.FeaturesRequest, context: grpc.ServicerContext
    ) -> Iterator[storage_pb2.FeaturesBatch]:
        query = FeatureQuery(self._store, request)  # checks the request before the stream
        return self._metrics.timed_features(query.batches())
