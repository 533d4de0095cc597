"""Container health check: exit 0 when the gradhealth server in this container
answers SERVING on the standard gRPC health service, 1 otherwise.

The image's HEALTHCHECK runs it; a Kubernetes exec probe can too, although the
manifests use the kubelet's native gRPC probes. It reads the server's own
settings (GRADHEALTH_PORT, GRADHEALTH_HOST) and speaks plaintext: the health
service needs no token, and a server started with --tls-cert needs another
check (docs/operations.md). Needs grpcio-health-checking (the server extra).
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

WILDCARDS = ("", "0.0.0.0", "::", "[::]")


def main() -> int:
    if os.environ.get("GRADHEALTH_TLS_CERT"):
        print("healthcheck: the server uses TLS; this check speaks plaintext", file=sys.stderr)
        return 1
    host = os.environ.get("GRADHEALTH_HOST", "")
    target = (
        f"{'127.0.0.1' if host in WILDCARDS else host}:{os.environ.get('GRADHEALTH_PORT') or 50051}"
    )
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=4.0
            )
        except grpc.RpcError as error:
            print(f"healthcheck: {target}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"healthcheck: {target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    raise SystemExit(main())
