"""The engine's hub fetch turns the hub client's failures into Lifeline's kinds (the hub unreachable, no
such file, the cache not writable), classified by the client's exception classes and errno, never by
wording. The download is injected; the exceptions are the huggingface_hub package's own."""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lifeline.errors import HubFileNotFound, HubUnreachable, ModelCacheUnwritable, ModelResolutionError
from lifeline.providers.llamacpp import _hub_fetch

hub_errors = pytest.importorskip("huggingface_hub.errors")


def answered(status: int) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("HEAD", "https://huggingface.co/o/r/resolve/main/f.gguf"))


def raising(exc: BaseException) -> Callable[..., Any]:
    def download(**kwargs: Any) -> str:
        raise exc

    return download


@pytest.mark.parametrize(
    ("failure", "kind", "says"),
    [
        (hub_errors.LocalEntryNotFoundError("offline"), HubUnreachable, "cannot reach the hub for o/r/f.gguf"),
        (hub_errors.GatedRepoError("gated", response=answered(403)), HubFileNotFound, "o/r is gated"),
        (hub_errors.RepositoryNotFoundError("no", response=answered(404)), HubFileNotFound, "no repository o/r"),
        (hub_errors.RemoteEntryNotFoundError("no", response=answered(404)), HubFileNotFound, "has no file f.gguf"),
        (hub_errors.HfHubHTTPError("down", response=answered(503)), HubUnreachable, "HTTP status 503"),
        (OSError(errno.ENOSPC, "No space left on device"), ModelCacheUnwritable, "no space left"),
        (PermissionError(errno.EACCES, "Permission denied"), ModelCacheUnwritable, "not writable"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), HubUnreachable, "cannot download"),
    ],
)
def test_each_hub_failure_becomes_its_kind(failure: BaseException, kind: type[ModelResolutionError], says: str) -> None:
    with pytest.raises(kind, match=says) as caught:
        _hub_fetch("o/r", "f.gguf", download=raising(failure))
    assert type(caught.value) is kind


def test_a_download_returns_the_cached_path() -> None:
    seen: dict[str, Any] = {}

    def download(**kwargs: Any) -> str:
        seen.update(kwargs)
        return "/cache/models--o--r/snapshots/abc/f.gguf"

    assert _hub_fetch("o/r", "f.gguf", download=download) == "/cache/models--o--r/snapshots/abc/f.gguf"
    assert seen == {"repo_id": "o/r", "filename": "f.gguf"}
