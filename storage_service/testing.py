"""Build Ingest streams from numpy arrays: for tests, benchmarks and tools.

requests = ingest_requests(header, {0: emb, 30: last}, rows_per_chunk=64)
stub.Ingest(iter(requests))
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from actlog_common.dtypes import DTYPES, float32_to_bf16_bits
from actlog_common.hashing import prompt_hash
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2


def ingest_requests(
    header: storage_pb2.RecordHeader,
    activations: Mapping[int, np.ndarray],
    rows_per_chunk: int = 256,
    *,
    sha256: str | None = None,
    num_chunks: int | None = None,
) -> list[storage_pb2.IngestRequest]:
    """Header, chunks of `rows_per_chunk` rows (layer by layer) and a commit.

    `activations` maps each of ``header.layers`` to a (num_positions, hidden_size) array
    already in the record's wire form: float32/float16 values, or uint16 bit patterns for
    bfloat16 (see `float32_to_bf16_bits`). `sha256` / `num_chunks` override the commit's
    values (to test rejection).
    """
    wire = np.dtype(DTYPES[header.dtype].numpy)
    requests = [storage_pb2.IngestRequest(header=header)]
    digest = hashlib.sha256()
    sequence = 0
    for layer in header.layers:
        values = np.ascontiguousarray(activations[layer]).astype(wire, copy=False)
        for start in range(0, values.shape[0], rows_per_chunk):
            rows = values[start : start + rows_per_chunk]
            data = rows.tobytes()
            digest.update(data)
            chunk = storage_pb2.ActivationChunk(
                record_id=header.record_id,
                sequence=sequence,
                layer=layer,
                row_start=start,
                row_count=rows.shape[0],
                data=data,
            )
            requests.append(storage_pb2.IngestRequest(chunk=chunk))
            sequence += 1
    commit = storage_pb2.IngestCommit(
        record_id=header.record_id,
        num_chunks=sequence if num_chunks is None else num_chunks,
        sha256=digest.hexdigest() if sha256 is None else sha256,
    )
    requests.append(storage_pb2.IngestRequest(commit=commit))
    return requests


@dataclass(frozen=True)
class SyntheticRecord:
    """A record with random activations: its header, wire arrays and float32 values."""

    header: storage_pb2.RecordHeader
    wire: dict[int, np.ndarray]  # per layer, as sent (uint16 bit patterns for bfloat16)
    values: dict[int, np.ndarray]  # per layer, the exact float32 values of `wire`

    def requests(self, rows_per_chunk: int = 256, **commit: Any) -> list[storage_pb2.IngestRequest]:
        return ingest_requests(self.header, self.wire, rows_per_chunk, **commit)


def synthetic_record(
    prompt: str = "What is the capital of France?",
    *,
    model: str = "test-model",
    dtype: str = "bfloat16",
    layers: Sequence[int] = (0, 2, 4),
    num_layers: int = 4,
    num_positions: int = 12,
    hidden_size: int = 16,
    seed: int = 0,
    record_id: str | None = None,
    **fields: Any,
) -> SyntheticRecord:
    """A complete, consistent record (header fields may be overridden via `fields`)."""
    rng = np.random.default_rng(seed)
    prompt_length = max(1, min(5, num_positions))
    token_ids = [int(t) for t in rng.integers(0, 49_152, num_positions + 1)]
    header = storage_pb2.RecordHeader(
        record_id=record_id or new_record_id(),
        prompt_hash=prompt_hash(prompt),
        prompt=prompt,
        response=f"response {seed}",
        model=model,
        token_ids=token_ids,
        token_strings=[f"<t{t}>" for t in token_ids],
        prompt_length=prompt_length,
        sampling_params_json=json.dumps({"temperature": 0.7, "max_tokens": 8, "seed": seed}),
        layers=list(layers),
        num_positions=num_positions,
        hidden_size=hidden_size,
        dtype=dtype,
        num_layers=num_layers,
        finish_reason="length",
        created_at_ms=int(time.time() * 1000),
        labels={"source": "synthetic"},
        choice_index=0,
        request_id=f"req-{seed}",
    )
    for name, value in fields.items():
        if isinstance(value, (list, tuple, dict)):
            header.ClearField(name)
            if isinstance(value, dict):
                getattr(header, name).update(value)
            else:
                getattr(header, name).extend(value)
        else:
            setattr(header, name, value)
    wire: dict[int, np.ndarray] = {}
    values: dict[int, np.ndarray] = {}
    for layer in header.layers:
        f32 = rng.standard_normal((header.num_positions, header.hidden_size), dtype=np.float32)
        if dtype == "bfloat16":
            wire[layer] = float32_to_bf16_bits(f32)
            values[layer] = (wire[layer].astype(np.uint32) << 16).view(np.float32)
        else:
            wire[layer] = f32.astype(DTYPES[dtype].numpy)
            values[layer] = wire[layer].astype(np.float32)
    return SyntheticRecord(header, wire, values)
