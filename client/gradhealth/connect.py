"""Reaching a gradhealth server: fail in seconds, in one line that names the address.

gRPC on its own waits: a refused connection is UNAVAILABLE, which the client
retries until the call's deadline (ten minutes for a diagnosis), and a name
that does not resolve can take most of a minute. Before its first call the
client asks the standard health service once (`grpc.health.v1.Health/Check`,
no auth, no payload) with a short deadline; any answer, even UNIMPLEMENTED or
NOT_SERVING, proves something listens there. A refused connection or a name
that does not resolve raises `ServerUnreachable` at once, silence (a
firewall, a TLS mismatch) after `connect_timeout` seconds: an OSError whose
message is one line, the address and why. Callers that want to wait for a server that is not up yet
pass `wait_for_ready=True`, and the check is skipped.
"""

from __future__ import annotations

import re
import time

import grpc

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
# gRPC target schemes that are not HOST:PORT (unix sockets, explicit resolvers).
SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:", "vsock:")


# Failures that are final at once; the others (TLS, no route, silence) may be
# a server or network still coming up: retried until connect_timeout.
FINAL = ("the host name does not resolve", "connection refused")


class ServerUnreachable(ConnectionError, grpc.RpcError):
    """No gradhealth server answered at the address; the message is one line.
    Also a grpc.RpcError with code UNAVAILABLE, for code that catches those."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"no gradhealth server answers at {target}: {reason}")
        self.target = target
        self.reason = reason

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return str(self)


def check_target(target: str) -> str:
    """HOST:PORT, [IPV6]:PORT or a gRPC scheme (unix:PATH, dns:///HOST:PORT);
    ValueError with the fix otherwise. gRPC itself would take a bare HOST as
    port 443 and wait there."""
    if target.startswith(SCHEMES):
        return target
    host, sep, port = target.rpartition(":")
    if target.startswith("[") and "]" not in target:
        raise ValueError(
            f"server address {target!r}: an IPv6 address goes in brackets, [ADDR]:PORT"
        )
    if not sep or not host or not port.isdigit() or (":" in host and not host.startswith("[")):
        if ":" in host and not host.startswith("["):
            raise ValueError(
                f"server address {target!r}: write an IPv6 address as [ADDR]:PORT, e.g. [::1]:50051"
            )
        example = (host or target).rstrip(":") or "localhost"
        raise ValueError(
            f"server address {target!r} has no port: give HOST:PORT, e.g. {example}:50051"
        )
    if not 0 < int(port) < 65536:
        raise ValueError(f"server address {target!r}: port {port} is not 1-65535")
    return target


def reason_of(details: str | None) -> str:
    """What gRPC's transport message means, in a few words, without its
    resolver internals (ipv6:%5B::1%5D:50051, C-ares status codes)."""
    text = details or ""
    lowered = text.lower()
    if "dns resolution failed" in lowered or "domain name not found" in lowered:
        return "the host name does not resolve"
    if "connection refused" in lowered:
        return "connection refused (is `gradhealth serve` running on that port?)"
    if "handshake" in lowered or "ssl" in lowered or "tls" in lowered:
        return "the TLS handshake failed (plain server, wrong CA, or --tls missing?)"
    if "no route" in lowered or "unreachable" in lowered:
        return "no route to the host"
    if "timed out" in lowered or "deadline" in lowered:
        return "no answer in time"
    last = re.split(r"last error: ", text)[-1]
    return " ".join(last.split())[:160] or "no answer"


def wait_for_server(channel: grpc.Channel, target: str, timeout: float) -> None:
    """Return once something answers a health check on `channel`; raise
    ServerUnreachable at once for a refused connection or a name that does not
    resolve, else after `timeout` seconds (retries 0.25-1 s apart)."""
    check = channel.unary_unary(
        HEALTH_CHECK,
        request_serializer=lambda _: b"",  # HealthCheckRequest(service=""): no bytes
        response_deserializer=lambda data: data,
    )
    deadline = time.monotonic() + timeout
    backoff = 0.25
    reason = f"no answer within {timeout:g} s"
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerUnreachable(target, reason)
        try:
            check(None, timeout=remaining)
            return
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServerUnreachable(target, f"no answer within {timeout:g} s") from None
            if code != grpc.StatusCode.UNAVAILABLE:
                return  # UNIMPLEMENTED, UNAUTHENTICATED, ...: a server answered
            reason = reason_of(error.details())
            if reason.startswith(FINAL):  # an answer of sorts: waiting will not change it
                raise ServerUnreachable(target, reason) from None
        time.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
        backoff = min(1.0, backoff * 2)
