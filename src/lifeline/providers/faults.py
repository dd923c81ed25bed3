"""Fault injection: an operator's `cut` in front of a real target, failing exactly as a real failure would.

Every provider is wrapped in a `FaultInjector` (by `Gateway.build`). With no fault set the wrapper adds one
check of an empty dict per attempt and hands the call to the real provider untouched. With a fault set for
its target, an attempt fails the way the corresponding real failure does — same error class, outcome and
status — so the router's retries, circuits and failover run for real:

- `forbidden`: a 403 cut-off, raised before the upstream is touched;
- `unavailable`: a 503, raised before the upstream is touched;
- `timeout`: nothing, for the target's own timeout of the phase (first_byte for a stream, response
  otherwise; bounded by the request's deadline), then a silent upstream;
- `stream_cut`: a stream passes the real answer through for `after` content chunks, then breaks; a
  non-streaming attempt fails before any answer.

The faults live in one dict owned by the circuits (`Health.faults`, set through the admin API); the
injector only reads it, when an attempt starts — an attempt already running is not affected by a later cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from lifeline.config.schema import Timeouts
from lifeline.errors import UpstreamCutOff, UpstreamError, UpstreamSilent, UpstreamUnavailable
from lifeline.providers.base import ChatCall, Chunk, Completion, Deadline, EmbeddingCall, EmbeddingProvider, Provider

FaultKind = Literal["forbidden", "timeout", "stream_cut", "unavailable"]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)

#: content chunks a `stream_cut` lets through when the operator names no number
STREAM_CUT_AFTER = 3


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    #: stream_cut: content chunks passed through before the stream breaks (0: it breaks before any content)
    after: int = STREAM_CUT_AFTER

    def __str__(self) -> str:
        return self.kind


class FaultInjector:
    """A provider in front of a provider: transparent until its target has a fault in `faults`."""

    def __init__(self, inner: Provider, faults: Mapping[str, Fault], timeouts: Timeouts) -> None:
        self.inner = inner
        self.name = inner.name
        self._faults = faults
        self._timeouts = timeouts

    # --- the Provider protocol, delegated ----------------------------------------------------------

    @property
    def model(self) -> str:
        return self.inner.model

    @model.setter
    def model(self, value: str) -> None:
        self.inner.model = value

    @property
    def context_window(self) -> int | None:
        return self.inner.context_window

    @context_window.setter
    def context_window(self, value: int | None) -> None:
        self.inner.context_window = value

    @property
    def supports_n(self) -> bool:
        return self.inner.supports_n

    @supports_n.setter
    def supports_n(self, value: bool) -> None:
        self.inner.supports_n = value

    def __getattr__(self, name: str) -> Any:
        # Anything else the real provider offers (the engine's queue_depth …) reads through unchanged.
        if name == "inner":  # not set yet (a copy in the making): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def complete(self, call: ChatCall) -> Completion:
        if self._faults:
            fault = self._faults.get(self.name)
            if fault is not None:
                await self._fail(fault, call.deadline, "response")
        return await self.inner.complete(call)

    def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        if self._faults:
            fault = self._faults.get(self.name)
            if fault is not None:
                return self._faulty_stream(fault, call)
        return self.inner.stream(call)

    # --- the faults ----------------------------------------------------------------------------------

    async def _faulty_stream(self, fault: Fault, call: ChatCall) -> AsyncIterator[Chunk]:
        if fault.kind != "stream_cut":
            await self._fail(fault, call.deadline, "first_byte")
        upstream = self.inner.stream(call)
        passed = 0
        try:
            async for chunk in upstream:
                if chunk.content:
                    if passed >= fault.after:
                        raise self._stream_cut()
                    passed += 1
                yield chunk
        finally:
            await upstream.aclose()  # type: ignore[attr-defined]

    async def _fail(self, fault: Fault, deadline: Deadline, phase: str) -> None:
        """Fail one attempt as `fault` says, without an answer from the upstream."""
        if fault.kind == "forbidden":
            raise UpstreamCutOff(f"target {self.name} answered 403 (injected)", target=self.name, upstream_status=403)
        if fault.kind == "unavailable":
            raise UpstreamUnavailable(
                f"target {self.name} answered 503 (injected)", target=self.name, upstream_status=503
            )
        if fault.kind == "timeout":
            # A silent upstream holds the attempt for exactly the timeout that abandons it.
            await asyncio.sleep(deadline.bound(getattr(self._timeouts, phase)))
            raise UpstreamSilent(
                f"target {self.name} sent nothing within the {phase} timeout (injected)", target=self.name
            )
        # stream_cut, on an attempt that is not a stream: the connection drops before any answer
        raise UpstreamUnavailable(f"target {self.name}: connection cut before the answer (injected)", target=self.name)

    def _stream_cut(self) -> UpstreamError:
        return UpstreamUnavailable(f"target {self.name}: stream cut (injected)", target=self.name)


class EmbeddingFaultInjector(FaultInjector):
    """The same, for a target that can also embed."""

    async def embed(self, call: EmbeddingCall) -> Completion:
        if self._faults:
            fault = self._faults.get(self.name)
            if fault is not None:
                await self._fail(fault, call.deadline, "response")
        return await cast(EmbeddingProvider, self.inner).embed(call)


def inject_faults(provider: Provider, faults: Mapping[str, Fault], timeouts: Timeouts) -> FaultInjector:
    """Wrap `provider`; the wrapper can embed exactly when the provider can."""
    if callable(getattr(provider, "embed", None)):
        return EmbeddingFaultInjector(provider, faults, timeouts)
    return FaultInjector(provider, faults, timeouts)
