"""Defaults every entry point shares: ports and addresses, the log format, gRPC channel
options and how long each service takes to shut down.

The services' settings, the launcher, the CLI and the client take their defaults from
here; docker-compose.yml and the README give the same numbers (a unit test compares them).
"""

from __future__ import annotations

import logging

GATEWAY_PORT = 8000
INFERENCE_PORT = 50051
STORAGE_PORT = 50052
INFERENCE_METRICS_PORT = 9051
STORAGE_METRICS_PORT = 9052
# Where a client on the services' host finds them.
INFERENCE_ADDR = f"127.0.0.1:{INFERENCE_PORT}"
STORAGE_ADDR = f"127.0.0.1:{STORAGE_PORT}"

# Where the records and the capture spool live, relative to the working directory, unless
# ACTIVATION_LMDB_PATH / CAPTURE_SPOOL_DIR say otherwise (the images set absolute paths).
ACTIVATION_LMDB_PATH = "lmdb_data/activations.lmdb"
CAPTURE_SPOOL_DIR = "capture_spool"

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Shutdown, in seconds. The gateway lets requests in flight finish; inference gives its
# requests REQUEST_GRACE_S, then pending captures DRAIN_GRACE_S to reach storage (what is
# left stays in the spool); storage lets calls in flight finish. A supervisor waits for
# each service's total before it kills (the launcher, and compose's stop_grace_period).
GATEWAY_GRACE_S = 10.0
REQUEST_GRACE_S = 10.0
DRAIN_GRACE_S = 30.0
STORAGE_GRACE_S = 10.0
# Past these, a service that has not exited is killed: its grace plus time to exit.
STOP_TIMEOUT_S = {
    "gateway": GATEWAY_GRACE_S + 20.0,
    "inference": REQUEST_GRACE_S + DRAIN_GRACE_S + 50.0,
    "storage": STORAGE_GRACE_S + 20.0,
}


def configure_logging(level: str | int = logging.INFO) -> None:
    """The standard logging setup of every service and command line entry point."""
    if isinstance(level, str):
        level = level.upper()
    logging.basicConfig(level=level, format=LOG_FORMAT)


def message_size_options(max_message_bytes: int) -> list[tuple[str, int]]:
    """gRPC channel or server options capping messages at `max_message_bytes` (-1: none)."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]


# A stream window larger than gRPC's starting one keeps 1 MiB chunks flowing (Ingest,
# StreamActivations) instead of stalling on flow control.
BULK_STREAM_OPTIONS: list[tuple[str, int]] = [("grpc.http2.lookahead_bytes", 16 << 20)]
# gRPC enables SO_REUSEPORT by default: a second server on the same port would bind too
# and take half the connections. Off, the second one fails to start.
SERVER_OPTIONS: list[tuple[str, int]] = [("grpc.so_reuseport", 0)]
