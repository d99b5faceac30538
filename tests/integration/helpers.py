"""What the storage tests share beside their fixtures (conftest.py)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from actlog_common.hashing import prompt_hash
from actlog_common.ids import new_record_id
from actlog_common.v1 import storage_pb2, storage_pb2_grpc
from inference_service.capture.spool import Spool
from storage_service.testing import SyntheticRecord

# A spooled record's shape in the sender tests: 4 bfloat16 values per row.
HIDDEN = 4
ROW_BYTES = HIDDEN * 2


def ingest(
    stub: storage_pb2_grpc.StorageStub, record: SyntheticRecord, rows_per_chunk: int = 5
) -> SyntheticRecord:
    """Store `record` in chunks of `rows_per_chunk` rows; it must come out COMPLETE."""
    reply = stub.Ingest(iter(record.requests(rows_per_chunk)), timeout=120)
    assert reply.status == storage_pb2.RECORD_STATUS_COMPLETE
    return record


def spool_record(spool: Spool, text: str) -> str:
    record_id = new_record_id()
    writer = spool.open(record_id, [0], ROW_BYTES, max_rows=2)
    writer.write(0, 0, b"\x01" * 2 * ROW_BYTES)
    header = storage_pb2.RecordHeader(
        record_id=record_id, prompt_hash=prompt_hash(text), prompt=text, token_ids=[1, 2, 3],
        token_strings=["a", "b", "c"], prompt_length=2, layers=[0], num_positions=2,
        hidden_size=HIDDEN, dtype="bfloat16", num_layers=1, created_at_ms=0, choice_index=0,
    )  # fmt: skip
    spool.finish(writer, header)
    return record_id


TOKEN = "s3cret-token"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, and certificates it signed for a server on 127.0.0.1 and for a client."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(_name("actlog test CA")).issuer_name(
            _name("actlog test CA")).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    _write(directory / "ca", ca_key, ca)
    usages = {
        "server": [ExtendedKeyUsageOID.SERVER_AUTH],
        "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
        # One identity per service: it serves and calls the others with it.
        "service": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    }
    for name, usage in usages.items():
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(_name(f"actlog {name}"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
        )  # fmt: skip
        _write(directory / name, key, builder.sign(ca_key, hashes.SHA256()))
    return {
        "ca": directory / "ca.pem",
        "server_cert": directory / "server.pem", "server_key": directory / "server.key",
        "client_cert": directory / "client.pem", "client_key": directory / "client.key",
        "service_cert": directory / "service.pem", "service_key": directory / "service.key",
    }  # fmt: skip
