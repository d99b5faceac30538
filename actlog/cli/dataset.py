"""`actlog dataset export`: stored records to Parquet shards."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated

import typer

from actlog.cli.options import (
    FilterOpt,
    ModelFilterOpt,
    PoolOpt,
    PositionOpt,
    SinceOpt,
    StorageAddrOpt,
    UntilOpt,
    check_pool,
    layers_option,
    record_filter,
    require_modules,
    storage_errors,
)
from actlog_common.defaults import STORAGE_ADDR, configure_logging
from actlog_common.layers import LayerSpec

dataset_app = typer.Typer(help="Datasets of stored records for analysis at scale.")

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)I?B?\s*", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    """ "256MB" (or 256M, 1.5GB, 4096) as bytes; K, M and G are powers of 1024."""
    match = _SIZE.fullmatch(text)
    if match is None or float(match.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r} is not a size like 256MB", param_hint="--shard-size")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


@dataset_app.command("export")
def export(
    output: Annotated[Path, typer.Option("--output", "-o", help="folder for the shards")],
    per: Annotated[
        str, typer.Option("--per", help="record: one row per record; token: one per position")
    ] = "record",
    layers: Annotated[LayerSpec | None, layers_option("every layer of the first record")] = None,
    pool: PoolOpt = "last_prompt",
    position: PositionOpt = 0,
    rows: Annotated[
        str, typer.Option("--rows", help="--per token: all, prompt or response positions")
    ] = "all",
    record_ids: Annotated[
        list[str] | None, typer.Option("--record-id", help="these records (repeatable)")
    ] = None,
    filters: FilterOpt = None,
    model: ModelFilterOpt = None,
    since_ms: SinceOpt = None,
    until_ms: UntilOpt = None,
    shard_size: Annotated[
        str, typer.Option("--shard-size", help="data per shard, e.g. 256MB")
    ] = "256MB",
    compression: Annotated[
        str, typer.Option("--compression", help="Parquet codec: snappy, zstd, gzip or none")
    ] = "snappy",
    storage_addr: StorageAddrOpt = STORAGE_ADDR,
) -> None:
    """Write stored records to Parquet shards (read by datasets, Ray Data, Spark, DuckDB);
    one record's rows as safetensors: `actlog export-record`."""
    configure_logging(logging.WARNING)
    require_modules("analysis", "pyarrow", "tqdm")
    from actlog.client import StorageClient
    from actlog.datasets.parquet import export_dataset

    check_pool(pool)
    where = record_filter(model, filters, since_ms, until_ms)
    if record_ids and not where.empty:
        raise typer.BadParameter("give --record-id or filters, not both")
    with storage_errors(), StorageClient(storage_addr) as client:
        try:
            summary = export_dataset(
                client, output, per=per, layers=layers, pooling=pool, position=position,  # type: ignore[arg-type]
                token_rows=rows, record_ids=record_ids, where=where,  # type: ignore[arg-type]
                shard_bytes=parse_size(shard_size), compression=compression,
            )  # fmt: skip
        except (ValueError, FileExistsError) as error:
            raise typer.BadParameter(str(error)) from None
    typer.echo(
        f"{summary.records} records, {summary.rows} rows, layers {summary.layers} "
        f"({summary.hidden_size} floats each) in {len(summary.shards)} shard(s) under "
        f"{summary.directory}; {len(summary.skipped)} skipped (see .manifest.json)"
    )


def register(app: typer.Typer) -> None:
    """Add `dataset` to the `actlog` CLI."""
    app.add_typer(dataset_app, name="dataset")
