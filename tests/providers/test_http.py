"""Retry-After in its three forms, error bodies in every shape upstreams send, and scrubbing keys."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from lifeline.providers.http import error_object, retry_after_seconds, scrub


def headers(**values: str) -> httpx.Headers:
    return httpx.Headers({k.replace("_", "-"): v for k, v in values.items()})


# --- Retry-After ------------------------------------------------------------------------------------


def test_no_header() -> None:
    assert retry_after_seconds(httpx.Headers()) is None


@pytest.mark.parametrize(("value", "expected"), [("3", 3.0), ("0", 0.0), ("1.5", 1.5), ("-4", 0.0)])
def test_retry_after_seconds(value: str, expected: float) -> None:
    assert retry_after_seconds(headers(retry_after=value)) == expected


def test_retry_after_ms_wins_over_seconds() -> None:
    assert retry_after_seconds(headers(retry_after_ms="250", retry_after="9")) == 0.25


def test_retry_after_ms_alone() -> None:
    assert retry_after_seconds(headers(retry_after_ms="1500")) == 1.5


def test_garbage_retry_after_ms_falls_back_to_retry_after() -> None:
    assert retry_after_seconds(headers(retry_after_ms="soon", retry_after="2")) == 2.0
    assert retry_after_seconds(headers(retry_after_ms="soon")) is None


def test_retry_after_http_date_in_the_future(monkeypatch: pytest.MonkeyPatch) -> None:
    now = 1_790_000_000.0  # a whole second, as HTTP dates are
    monkeypatch.setattr(time, "time", lambda: now)
    value = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds(headers(retry_after=value)) == 30.0


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    assert retry_after_seconds(headers(retry_after="Wed, 21 Oct 2015 07:28:00 GMT")) == 0.0


@pytest.mark.parametrize("value", ["soon", "Mon, 99 Foo", "tomorrow at noon", "1,5"])
def test_garbage_retry_after(value: str) -> None:
    assert retry_after_seconds(headers(retry_after=value)) is None


@pytest.mark.parametrize("name", ["retry-after", "retry-after-ms"])
def test_non_finite_retry_after_is_garbage(name: str) -> None:
    value = retry_after_seconds(httpx.Headers({name: "inf"}))
    assert value is None


# --- error bodies -----------------------------------------------------------------------------------


def test_openai_envelope() -> None:
    raw = b'{"error": {"message": "bad", "type": "invalid_request_error", "param": "n", "code": "x"}}'
    assert error_object(raw) == {"message": "bad", "type": "invalid_request_error", "param": "n", "code": "x"}


def test_string_error_with_code_beside_it() -> None:
    raw = b'{"error": "quota gone", "code": "insufficient_quota", "type": "billing"}'
    assert error_object(raw) == {"message": "quota gone", "code": "insufficient_quota", "type": "billing"}


def test_string_error_alone() -> None:
    assert error_object(b'{"error": "nope"}') == {"message": "nope", "code": None, "type": None}


def test_flat_object_with_message() -> None:
    raw = b'{"message": "model overloaded", "code": 503}'
    assert error_object(raw) == {"message": "model overloaded", "code": 503}


def test_plain_text_body() -> None:
    assert error_object(b"  502 Bad Gateway\n") == {"message": "502 Bad Gateway"}


def test_long_plain_text_is_cut() -> None:
    assert len(error_object(b"<html>" + b"x" * 5000)["message"]) == 500


def test_non_utf8_text_is_replaced_not_raised() -> None:
    assert error_object(b"\xff\xfe bad bytes")["message"].endswith("bad bytes")


@pytest.mark.parametrize("raw", [b"", b"   ", b"[]", b"null", b'{"detail": "x"}', b'{"error": 5}'])
def test_empty_or_unknown_shapes(raw: bytes) -> None:
    assert error_object(raw) == {}


# --- scrubbing --------------------------------------------------------------------------------------

KEY = "sk-abcdefgh12345678"


def test_scrub_whole_key() -> None:
    assert scrub(f"Incorrect API key provided: {KEY}.", (KEY,)) == "Incorrect API key provided: ***."


def test_scrub_half_masked_key() -> None:
    text = scrub("Incorrect API key provided: sk-abcde*******5678.", (KEY,))
    assert "sk-abcde" not in text
    assert "***" in text


def test_scrub_short_secret_only_whole() -> None:
    assert scrub("key abc123 and abc1", ("abc123",)) == "key *** and abc1"


def test_scrub_empty_secrets_change_nothing() -> None:
    assert scrub("nothing here", ()) == "nothing here"
    assert scrub("nothing here", ("",)) == "nothing here"


def test_scrub_every_occurrence_and_every_secret() -> None:
    other = "second-secret-value-xyz"
    text = scrub(f"{KEY} {KEY} {other}", (KEY, other))
    assert KEY not in text
    assert other not in text
    assert text == "*** *** ***"
