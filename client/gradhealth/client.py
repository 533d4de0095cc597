"""GradientHealthClient: the Python client of the gradhealth service.

Needs no TensorFlow to send bytes. A checkpoint is streamed in 1 MiB chunks
with its sha256; a call that meets UNAVAILABLE (the server restarting, draining
or not up yet) is retried with exponential backoff and jitter within its
deadline. gRPC's own retry policy cannot do this for a stream larger than its
retry buffer, so the loop is here. Every attempt of one call carries the same
request id, so a retry after a lost reply returns the stored verdict instead
of diagnosing (and storing) twice.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gradhealth import payload
from gradhealth.connect import check_target, wait_for_server
from gradhealth.contract import MAX_REPLY_BYTES, MAX_REQUEST_BYTES, PROBE_MODES
from gradhealth.v1 import service_pb2, service_pb2_grpc, verdict_pb2
from gradhealth.verdicts import Verdict


@dataclass(frozen=True)
class Tls:
    """TLS settings; no files: the system's trust store and no client certificate."""

    ca_cert: str | Path | None = None  # PEM bundle that signed the server's certificate
    client_cert: str | Path | None = None  # mutual TLS: this client's certificate ...
    client_key: str | Path | None = None  # ... and its key

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | Path | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_cert),
            private_key=read(self.client_key),
            certificate_chain=read(self.client_cert),
        )


@dataclass(frozen=True)
class Retry:
    """Which codes are retried and how long to wait; attempts=None: until the
    call's deadline (a server still loading TensorFlow answers UNAVAILABLE)."""

    attempts: int | None = None
    first_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    on: tuple[grpc.StatusCode, ...] = (grpc.StatusCode.UNAVAILABLE,)

    def delays(self) -> Iterator[float]:
        """Full-jitter exponential backoff, one delay per retry."""
        retries = itertools.count() if self.attempts is None else range(self.attempts - 1)
        for attempt in retries:
            ceiling = min(self.max_backoff_s, self.first_backoff_s * 2 ** min(attempt, 30))
            yield random.uniform(0, ceiling)


