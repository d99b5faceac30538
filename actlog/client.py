"""Python client of the storage service: find records, read their activations.

    from actlog.client import StorageClient

    with StorageClient("127.0.0.1:50052") as client:
        records = client.find_by_prompt("What is the capital of France?")
        acts = client.get_activations(records[0], layers=[-1])  # a Record or a record id
        acts[30].shape  # (num_positions, hidden_size), float32
        client.set_labels(records[0].record_id, {"hallucinated": "false"})
        for record in client.iter_records(model="m", labels={"hallucinated": "true"}):
            ...

Failed calls raise the typed errors of `actlog.errors`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from actlog.connection import Connection, ProcessConnection, call, stream
from actlog.errors import InvalidArgumentError, NotFoundError, WaitTimeoutError
from actlog.features import Features, collect, features_request
from actlog.filters import RecordFilter
from actlog.reads.plan import ReadPlan
from actlog.reads.shm import MAX_ARENA_BYTES
from actlog.reads.stream import ActivationReads, Transport
from actlog.records import DeletedRecord, ModelStats, Record, StorageStats, resolve_record_layers
from actlog_common.defaults import STORAGE_ADDR
from actlog_common.dtypes import bf16_bits_to_float32, to_float32
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.hashing import prompt_hash as hash_prompt
from actlog_common.layers import LayerChoice, LayerSpec
from actlog_common.v1 import storage_pb2, storage_pb2_grpc

__all__ = [
    "DeletedRecord",
    "Features",
    "ModelStats",
    "Record",
    "StorageClient",
    "StorageStats",
    "bf16_bits_to_float32",
    "resolve_record_layers",
    "to_float32",
]

logger = logging.getLogger(__name__)


class StorageClient:
    """Blocking client of the storage service; usable as a context manager.

    `timeout` (seconds) bounds every call, a whole activation stream included (a read
    larger than the shared-memory arena makes one call per piece).

    `transport` picks how activations travel: "stream" in gRPC messages; "shm" through
    a shared-memory segment the client owns, which the storage service fills (same host
    only, several times faster); "auto" (default) uses shared memory when the address
    is on this host and switches to the stream for good if the service cannot open the
    segment (e.g. it runs in a container). Arenas hold at most `shm_arena_bytes` each
    (larger reads are split) and are reused from read to read. With `local_socket`,
    shared-memory reads are requested on storage's local read socket when it serves one
    (same requests, same answers, without gRPC's per-call cost), else over gRPC.
    """

    def __init__(
        self,
        address: str = STORAGE_ADDR,
        timeout: float = 30.0,
        transport: Transport = "auto",
        shm_arena_bytes: int = MAX_ARENA_BYTES,
        local_socket: bool = True,
        security: GrpcSecurity | None = None,
    ) -> None:
        self.address = address
        self.transport = transport
        # TLS and the shared token: GRPC_TLS_CA, GRPC_TLS_CERT, GRPC_TLS_KEY, GRPC_AUTH_TOKEN.
        self._connection = ProcessConnection(address, security or GrpcSecurity.from_env())
        try:
            self._reads = ActivationReads(
                self._connection, timeout, transport, shm_arena_bytes, local_socket
            )
        except BaseException:
            self._connection.close()
            raise

    @property
    def timeout(self) -> float:
        """Seconds every call may take (reads included); may be changed at any time."""
        return self._reads.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._reads.timeout = seconds

    @property
    def activation_transport(self) -> Literal["stream", "shm"]:
        """How the next get_activations call reads: "shm" or "stream"."""
        return self._reads.current

    @property
    def local_socket_reads(self) -> int:
        """How many reads storage's local read socket answered (diagnostics)."""
        return self._reads.local_socket_reads

    @property
    def _live(self) -> Connection:
        """This process's own gRPC connection, opened afresh in a forked child."""
        return self._connection.live

    @property
    def _stub(self) -> storage_pb2_grpc.StorageStub:
        return self._live.stub

    def close(self) -> None:
        self._connection.close()
        self._reads.close()

    def __enter__(self) -> StorageClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- records --------------------------------------------------------------------

    def find_by_prompt_hash(self, prompt_hash: str, model: str | None = None) -> list[Record]:
        """Every record (complete or partial) of this prompt hash, newest first."""
        request = storage_pb2.FindByPromptHashRequest(prompt_hash=prompt_hash, model=model or "")
        response = self._call(self._stub.FindByPromptHash, request)
        return [Record.from_pb(header) for header in response.records]

    def find_by_prompt(self, prompt: str, model: str | None = None) -> list[Record]:
        """Records of this exact prompt text (hashed as SHA-256 of its UTF-8), newest first."""
        return self.find_by_prompt_hash(hash_prompt(prompt), model=model)

    def get_record(self, record_id: str) -> Record:
        request = storage_pb2.GetRecordRequest(record_id=record_id)
        return Record.from_pb(self._call(self._stub.GetRecord, request))

    def wait_for_record(
        self,
        prompt_hash: str,
        count: int = 1,
        timeout: float = 30.0,
        model: str | None = None,
        poll_interval: float = 0.1,
    ) -> list[Record]:
        """Poll until at least `count` COMPLETE records of `prompt_hash` exist.

        Storage is asynchronous (captures reach it after the response); this returns the
        complete records, newest first, or raises WaitTimeoutError after `timeout` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            complete = [r for r in self.find_by_prompt_hash(prompt_hash, model) if r.is_complete]
            if len(complete) >= count:
                return complete
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"{len(complete)} complete record(s) of prompt hash {prompt_hash} after "
                    f"{timeout} s, wanted {count}"
                )
            time.sleep(poll_interval)

    def wait_for_record_id(
        self, record_id: str, timeout: float = 30.0, poll_interval: float = 0.1
    ) -> Record:
        """Poll until the record `record_id` (as the gateway named it) is COMPLETE.

        NotFoundError while it is on its way is waited out; other errors are raised as they
        come; WaitTimeoutError after `timeout` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                record = self.get_record(record_id)
                if record.is_complete:
                    return record
            except NotFoundError:
                pass
            if time.monotonic() >= deadline:
                raise WaitTimeoutError(f"record {record_id} was not stored within {timeout:.0f} s")
            time.sleep(poll_interval)

    def stats(self) -> StorageStats:
        return StorageStats.from_pb(self._call(self._stub.Stats, storage_pb2.StatsRequest()))

    def list_records(
        self,
        where: RecordFilter | None = None,
        *,
        model: str | None = None,
        labels: Mapping[str, str] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> tuple[list[Record], str]:
        """One page of the records `where` selects (a `RecordFilter`, or its conditions as
        keywords), newest first.

        `labels`: every key must be present with exactly this value. Times are Unix ms
        on `created_at_ms`, `since_ms` included, `until_ms` excluded. Returns the page
        and the token of the next one ("" when no records are left). A page may be
        shorter than `page_size`, even empty, with a token: keep paging, or use
        `iter_records`.
        """
        where = _filter(where, model, labels, since_ms, until_ms)
        request = storage_pb2.ListRecordsRequest(
            **where.request_fields(), page_size=page_size, page_token=page_token
        )
        response = self._call(self._stub.ListRecords, request)
        return [Record.from_pb(h) for h in response.records], response.next_page_token

    def iter_records(
        self,
        where: RecordFilter | None = None,
        *,
        model: str | None = None,
        labels: Mapping[str, str] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        page_size: int = 100,
    ) -> Iterator[Record]:
        """Every record `where` selects (as `list_records`), newest first, page by page."""
        where = _filter(where, model, labels, since_ms, until_ms)
        token = ""
        while True:
            page, token = self.list_records(where, page_size=page_size, page_token=token)
            yield from page
            if not token:
                return

    def set_labels(
        self, record_id: str, labels: Mapping[str, str], remove: Iterable[str] = ()
    ) -> Record:
        """Add or overwrite `labels` and drop the keys in `remove`; the updated record.

        Labels are free-form strings (e.g. ``{"hallucinated": "true", "judge": "gpt"}``);
        changing them never rewrites the record's activations.
        """
        request = storage_pb2.SetLabelsRequest(
            record_id=record_id, labels=dict(labels), remove=list(remove)
        )
        return Record.from_pb(self._call(self._stub.SetLabels, request))

    def delete_record(self, record_id: str) -> DeletedRecord:
        """Remove a record, its activations and labels; NotFoundError when unknown."""
        request = storage_pb2.DeleteRecordRequest(record_id=record_id)
        response = self._call(self._stub.DeleteRecord, request)
        return DeletedRecord(
            record_id=response.record_id,
            activation_bytes=response.activation_bytes,
            stored_bytes=response.stored_bytes,
        )

    # -- activations ----------------------------------------------------------------

    def get_activations(
        self,
        record: str | Record,
        layers: LayerChoice = None,
        row_start: int = 0,
        row_end: int | None = None,
        as_float32: bool = True,
    ) -> dict[int, np.ndarray]:
        """Activations of one complete record: {layer: array of (rows, hidden_size)}.

        `layers`: stored layer numbers (0 = embeddings ... num_layers = final-normed
        output); negative counts from the end (-1 = num_layers); a preset (`last`,
        `recommended`: those of them the record stores); None or `all` = every stored
        layer. Keys of the result are the non-negative layer numbers. Rows are
        [row_start, row_end), row_end None (or 0) = to the end.

        With `as_float32` the values are float32 (bfloat16 and float16 convert exactly).
        Without it they keep the stored dtype; bfloat16, which numpy lacks, comes back as
        its uint16 bit patterns (convert with `bf16_bits_to_float32`).

        `record` is a record id or a `Record` already in hand (from `find_by_prompt`,
        `iter_records`...), which saves a round trip: the shape fields used here never
        change once a record exists.

        The arrays are the caller's own: nothing else writes to their memory. Read over
        shared memory without conversion, they live in a shared-memory arena that returns
        to the client's pool when they (and every view of them) are gone.
        """
        if not isinstance(record, Record):
            record = self.get_record(record)
        chosen = resolve_record_layers(record, layers)
        selection = ReadPlan(record, chosen, chosen, row_start, row_end or 0)
        return self._reads.read(selection, as_float32)

    def features(
        self,
        record_ids: Sequence[str] | None = None,
        *,
        layers: LayerChoice = None,
        pooling: str = "last_prompt",
        position: int = 0,
        where: RecordFilter | None = None,
        model: str | None = None,
        labels: Mapping[str, str] | None = None,
        since_ms: int | None = None,
        until_ms: int | None = None,
        skip_unusable: bool = False,
        timeout: float | None = None,
    ) -> Features:
        """One pooled float32 vector per record and layer, computed in storage.

        Records: `record_ids` in that order, or every record `where` selects (a
        `RecordFilter` or its conditions as keywords, as `iter_records`; newest first).
        `layers` as in `get_activations`, resolved against the first record (None or
        `all`: every layer it stores). `pooling`:
        "last_prompt" (the row that predicted the first response token), "mean_prompt",
        "mean_response", "last_response" or "position" (row `position`, negative from
        the end); `actlog_common.pooling` defines each. Only the vectors travel.

        A record that cannot give them (partial, unknown, without the layers or rows)
        fails the call, or with `skip_unusable` is left out and listed in `skipped`.
        `timeout` bounds the whole call (default: the client's).
        """
        where = _filter(where, model, labels, since_ms, until_ms)
        if record_ids and not where.empty:
            raise InvalidArgumentError("give record ids or a filter, not both")
        chosen = self._feature_layers(LayerSpec.parse(layers), record_ids, where)
        request = features_request(record_ids, chosen, pooling, position, where, skip_unusable)
        batches = stream(self._stub.Features, request, timeout or self.timeout)
        return collect(request.pooling, batches)

    def _feature_layers(
        self, spec: LayerSpec, record_ids: Sequence[str] | None, where: RecordFilter
    ) -> list[int]:
        """The Features call's layers: storage resolves indices against each record (empty =
        every layer of the first); a `last` or `recommended` preset is resolved here."""
        if spec.preset == "all":
            return []
        if spec.preset == "last":
            return [-1]
        if not spec.preset:
            return list(spec.indices)
        first = (
            self.get_record(record_ids[0])
            if record_ids
            else next(iter(self.iter_records(where, page_size=1)), None)
        )
        if first is None:
            return []  # nothing selected: the call says so
        return resolve_record_layers(first, spec)

    # -- plumbing -------------------------------------------------------------------

    def _call(self, method: Any, request: Any) -> Any:
        return call(method, request, self.timeout)


def _filter(
    where: RecordFilter | None,
    model: str | None,
    labels: Mapping[str, str] | None,
    since_ms: int | None,
    until_ms: int | None,
) -> RecordFilter:
    try:
        return RecordFilter.of(
            where, model=model, labels=labels, since_ms=since_ms, until_ms=until_ms
        )
    except ValueError as error:
        raise InvalidArgumentError(str(error)) from None
