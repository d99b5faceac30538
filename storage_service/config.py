"""Storage service settings: environment variables (upper-case field names) or CLI flags."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from actlog_common.defaults import ACTIVATION_LMDB_PATH, STORAGE_METRICS_PORT, STORAGE_PORT
from actlog_common.grpc_security import GrpcSecurityFields

MIB = 1 << 20
GIB = 1 << 30


class StorageSettings(BaseSettings, GrpcSecurityFields):
    """Settings of the storage service.

    Each field is read from the environment variable of the same name in upper case
    (``ACTIVATION_LMDB_PATH``, ``STORAGE_PORT``...) and, when built by `load_settings`,
    from the command line in kebab case (``--activation-lmdb-path``, ``--storage-port``...).
    Command-line flags win over the environment.
    """

    model_config = SettingsConfigDict(
        case_sensitive=False,
        extra="ignore",
        cli_kebab_case=True,
        cli_prog_name="python -m storage_service",
    )

    activation_lmdb_path: str = Field(
        ACTIVATION_LMDB_PATH, description="LMDB environment directory (created if absent)."
    )
    storage_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    storage_port: int = Field(
        STORAGE_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free one."
    )
    storage_metrics_port: int = Field(
        STORAGE_METRICS_PORT,
        ge=0,
        le=65535,
        description="Port of Prometheus metrics (/metrics); 0 = off.",
    )
    storage_max_record_bytes: int = Field(
        64 * GIB,
        ge=0,
        description="Largest record (its activations) Ingest accepts; larger headers get "
        "INVALID_ARGUMENT. 0 = no limit.",
    )
    storage_max_label_bytes: int = Field(
        1 * MIB,
        gt=0,
        description="Most bytes of labels (keys and values) one record may carry; a SetLabels "
        "that would go above gets INVALID_ARGUMENT and changes nothing. Keeps every read of a "
        "record within a gRPC message.",
    )
    storage_partial_ttl_s: float = Field(
        86400.0,
        ge=0,
        description="PARTIAL records whose Ingest stream has not written for this long are "
        "deleted (their sender died and never replayed them). 0 = keep them.",
    )
    lmdb_map_size: int = Field(
        GIB, gt=0, description="Initial LMDB map size in bytes; doubled whenever it fills up."
    )
    grpc_max_message_bytes: int = Field(
        64 * MIB, gt=0, description="Largest gRPC message sent or received, in bytes."
    )
    storage_compression: Literal["none", "zstd", "lz4"] = Field(
        "none",
        description="Compression of activation chunks on disk: none, zstd or lz4. Applies to "
        "records ingested from then on; reads decompress transparently.",
    )
    storage_shm_reads: bool = Field(
        True,
        description="Let readers on this host receive activations through a shared-memory "
        "segment they name (StreamActivations shm_name) instead of the gRPC byte stream.",
    )
    storage_local_socket: bool = Field(
        True,
        description="With shared-memory reads on, also serve them on a Unix socket in the "
        "user's /dev/shm/actlog-u<uid> directory, without gRPC's per-call cost.",
    )
    storage_max_workers: int = Field(16, gt=0, description="Threads serving gRPC calls.")
    log_level: str = Field("INFO", description="Python logging level.")


def load_settings(argv: Sequence[str] | None = None) -> StorageSettings:
    """Build the settings from the environment and `argv` (defaults to ``sys.argv[1:]``)."""
    cli_args: bool | list[str] = True if argv is None else list(argv)
    return StorageSettings(_cli_parse_args=cli_args)  # type: ignore[call-arg]