class GradientHealthClient:
    def __init__(
        self,
        target: str,
        token: str | None = None,
        tls: Tls | bool | None = None,
        timeout: float = 600.0,
        retry: Retry | None = None,
        options: Sequence[tuple[str, Any]] = (),
        connect_timeout: float = 5.0,
        wait_for_ready: bool = False,
    ) -> None:
        """`tls=True` uses the system's trust store; a `Tls` names the files.

        `target` is HOST:PORT (ValueError otherwise). Before its first call the
        client checks that a server answers there within `connect_timeout`
        seconds and raises `gradhealth.connect.ServerUnreachable` (an OSError)
        if none does; `wait_for_ready=True` waits for one instead, up to each
        call's deadline."""
        self.target = check_target(target)
        channel_options = [
            ("grpc.max_receive_message_length", MAX_REPLY_BYTES),
            ("grpc.max_send_message_length", MAX_REQUEST_BYTES),
            *options,
        ]
        if tls:
            credentials = (tls if isinstance(tls, Tls) else Tls()).credentials()
            self._channel = grpc.secure_channel(target, credentials, channel_options)
        else:
            self._channel = grpc.insecure_channel(target, channel_options)
        self._stub = service_pb2_grpc.GradientHealthServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.timeout = timeout
        self.retry = retry or Retry()
        self.connect_timeout = connect_timeout
        self.wait_for_ready = wait_for_ready
        self._reached = wait_for_ready  # waiting for the server: no up-front check

    def __enter__(self) -> GradientHealthClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # --- Diagnose -----------------------------------------------------------------

    def diagnose(
        self,
        model_or_path: Any,
        x: Any = None,
        y: Any = None,
        *,
        batch: str | Path | payload.Part | None = None,
        run_id: str = "",
        ad_hoc: bool = False,
        step: int = 0,
        training_metrics: Mapping[str, float] | None = None,
        mode: str = "full",
        disable_xla: bool = False,
        timeout: float | None = None,
    ) -> Verdict:
        """Diagnose a checkpoint (a `.keras` path, its bytes, or a Keras model) on a
        sample batch: x and y arrays ({input name: array} for several inputs), or
        the path of an `.npz` holding them. Without a run id (or with ad_hoc=True)
        the diagnosis is ad hoc: stored under a run of its own (the verdict's run_id)
        that never alerts."""
        if isinstance(batch, payload.Part):  # already encoded (the callback's fixed sample)
            batch_part = batch
        elif batch is not None:
            batch_part = payload.Part.of_file(batch)
        elif x is not None and y is not None:
            batch_part = payload.batch_part(x, y)
        else:
            raise ValueError("pass x and y, or batch=PATH of an .npz with x and y")
        checkpoint = payload.checkpoint_part(model_or_path)
        header = service_pb2.DiagnoseHeader(
            run_id=run_id,
            ad_hoc=ad_hoc,
            step=step,
            training_metrics=payload.training_metrics(training_metrics),
            options=service_pb2.ProbeOptions(mode=PROBE_MODES[mode], disable_xla=disable_xla),
            checkpoint=checkpoint.info(),
            batch=batch_part.info(),
        )
        header.wall_time.GetCurrentTime()
        # One id for every attempt: a retry after a lost reply gets the stored verdict.
        header.request_id = str(uuid.uuid4())
        response = self._call(
            lambda remaining: self._stub.Diagnose(
                payload.requests(header, checkpoint, batch_part),
                timeout=remaining,
                metadata=self._metadata,
                wait_for_ready=self.wait_for_ready,
            ),
            timeout,
        )
        return Verdict.from_proto(response.verdict)

    # --- queries --------------------------------------------------------------------

    def get_verdict(self, verdict_id: str, timeout: float | None = None) -> Verdict:
        request = service_pb2.GetVerdictRequest(verdict_id=verdict_id)
        response = self._call(lambda t: self._unary("GetVerdict", request, t), timeout)
        return Verdict.from_proto(response.verdict)

    def list_verdicts(
        self, run_id: str = "", page_size: int = 50, timeout: float | None = None, **filters: Any
    ) -> Iterator[Verdict]:
        """Every matching verdict, newest first, fetching page after page."""
        token = ""
        while True:
            request = service_pb2.ListVerdictsRequest(
                run_id=run_id, page_size=page_size, page_token=token, **filters
            )
            response = self._call(lambda t, r=request: self._unary("ListVerdicts", r, t), timeout)
            yield from (Verdict.from_proto(v) for v in response.verdicts)
            token = response.next_page_token
            if not token:
                return

    def list_runs(self, page_size: int = 50, timeout: float | None = None) -> list[service_pb2.Run]:
        runs: list[service_pb2.Run] = []
        token = ""
        while True:
            request = service_pb2.ListRunsRequest(page_size=page_size, page_token=token)
            response = self._call(lambda t, r=request: self._unary("ListRuns", r, t), timeout)
            runs.extend(response.runs)
            token = response.next_page_token
            if not token:
                return runs

    def close_run(
        self,
        run_id: str,
        state: str = "finished",
        stop_cause: str | None = None,
        reason: str = "",
        timeout: float | None = None,
    ) -> service_pb2.Run:
        """Mark a run over: "finished" (training ended) or "stopped" (by a verdict,
        `stop_cause` naming its cause, or by hand). Its alerts resolve."""
        request = service_pb2.CloseRunRequest(
            run_id=run_id,
            state=service_pb2.RunState.Value(f"RUN_STATE_{state.upper()}"),
            stop_cause=verdict_pb2.Cause.Value(f"CAUSE_{stop_cause.upper()}") if stop_cause else 0,
            reason=reason,
        )
        response = self._call(lambda t: self._unary("CloseRun", request, t), timeout)
        return response.run

    def watch_verdicts(self, run_id: str = "", unhealthy_only: bool = False) -> Iterator[Verdict]:
        """New verdicts as they are stored; cancel by closing the iterator."""
        request = service_pb2.WatchVerdictsRequest(run_id=run_id, unhealthy_only=unhealthy_only)
        self._reach()
        stream = self._stub.WatchVerdicts(
            request, metadata=self._metadata, wait_for_ready=self.wait_for_ready
        )
        try:
            for response in stream:
                yield Verdict.from_proto(response.verdict)
        finally:
            stream.cancel()

    # --- plumbing -------------------------------------------------------------------

    def _unary(self, method: str, request: Any, timeout: float) -> Any:
        return getattr(self._stub, method)(
            request, timeout=timeout, metadata=self._metadata, wait_for_ready=self.wait_for_ready
        )

    def _reach(self) -> None:
        """Once per client: something answers at the target, or ServerUnreachable
        within connect_timeout (not after the call's whole deadline of retries)."""
        if not self._reached:
            wait_for_server(self._channel, self.target, self.connect_timeout)
            self._reached = True

    def _call(self, attempt: Any, timeout: float | None) -> Any:
        """Run attempt(remaining seconds), retrying the retryable codes in time."""
        self._reach()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        delays = self.retry.delays()
        while True:
            try:
                return attempt(max(0.001, deadline - time.monotonic()))
            except grpc.RpcError as error:
                if error.code() not in self.retry.on:
                    raise
                delay = next(delays, None)
                if delay is None or time.monotonic() + delay >= deadline:
                    raise
                time.sleep(delay)
