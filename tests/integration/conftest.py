"""A real storage service process (tests/integration/storage_process.py), its LMDB in a
temporary directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from actlog_common.v1 import storage_pb2_grpc
from tests.integration.storage_process import StorageProcess


@pytest.fixture
def start_storage(tmp_path: Path) -> Iterator:
    """Factory: start_storage(lmdb_path=None, *extra_args) -> a started StorageProcess."""
    started: list[StorageProcess] = []

    def start(lmdb_path: Path | None = None, *extra_args: str) -> StorageProcess:
        path = lmdb_path or tmp_path / f"lmdb{len(started)}"
        process = StorageProcess(path, tmp_path / f"storage{len(started)}.log", *extra_args)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        if process.alive():
            process.stop()


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageProcess]:
    """One storage process shared by a test module."""
    directory = tmp_path_factory.mktemp("storage")
    process = StorageProcess(directory / "lmdb", directory / "storage.log").start()
    yield process
    code = process.stop()
    assert code == 0, f"storage exited with {code}:\n{process.log()}"
    assert "Traceback" not in process.log(), "unexpected server error:\n" + process.log()


@pytest.fixture(scope="module")
def stub(storage: StorageProcess) -> Iterator[storage_pb2_grpc.StorageStub]:
    """A raw gRPC stub of the module's storage, with default channel options."""
    with grpc.insecure_channel(storage.address) as channel:
        yield storage_pb2_grpc.StorageStub(channel)
