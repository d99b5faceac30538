"""Optional TLS, mutual TLS and a shared bearer token on storage's gRPC port, with real
certificates made here (a CA, a server certificate for 127.0.0.1, a client certificate):
plaintext, unknown clients, certificate-less clients and token-less calls are refused; health
stays open to probes; the real client with the right certificate and token reads records."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actlog.client import StorageClient
from actlog.errors import ActlogError
from actlog_common.grpc_security import GrpcSecurity
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from storage_service.testing import synthetic_record
from tests.integration.helpers import TOKEN, make_pki
from tests.integration.storage_process import StorageProcess

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured_storage(pki, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("secured")
    client_side = GrpcSecurity(str(pki["client_cert"]), str(pki["client_key"]), str(pki["ca"]),
                               TOKEN)  # fmt: skip
    storage = StorageProcess(
        tmp / "lmdb", tmp / "storage.log",
        "--grpc-tls-cert", str(pki["server_cert"]), "--grpc-tls-key", str(pki["server_key"]),
        "--grpc-tls-ca", str(pki["ca"]), "--grpc-auth-token", TOKEN,
        security=client_side,
    ).start()  # fmt: skip
    yield storage.address, client_side
    assert storage.stop() == 0, storage.log()


def _healthy(security: GrpcSecurity, address: str) -> bool:
    try:
        with security.channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def _stats_error(security: GrpcSecurity, address: str) -> grpc.StatusCode:
    with security.channel(address) as channel, pytest.raises(grpc.RpcError) as info:
        storage_pb2_grpc.StorageStub(channel).Stats(storage_pb2.StatsRequest(), timeout=5)
    return info.value.code()


def test_the_right_certificate_and_token_read_and_write(secured_storage) -> None:
    address, security = secured_storage
    record = synthetic_record("over mutual TLS", seed=1)
    with security.channel(address) as channel:
        storage_pb2_grpc.StorageStub(channel).Ingest(iter(record.requests()), timeout=30)
    with StorageClient(address, transport="stream", security=security) as client:
        got = client.get_activations(record.header.record_id)
        for layer, values in got.items():
            np.testing.assert_array_equal(values, record.values[layer])
        assert client.stats().complete_records == 1


def test_plaintext_and_unknown_clients_are_refused(secured_storage, pki, tmp_path) -> None:
    address, security = secured_storage
    assert _stats_error(GrpcSecurity(auth_token=TOKEN), address) == grpc.StatusCode.UNAVAILABLE
    # TLS with the right CA but no client certificate: the handshake fails.
    no_cert = GrpcSecurity(tls_ca=str(pki["ca"]), auth_token=TOKEN)
    assert _stats_error(no_cert, address) == grpc.StatusCode.UNAVAILABLE
    # A certificate from another CA.
    other = make_pki(tmp_path)
    stranger = GrpcSecurity(str(other["client_cert"]), str(other["client_key"]), str(pki["ca"]),
                            TOKEN)  # fmt: skip
    assert _stats_error(stranger, address) == grpc.StatusCode.UNAVAILABLE


def test_calls_without_the_token_are_unauthenticated_but_health_is_open(secured_storage):
    address, security = secured_storage
    tls_only = GrpcSecurity(security.tls_cert, security.tls_key, security.tls_ca)
    assert _stats_error(tls_only, address) == grpc.StatusCode.UNAUTHENTICATED
    wrong = GrpcSecurity(security.tls_cert, security.tls_key, security.tls_ca, "guess")
    assert _stats_error(wrong, address) == grpc.StatusCode.UNAUTHENTICATED
    assert _healthy(tls_only, address)  # probes need no secret
    with (
        StorageClient(address, transport="stream", security=tls_only) as client,
        pytest.raises(ActlogError, match="bearer token"),
    ):
        client.stats()


def test_the_client_reads_its_security_from_the_environment(secured_storage, monkeypatch):
    address, security = secured_storage
    for name, value in (("GRPC_TLS_CERT", security.tls_cert), ("GRPC_TLS_KEY", security.tls_key),
                        ("GRPC_TLS_CA", security.tls_ca), ("GRPC_AUTH_TOKEN", TOKEN)):  # fmt: skip
        monkeypatch.setenv(name, value)
    with StorageClient(address, transport="stream") as client:
        assert client.stats().complete_records >= 0
