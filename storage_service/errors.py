"""Domain errors of the storage service; mapped to gRPC status codes in interceptors.py."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage service reports to a caller."""


class InvalidRequest(StorageError):
    """The request is malformed or inconsistent (bad id, bad chunk, bad checksum...)."""


class RecordNotFound(StorageError):
    """No record with this id."""


class ConflictingState(StorageError):
    """The request is well-formed, but the record (or the service) is not in a state that
    allows it now: a partial record, shared memory this host cannot offer."""


class PartialRecord(ConflictingState):
    """The record's activations have not all arrived (or the ingest was cut)."""


class OutOfResources(StorageError):
    """A resource ran out for this request (file descriptors, memory); retrying may help."""


# Below this much free space on its disk, a failed LMDB write is reported as a full disk.
DISK_FULL_BYTES = 64 << 20


def explain_lmdb_error(error: Exception, lmdb_path: str) -> StorageError | None:
    """What a failure inside LMDB means for the caller, when it means something: a key or
    value LMDB cannot hold (INVALID_ARGUMENT), a full disk (RESOURCE_EXHAUSTED, with the
    free bytes); None for anything else (INTERNAL)."""
    import errno
    import shutil

    import lmdb

    if isinstance(error, lmdb.BadValsizeError):
        return InvalidRequest(f"a key or value is too large for LMDB: {error}")
    if not isinstance(error, lmdb.Error | OSError):
        return None
    try:
        free = shutil.disk_usage(lmdb_path).free
    except OSError:
        return None
    no_space = getattr(error, "errno", None) == errno.ENOSPC or "No space" in str(error)
    if no_space or free < DISK_FULL_BYTES:
        return OutOfResources(f"storage disk full ({free} bytes free)")
    return None
