"""Domain errors of the storage service; mapped to gRPC status codes in interceptors.py."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error the storage service reports to a caller."""


class InvalidArgument(StorageError):
    """The request is malformed or inconsistent (bad id, bad chunk, bad checksum...)."""


class NotFound(StorageError):
    """No record with this id."""


class FailedPrecondition(StorageError):
    """The request is well-formed but the record is not in a state that allows it."""


class PartialRecord(FailedPrecondition):
    """The record's activations have not all arrived (or the ingest was cut)."""


class ResourceExhausted(StorageError):
    """A resource ran out for this request (file descriptors, memory); retrying may help."""
