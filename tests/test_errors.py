"""The error tree: classifying an upstream's error response, and the OpenAI envelope every error renders as."""

from __future__ import annotations

from typing import Any

import pytest

from lifeline import errors
from lifeline.errors import (
    AllTargetsBusy,
    ContentFiltered,
    ContextLengthExceeded,
    DeadlineExceeded,
    Failover,
    InvalidRequest,
    ModelNotFound,
    UpstreamCutOff,
    UpstreamError,
    UpstreamModelNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamUnavailable,
    from_upstream_status,
)


def classify(status: int, error: dict[str, Any] | None = None, retry_after: float | None = None) -> UpstreamError:
    return from_upstream_status(status, error, target="t1", retry_after=retry_after)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_transient_statuses_are_unavailable_and_retried(status: int) -> None:
    err = classify(status, {"message": "boom"})
    assert type(err) is UpstreamUnavailable
    assert err.failover is Failover.RETRY
    assert err.upstream_status == status
    assert err.target == "t1"
    assert err.message == "boom"


def test_unexpected_status_is_unavailable_not_the_clients_fault() -> None:
    err = classify(409)
    assert type(err) is UpstreamUnavailable
    assert err.failover is Failover.RETRY


def test_429_is_rate_limited_and_keeps_retry_after() -> None:
    err = classify(429, {"message": "slow down", "code": "rate_limit_exceeded"}, retry_after=2.5)
    assert type(err) is UpstreamRateLimited
    assert err.failover is Failover.RATE_LIMITED
    assert err.retry_after == 2.5
    assert err.status == 429
    assert err.upstream_status == 429


def test_429_without_retry_after() -> None:
    err = classify(429)
    assert type(err) is UpstreamRateLimited
    assert err.retry_after is None


def test_429_with_insufficient_quota_is_a_cut_off() -> None:
    err = classify(429, {"message": "You exceeded your current quota", "code": "insufficient_quota"}, retry_after=1.0)
    assert type(err) is UpstreamCutOff
    assert err.failover is Failover.CUT_OFF


@pytest.mark.parametrize("status", [401, 402, 403, 451])
def test_account_statuses_are_cut_offs(status: int) -> None:
    err = classify(status, {"message": "no"})
    assert type(err) is UpstreamCutOff
    assert err.failover is Failover.CUT_OFF
    assert err.upstream_status == status


def test_400_with_region_code_is_a_cut_off() -> None:
    err = classify(400, {"message": "Country not supported", "code": "unsupported_country_region_territory"})
    assert type(err) is UpstreamCutOff
    assert err.failover is Failover.CUT_OFF


def test_404_is_model_not_found_and_moves_on() -> None:
    err = classify(404, {"message": "The model does not exist"})
    assert type(err) is UpstreamModelNotFound
    assert err.failover is Failover.NEXT


def test_400_context_length_exceeded() -> None:
    err = classify(400, {"message": "too long", "code": "context_length_exceeded", "param": "messages"})
    assert type(err) is ContextLengthExceeded
    assert err.failover is Failover.CONTEXT
    assert err.status == 400
    assert err.code == "context_length_exceeded"
    assert err.param == "messages"


def test_400_content_filter() -> None:
    err = classify(400, {"message": "refused", "code": "content_filter", "param": "prompt"})
    assert type(err) is ContentFiltered
    assert err.failover is Failover.CONTENT_FILTER
    assert err.param == "prompt"


def test_content_filter_recognised_by_type_too() -> None:
    err = classify(400, {"message": "refused", "type": "content_policy_violation"})
    assert type(err) is ContentFiltered


@pytest.mark.parametrize("status", [400, 422])
def test_other_client_errors_are_rejected_as_is(status: int) -> None:
    error = {
        "message": "temperature too high",
        "type": "invalid_request_error",
        "code": "bad_temp",
        "param": "temperature",
    }
    err = classify(status, error)
    assert type(err) is UpstreamRejected
    assert err.failover is Failover.CLIENT
    assert err.status == status
    assert err.upstream_status == status
    assert err.type == "invalid_request_error"
    assert err.code == "bad_temp"
    assert err.param == "temperature"
    assert err.message == "temperature too high"


