"""`actlog` commands that query, label, delete and export stored records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from actlog.cli.options import (
    MAX_MS,
    FilterOpt,
    ModelFilterOpt,
    SinceOpt,
    StorageAddrOpt,
    UntilOpt,
    layers_option,
    parse_labels,
    record_filter,
    storage_errors,
)
from actlog_common import defaults
from actlog_common.layers import LayerSpec

if TYPE_CHECKING:
    from actlog.client import Record


def _parse_rows(rows: str | None) -> tuple[int, int | None]:
    """'START:END' (either may be left out) as (row_start, row_end or None = to the end)."""
    if not rows:
        return 0, None
    start, sep, end = rows.partition(":")
    try:
        if not sep:
            raise ValueError
        first, last = int(start or 0), int(end) if end else None
    except ValueError:
        raise typer.BadParameter(f"--rows {rows!r}: START:END, e.g. 0:5, 12: or :40") from None
    if first < 0 or (last is not None and last <= first):
        raise typer.BadParameter(f"--rows {rows!r}: need 0 <= START < END")
    return first, last


def export_record(
    output: Annotated[Path, typer.Option("--output", "-o", help="file.safetensors")],
    prompt_hash: Annotated[str | None, typer.Option(help="SHA-256 of the prompt")] = None,
    record_id: Annotated[str | None, typer.Option(help="the record to export")] = None,
    layers: Annotated[LayerSpec | None, layers_option("every stored layer")] = None,
    model: ModelFilterOpt = None,
    rows: Annotated[
        str | None, typer.Option(help="token positions START:END, e.g. 0:5, 12:, :40")
    ] = None,
    force: Annotated[bool, typer.Option(help="replace an existing file")] = False,
    storage_addr: StorageAddrOpt = defaults.STORAGE_ADDR,
) -> None:
    """Write one record's activations (`layer_<i>`), token ids and metadata to a safetensors
    file (many records as a dataset: `actlog dataset export`)."""
    from actlog.client import StorageClient
    from actlog.errors import ActlogError
    from actlog.export import export_record

    key = record_id or prompt_hash
    if not key or (record_id and prompt_hash):
        raise typer.BadParameter("give exactly one of --prompt-hash or --record-id")
    try:
        with StorageClient(storage_addr) as client:
            summary = export_record(
                client, key, output, layers, model, *_parse_rows(rows), force=force
            )
    except ActlogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"wrote {summary.path} ({summary.file_bytes} bytes): record {summary.record_id}, "
        f"layers {list(summary.layers)}, rows {summary.rows[0]}:{summary.rows[1]} of "
        f"{summary.num_positions} positions x {summary.hidden_size} ({summary.dtype})"
    )
    if summary.note:
        typer.echo(summary.note)


def find(
    prompt: Annotated[str | None, typer.Option(help="the prompt text (hashed for you)")] = None,
    prompt_hash: Annotated[str | None, typer.Option(help="SHA-256 of the prompt")] = None,
    model: ModelFilterOpt = None,
    storage_addr: StorageAddrOpt = defaults.STORAGE_ADDR,
) -> None:
    """List the records stored for a prompt, newest first, as JSON lines."""
    from actlog.client import StorageClient
    from actlog.errors import ActlogError
    from actlog_common.hashing import prompt_hash as hash_prompt

    if (prompt is None) == (prompt_hash is None):
        raise typer.BadParameter("give exactly one of --prompt or --prompt-hash")
    key = prompt_hash or hash_prompt(prompt or "")
    try:
        with StorageClient(storage_addr) as client:
            records = client.find_by_prompt_hash(key, model)
    except ActlogError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    if not records:
        of_model = f" of model {model}" if model else ""
        typer.echo(f"no records for prompt hash {key}{of_model}", err=True)
        raise typer.Exit(1)
    for r in records:
        typer.echo(
            json.dumps(
                {
                    "record_id": r.record_id,
                    "prompt_hash": r.prompt_hash,
                    "model": r.model,
                    "status": r.status,
                    "layers": list(r.layers),
                    "num_positions": r.num_positions,
                    "prompt_length": r.prompt_length,
                    "response": r.response,
                }
            )
        )


def _record_line(r: Record) -> str:
    return json.dumps(
        {
            "record_id": r.record_id,
            "created_at_ms": r.created_at_ms,
            "model": r.model,
            "status": r.status,
            "labels": r.labels,
            "layers": list(r.layers),
            "num_positions": r.num_positions,
            "prompt_hash": r.prompt_hash,
            "prompt": r.prompt,
            "response": r.response,
        },
        ensure_ascii=False,
    )


def list_records(
    model: ModelFilterOpt = None,
    filters: FilterOpt = None,
    since_ms: SinceOpt = None,
    until_ms: UntilOpt = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_MS, help="most records to print")] = 50,
    storage_addr: StorageAddrOpt = defaults.STORAGE_ADDR,
) -> None:
    """List stored records, newest first, as JSON lines."""
    from actlog.client import StorageClient

    where = record_filter(model, filters, since_ms, until_ms)
    with storage_errors(), StorageClient(storage_addr) as client:
        records = client.iter_records(where, page_size=min(limit, 1000))
        for _, record in zip(range(limit), records, strict=False):
            typer.echo(_record_line(record))


def label(
    record_id: Annotated[str, typer.Argument(help="the record to label")],
    labels: Annotated[list[str] | None, typer.Argument(help="key=value pairs to set")] = None,
    remove: Annotated[
        list[str] | None, typer.Option(help="label key to remove; repeatable")
    ] = None,
    storage_addr: StorageAddrOpt = defaults.STORAGE_ADDR,
) -> None:
    """Set (or with --remove, drop) evaluation labels of a record; prints its labels."""
    from actlog.client import StorageClient

    to_set = parse_labels(labels, "LABELS")
    if not to_set and not remove:
        raise typer.BadParameter("give key=value labels to set and/or --remove KEY")
    with storage_errors(), StorageClient(storage_addr) as client:
        record = client.set_labels(record_id, to_set, remove or [])
    typer.echo(json.dumps({"record_id": record.record_id, "labels": record.labels}))


def delete(
    record_id: Annotated[str, typer.Argument(help="the record to delete")],
    storage_addr: StorageAddrOpt = defaults.STORAGE_ADDR,
) -> None:
    """Delete a record: its header, activations, labels and prompt-hash entry."""
    from actlog.client import StorageClient

    with storage_errors(), StorageClient(storage_addr) as client:
        deleted = client.delete_record(record_id)
    typer.echo(f"deleted {deleted.record_id} ({deleted.stored_bytes} bytes of activations)")


def stats(storage_addr: StorageAddrOpt = defaults.STORAGE_ADDR) -> None:
    """Print storage counters (records, bytes, per model) as JSON."""
    from actlog.client import StorageClient

    with storage_errors(), StorageClient(storage_addr) as client:
        result = client.stats()
    typer.echo(json.dumps(dataclasses.asdict(result), indent=2))


def register(app: typer.Typer) -> None:
    """Add the record commands to the `actlog` CLI."""
    app.command("export-record")(export_record)
    # The command's name before `dataset export` existed; kept for the scripts that use it.
    app.command("export", hidden=True)(export_record)
    app.command()(find)
    app.command("list")(list_records)
    app.command()(label)
    app.command()(delete)
    app.command()(stats)
