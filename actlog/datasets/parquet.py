"""Stored records as Parquet shards that `datasets`, Ray Data, Spark and DuckDB read as-is.

Two layouts (`per`):
- "record": one row per record: ids, model, prompt, response, token counts, each label as
  a string column `label_<key>` (null where a record has none), and per chosen layer a
  column `layer_<i>` of one pooled float32 vector (fixed-size list of hidden_size),
  computed in storage (the Features RPC, `actlog_common.pooling`).
- "token": one row per stored position (for SAEs and token-level probes): ids, `position`
  p, `token_id` (token p), `next_token_id` (token p+1, which row p predicted), `token`,
  `is_prompt` (p < prompt_length), the labels, and `layer_<i>` the row of each layer.

Shards `part-00000.parquet`, ... of about `shard_bytes` of data each; `.manifest.json`
beside them (a hidden file: `datasets`, pyarrow and Spark skip it when reading the folder)
has the totals and what was skipped. Each shard's schema metadata, key `actlog`, holds the
layout, layers, dtype, pooling and the positions convention. Records are streamed a page at
a time: memory holds one page of vectors (one record's rows for "token"), never the
collection.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from actlog.client import Record, StorageClient
from actlog.errors import ActlogError
from actlog.filters import RecordFilter
from actlog_common.layers import LayerChoice, LayerError, LayerSpec
from actlog_common.pooling import POOLING_ROWS, POOLINGS

FORMAT_VERSION = 1
DEFAULT_SHARD_BYTES = 256 << 20
PAGE_RECORDS = 256  # records per Features call ("record")
ROW_GROUP_BYTES = 32 << 20  # rows buffered before a row group is written ("token")
POSITIONS_CONVENTION = (
    "row p of a record is the residual stream at token p, the state that predicted token "
    "p+1; rows [0, prompt_length) are the prompt's tokens; num_positions = prompt_length "
    "+ generated tokens - 1; layer 0 = embeddings, num_layers = final-normed output"
)
Per = Literal["record", "token"]
TokenRows = Literal["all", "prompt", "response"]


@dataclass
class ExportSummary:
    directory: Path
    per: str
    layers: list[int]
    hidden_size: int
    records: int = 0
    rows: int = 0
    shards: list[str] = field(default_factory=list)
    data_bytes: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    label_keys: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        return data


class ShardWriter:
    """Parquet files of about `shard_bytes` each under one schema, opened as needed."""

    def __init__(self, directory: Path, schema: Any, shard_bytes: int, compression: str) -> None:
        self.directory = directory
        self.schema = schema
        self.shard_bytes = shard_bytes
        self.compression = compression
        self.shards: list[str] = []
        self.data_bytes = 0
        self._writer: Any = None
        self._in_shard = 0

    def write(self, batch: Any) -> None:
        """Append `batch`, split across shards where it would overfill the current one."""
        row_bytes = max(1, batch.nbytes // max(1, batch.num_rows))
        while batch.num_rows:
            room = max(1, (self.shard_bytes - self._in_shard) // row_bytes)
            part, batch = batch.slice(0, room), batch.slice(room)
            self._write(part)

    def _write(self, batch: Any) -> None:
        import pyarrow.parquet as pq

        if self._writer is None:
            name = f"part-{len(self.shards):05d}.parquet"
            self.shards.append(name)
            self._writer = pq.ParquetWriter(
                self.directory / name, self.schema, compression=self.compression
            )
        self._writer.write_batch(batch)
        self._in_shard += batch.nbytes
        self.data_bytes += batch.nbytes
        if self._in_shard >= self.shard_bytes:
            self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._in_shard = 0


def _schema(per: Per, layers: Sequence[int], hidden: int, label_keys: Sequence[str],
            metadata: Mapping[str, Any]) -> Any:  # fmt: skip
    import pyarrow as pa

    fields = [
        pa.field("record_id", pa.string(), nullable=False),
        pa.field("prompt_hash", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
    ]
    if per == "record":
        fields += [
            pa.field("prompt", pa.string()),
            pa.field("response", pa.string()),
            pa.field("prompt_length", pa.int32()),
            pa.field("num_positions", pa.int32()),
            pa.field("created_at_ms", pa.int64()),
            pa.field("finish_reason", pa.string()),
            pa.field("row_start", pa.int32()),
            pa.field("row_end", pa.int32()),
        ]
    else:
        fields += [
            pa.field("position", pa.int32()),
            pa.field("token_id", pa.int32()),
            pa.field("next_token_id", pa.int32()),
            pa.field("token", pa.string()),
            pa.field("is_prompt", pa.bool_()),
        ]
    fields += [pa.field(f"label_{key}", pa.string()) for key in label_keys]
    vector = pa.list_(pa.float32(), hidden)
    fields += [pa.field(f"layer_{layer}", vector, nullable=False) for layer in layers]
    return pa.schema(fields, metadata={"actlog": json.dumps(metadata)})


def _vectors(matrix: np.ndarray, hidden: int) -> Any:
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, hidden)


class _ExportedRecords:
    """The records an export reads, a page of headers at a time, in iter_records' order."""

    def __init__(
        self, client: StorageClient, record_ids: Sequence[str] | None, where: RecordFilter
    ) -> None:
        self.client = client
        self.record_ids = list(record_ids or [])
        self.where = where

    def records(self) -> Iterator[Record]:
        if self.record_ids:
            for record_id in self.record_ids:
                yield self.client.get_record(record_id)
        else:
            yield from self.client.iter_records(self.where, page_size=PAGE_RECORDS)

    def scan(self) -> tuple[int, list[str], Record | None]:
        """(records, every label key, the first complete record): one pass over headers
        only, so the schema holds every label column before a row is written."""
        count, keys, first = 0, set(), None
        for record in self.records():
            count += 1
            keys.update(record.labels)
            if first is None and record.is_complete:
                first = record
        return count, sorted(keys), first


