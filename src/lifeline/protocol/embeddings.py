"""OpenAI's embeddings request, validated (fields in the order of OpenAI's reference; extra fields kept)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from lifeline.errors import InvalidRequest
from lifeline.protocol.chat import Wire
from lifeline.protocol.parse import describe_first_error

Tokens = Annotated[list[int], Field(min_length=1)]


class EmbeddingRequest(Wire):
    input: str | Annotated[list[str], Field(min_length=1)] | Tokens | Annotated[list[Tokens], Field(min_length=1)]
    model: str
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None


def validate_embedding_request(data: dict[str, Any]) -> EmbeddingRequest:
    try:
        return EmbeddingRequest.model_validate(data)
    except ValidationError as exc:
        raise describe_first_error(exc) from None


__all__ = ["EmbeddingRequest", "InvalidRequest", "validate_embedding_request"]
