"""Optional bearer-token auth for every RPC but the health check.

Kubernetes probes and load balancers call grpc.health.v1 without credentials;
everything else needs `authorization: Bearer <token>` when a token is set.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import grpc

from gradhealth_server.service.interceptor import WrappingInterceptor, same_kind
from gradhealth_server.service.status import unauthenticated

OPEN_SERVICES = ("/grpc.health.v1.Health/",)


class BearerTokenAuth(WrappingInterceptor):
    passes = OPEN_SERVICES

    def __init__(self, token: str, on_reject: Callable[[], None] = lambda: None) -> None:
        if not token:
            raise ValueError("an empty token would let everyone in")
        self._expected = f"Bearer {token}".encode()
        self._on_reject = on_reject

    def wrap(
        self, handler: grpc.RpcMethodHandler, details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        sent_bytes = sent.encode() if isinstance(sent, str) else sent
        if hmac.compare_digest(sent_bytes, self._expected):
            return handler
        self._on_reject()
        return _refusal(handler, "missing bearer token" if not sent else "wrong bearer token")


def _refusal(handler: grpc.RpcMethodHandler, why: str) -> grpc.RpcMethodHandler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        failure = unauthenticated(f"{why}: send metadata 'authorization: Bearer <token>'")
        await context.abort(failure.code, failure.message)

    return same_kind(handler, refuse)