def test_rejected_keeps_a_foreign_type() -> None:
    err = classify(422, {"message": "x", "type": "validation_error"})
    assert err.type == "validation_error"


def test_missing_error_body_gets_a_message_naming_the_status() -> None:
    err = classify(503, None)
    assert "503" in err.message


def test_numeric_code_is_compared_as_text() -> None:
    err = classify(400, {"message": "x", "code": 1234})
    assert type(err) is UpstreamRejected
    assert err.code == "1234"


def test_classification_ignores_message_text() -> None:
    message = "quota exceeded: context length exceeded by content filter; model not found"
    by_code = {
        "insufficient_quota": UpstreamCutOff,
        "context_length_exceeded": ContextLengthExceeded,
        "content_filter": ContentFiltered,
        "model_not_found": UpstreamModelNotFound,
        "something_else": UpstreamRejected,
    }
    for code, cls in by_code.items():
        assert type(classify(400, {"message": message, "code": code})) is cls, code
    # and the same text with no code at all is neither of them
    assert type(classify(400, {"message": message})) is UpstreamRejected
    assert type(classify(500, {"message": message})) is UpstreamUnavailable


def test_envelope_shape() -> None:
    err = InvalidRequest("bad temperature", param="temperature")
    assert err.envelope() == {
        "error": {
            "message": "bad temperature",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }
    assert err.status == 400


def test_envelope_of_upstream_error() -> None:
    err = classify(429, {"message": "slow"}, retry_after=1)
    assert err.envelope() == {
        "error": {"message": "slow", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}
    }


@pytest.mark.parametrize(
    ("err", "status", "code"),
    [
        (ModelNotFound("nope"), 404, "model_not_found"),
        (AllTargetsBusy("busy"), 429, "all_targets_busy"),
        (DeadlineExceeded("late"), 504, "deadline_exceeded"),
    ],
)
def test_class_defaults(err: Any, status: int, code: str) -> None:
    assert err.status == status
    assert err.envelope()["error"]["code"] == code


def test_instance_overrides_do_not_leak_to_the_class() -> None:
    err = InvalidRequest("x", status=418, code="teapot", headers={"a": "b"})
    assert (err.status, err.code, err.headers) == (418, "teapot", {"a": "b"})
    assert InvalidRequest("y").status == 400
    assert InvalidRequest("y").headers == {}


@pytest.mark.parametrize(
    ("err", "status", "type_", "code"),
    [
        (errors.PermissionDenied("no"), 403, "invalid_request_error", "permission_denied"),
        (errors.KeyNotFound("no"), 404, "invalid_request_error", "key_not_found"),
        (errors.TargetNotFound("no"), 404, "invalid_request_error", "target_not_found"),
        (errors.NothingToReload("no"), 409, "invalid_request_error", "no_config_file"),
        (errors.ReloadFailed("no"), 400, "invalid_request_error", "invalid_config"),
        (errors.RateLimitExceeded("no", limit="rpm", retry_after=0.2), 429, "rate_limit_error", "rate_limit_exceeded"),
        (
            errors.BudgetExceeded("no", limit_nusd=1, period="day", spent_nusd=1, reserved_nusd=0, amount_nusd=1),
            429,
            "budget_exceeded",
            "budget_exceeded",
        ),
        (errors.LimitBackendUnavailable(), 503, "api_error", "limits_unavailable"),
    ],
)
def test_errors_raised_by_accounting_and_the_admin_api_render_by_status_and_code(
    err: errors.LifelineError, status: int, type_: str, code: str
) -> None:
    # these lived beside the code raising them before joining the tree: what a client sees is unchanged
    assert (err.status, err.envelope()["error"]["type"], err.envelope()["error"]["code"]) == (status, type_, code)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert errors.RateLimitExceeded("x", limit="rpm", retry_after=0.2).headers == {"retry-after": "1"}
    assert errors.RateLimitExceeded("x", limit="tpm", retry_after=2.0).headers == {"retry-after": "2"}
    assert errors.RateLimitExceeded("x", limit="tpm", retry_after=2.01).headers == {"retry-after": "3"}
    assert errors.RateLimitExceeded("x", limit="tpm", retry_after=None).headers == {}
    assert errors.LimitBackendUnavailable().headers == {"retry-after": "1"}
