#!/opt/venv/bin/python
"""Container health probe: `actlog-healthcheck storage|inference|gateway`.

Exits 0 when the service in this container is ready: the standard gRPC health service for
storage and inference (SERVING; the inference service says NOT_SERVING while its engine
loads), `GET /health` for the gateway (200 only while a completion can be served). The port
is the one the service itself reads (STORAGE_PORT, INFERENCE_PORT, GATEWAY_PORT), so a
changed port needs no changed probe.
Used by the images' HEALTHCHECK (shell form: podman's Docker API splits exec-form arguments).
"""

from __future__ import annotations

import os
import sys

PORTS = {
    "storage": ("STORAGE_PORT", 50052),
    "inference": ("INFERENCE_PORT", 50051),
    "gateway": ("GATEWAY_PORT", 8000),
}
TIMEOUT_S = 3.0


def grpc_serving(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from actlog_common.grpc_security import GrpcSecurity  # TLS as the service serves it

    with GrpcSecurity.from_env().channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:  # noqa: S310 (loopback)
            return reply.status == 200
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in PORTS:
        print(f"usage: actlog-healthcheck {'|'.join(PORTS)}", file=sys.stderr)
        return 2
    service = argv[0]
    variable, default = PORTS[service]
    port = int(os.environ.get(variable) or default)
    if service == "gateway":
        ok = http_ok(f"http://127.0.0.1:{port}/health")
    else:
        ok = grpc_serving(f"127.0.0.1:{port}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