def export_dataset(
    client: StorageClient,
    directory: str | Path,
    *,
    per: Per = "record",
    layers: LayerChoice = None,
    pooling: str = "last_prompt",
    position: int = 0,
    token_rows: TokenRows = "all",
    record_ids: Sequence[str] | None = None,
    where: RecordFilter | None = None,
    model: str | None = None,
    labels: Mapping[str, str] | None = None,
    since_ms: int | None = None,
    until_ms: int | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    compression: str = "snappy",
    progress: bool = True,
) -> ExportSummary:
    """Write the selected records to Parquet shards in `directory` (see the module doc).

    Records: `record_ids`, or those `where` selects (a `RecordFilter`, or its conditions as
    keywords). `layers`: stored layer numbers, negative from the end, or a preset; None =
    every layer of the first complete record. Records that lack them, are partial or have
    another hidden size are skipped and listed in the manifest.
    """
    if per not in ("record", "token"):
        raise ValueError(f"per must be 'record' or 'token', not {per!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}: expected one of {', '.join(POOLINGS)}")
    if token_rows not in ("all", "prompt", "response"):
        raise ValueError(f"token rows must be all, prompt or response, not {token_rows!r}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("part-*.parquet")):
        raise FileExistsError(f"{out} already holds Parquet shards; export into a new folder")
    where = RecordFilter.of(where, model=model, labels=labels, since_ms=since_ms,
                            until_ms=until_ms)  # fmt: skip
    if record_ids and not where.empty:
        raise ValueError("give record ids or a filter, not both")
    selection = _ExportedRecords(client, record_ids, where)
    total, label_keys, first = selection.scan()
    if first is None:
        raise ValueError("no complete record matches the selection")
    try:
        chosen = LayerSpec.parse(layers).of_stored(first.layers, first.num_layers,
                                                   first.record_id)  # fmt: skip
    except LayerError as error:
        raise ValueError(str(error)) from None
    metadata = {
        "format_version": FORMAT_VERSION,
        "per": per,
        "layers": chosen,
        "hidden_size": first.hidden_size,
        "num_layers": first.num_layers,
        "dtype": "float32",
        "source_dtype": first.dtype,
        "positions": POSITIONS_CONVENTION,
        "label_columns": {f"label_{key}": key for key in label_keys},
        "selection": {**asdict(selection.where), "record_ids": len(selection.record_ids)},
        "created_at_ms": int(time.time() * 1000),
    }
    if per == "record":
        metadata["pooling"] = pooling
        metadata["pooling_rows"] = POOLING_ROWS[pooling]
        if pooling == "position":
            metadata["position"] = position
    else:
        metadata["token_rows"] = token_rows
    summary = ExportSummary(out, per, chosen, first.hidden_size, label_keys=label_keys)
    writer = ShardWriter(out, _schema(per, chosen, first.hidden_size, label_keys, metadata),
                         shard_bytes, compression)  # fmt: skip
    bar = tqdm(total=total, desc=f"export ({per} rows)", unit="record", disable=not progress)
    try:
        if per == "record":
            _export_records(client, selection, writer, summary, pooling, position, bar)
        else:
            _export_tokens(client, selection, writer, summary, token_rows, bar)
    finally:
        writer.close()
        bar.close()
    summary.shards, summary.data_bytes = writer.shards, writer.data_bytes
    manifest = {**summary.to_json(), "metadata": metadata}
    (out / ".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def _unusable(record: Record, summary: ExportSummary) -> str:
    """Why `record` cannot be a row of this export ("" when it can)."""
    if not record.is_complete:
        return "partial: its activations have not all arrived"
    if record.hidden_size != summary.hidden_size:
        return f"hidden size {record.hidden_size}, the dataset's {summary.hidden_size}"
    missing = [layer for layer in summary.layers if layer not in record.layers]
    if missing:
        return f"does not store layers {missing}"
    return ""


def _label_columns(records: Sequence[Record], keys: Sequence[str], repeat: Sequence[int] = ()):
    import pyarrow as pa

    columns = {}
    for key in keys:
        values = [r.labels.get(key) for r in records]
        if repeat:
            values = [v for v, n in zip(values, repeat, strict=True) for _ in range(n)]
        columns[f"label_{key}"] = pa.array(values, pa.string())
    return columns


def _pages(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    page: list[Record] = []
    for record in records:
        page.append(record)
        if len(page) == size:
            yield page
            page = []
    if page:
        yield page


def _export_records(client, selection, writer, summary, pooling, position, bar) -> None:  # noqa: ANN001
    import pyarrow as pa

    for page in _pages(selection.records(), PAGE_RECORDS):
        usable = []
        for record in page:
            reason = _unusable(record, summary)
            if reason:
                summary.skipped.append({"record_id": record.record_id, "reason": reason})
            else:
                usable.append(record)
        if usable:
            feats = client.features(
                [r.record_id for r in usable], layers=summary.layers, pooling=pooling,
                position=position, skip_unusable=True,
            )  # fmt: skip
            summary.skipped += [{"record_id": s.record_id, "reason": s.reason}
                                for s in feats.skipped]  # fmt: skip
            by_id = {r.record_id: r for r in usable}
            rows = [by_id[record_id] for record_id in feats.record_ids]
            if rows:
                columns = {
                    "record_id": pa.array([r.record_id for r in rows], pa.string()),
                    "prompt_hash": pa.array([r.prompt_hash for r in rows], pa.string()),
                    "model": pa.array([r.model for r in rows], pa.string()),
                    "prompt": pa.array([r.prompt for r in rows], pa.string()),
                    "response": pa.array([r.response for r in rows], pa.string()),
                    "prompt_length": pa.array([r.prompt_length for r in rows], pa.int32()),
                    "num_positions": pa.array([r.num_positions for r in rows], pa.int32()),
                    "created_at_ms": pa.array([r.created_at_ms for r in rows], pa.int64()),
                    "finish_reason": pa.array([r.finish_reason for r in rows], pa.string()),
                    "row_start": pa.array([s for s, _ in feats.rows], pa.int32()),
                    "row_end": pa.array([e for _, e in feats.rows], pa.int32()),
                    **_label_columns(rows, summary.label_keys),
                    **{f"layer_{layer}": _vectors(feats[layer], summary.hidden_size)
                       for layer in summary.layers},
                }  # fmt: skip
                writer.write(pa.RecordBatch.from_pydict(columns, schema=writer.schema))
                summary.records += len(rows)
                summary.rows += len(rows)
        bar.update(len(page))


def _token_span(record: Record, token_rows: str) -> tuple[int, int]:
    n, p = record.num_positions, record.prompt_length
    if token_rows == "prompt":
        return 0, min(p, n)
    if token_rows == "response":
        return min(p, n), n
    return 0, n


def _export_tokens(client, selection, writer, summary, token_rows, bar) -> None:  # noqa: ANN001
    import pyarrow as pa

    pending: list[tuple[Record, int, int, dict[int, np.ndarray]]] = []
    pending_bytes = 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        if not pending:
            return
        records = [r for r, *_ in pending]
        counts = [end - start for _, start, end, _ in pending]
        positions = np.concatenate([np.arange(s, e, dtype=np.int32) for _, s, e, _ in pending])

        def per_row(values: Sequence[Any]) -> list[Any]:
            return [v for v, n in zip(values, counts, strict=True) for _ in range(n)]

        def tokens(r: Record, s: int, e: int, shift: int) -> list[int]:
            return [int(t) for t in r.token_ids[s + shift : e + shift]]

        columns = {
            "record_id": pa.array(per_row([r.record_id for r in records]), pa.string()),
            "prompt_hash": pa.array(per_row([r.prompt_hash for r in records]), pa.string()),
            "model": pa.array(per_row([r.model for r in records]), pa.string()),
            "position": pa.array(positions, pa.int32()),
            "token_id": pa.array([t for r, s, e, _ in pending for t in tokens(r, s, e, 0)],
                                 pa.int32()),  # fmt: skip
            "next_token_id": pa.array([t for r, s, e, _ in pending for t in tokens(r, s, e, 1)],
                                      pa.int32()),  # fmt: skip
            "token": pa.array([t for r, s, e, _ in pending
                               for t in (r.token_strings[s:e] or [None] * (e - s))],
                              pa.string()),  # fmt: skip
            "is_prompt": pa.array(positions < np.concatenate(
                [np.full(e - s, r.prompt_length, np.int32) for r, s, e, _ in pending]
            )),  # fmt: skip
            **_label_columns(records, summary.label_keys, counts),
            **{f"layer_{layer}": _vectors(np.concatenate([a[layer] for *_, a in pending]),
                                          summary.hidden_size)
               for layer in summary.layers},
        }  # fmt: skip
        writer.write(pa.RecordBatch.from_pydict(columns, schema=writer.schema))
        summary.rows += len(positions)
        pending, pending_bytes = [], 0

    for record in selection.records():
        bar.update(1)
        reason = _unusable(record, summary)
        start, end = _token_span(record, token_rows)
        if not reason and start == end:
            reason = f"no {token_rows} rows"
        if reason:
            summary.skipped.append({"record_id": record.record_id, "reason": reason})
            continue
        try:
            acts = client.get_activations(record, layers=summary.layers, row_start=start,
                                          row_end=end)  # fmt: skip
        except ActlogError as error:  # deleted or changed since the scan
            summary.skipped.append({"record_id": record.record_id, "reason": str(error)})
            continue
        pending.append((record, start, end, acts))
        summary.records += 1
        pending_bytes += sum(a.nbytes for a in acts.values())
        if pending_bytes >= ROW_GROUP_BYTES:
            flush()
    flush()
