"""Lifeline's one exception tree.

Every error a request can meet is one of these classes. Each class knows the HTTP status and the OpenAI
error ``type``/``code`` it renders as, and its *failover class*: what the router does when an upstream
attempt ends with it. Providers convert foreign errors (httpx exceptions, upstream status codes and error
bodies, llama.cpp failures) into these at their boundary; the router reads only ``failover``; the server
renders any of them through one handler.

    LifelineError
    ├── ClientError                 the client's mistake; never failed over
    │   ├── InvalidRequest          400, names the parameter
    │   ├── AuthenticationFailed    401 (admin endpoints)
    │   ├── PermissionDenied        403, a key used beyond its aliases; the keys API without a master key
    │   ├── ModelNotFound           404 model_not_found (unknown alias)
    │   ├── KeyNotFound             404, admin: no virtual key with that id
    │   ├── TargetNotFound          404, admin: no target of that name
    │   ├── ResponseNotFound        404 response_not_found (a stored response)
    │   ├── RouteNotFound           404 / 405 for unknown paths
    │   ├── PayloadTooLarge         413
    │   ├── HostNotAllowed          403, a Host header the gateway does not answer to (DNS rebinding)
    │   ├── AdminDisabled           403, the admin API on a bind beyond loopback without a master key
    │   ├── OriginNotAllowed        403, an admin change from another site's page
    │   ├── UnsupportedMediaType    415, an admin body that is not application/json
    │   ├── RequestTimeout          408 headers or body sent too slowly
    │   ├── HeadersTooLarge         431 too many header bytes or lines
    │   ├── MalformedRequest        400 not valid HTTP/1.1
    │   ├── MethodNotImplemented    501 an HTTP method the server does not know
    │   ├── ClientClosed            499 the client left before its request was read
    │   ├── NothingToReload         409, admin: a reload with no config file to read again
    │   ├── ReloadFailed            400 invalid_config: the new config was refused; the old one keeps serving
    │   ├── RateLimitExceeded       429 with Retry-After: a key's requests or tokens per minute
    │   └── BudgetExceeded          429: a key's budget for the period cannot cover the request
    ├── UpstreamError               one attempt at one target failed; carries the target name
    │   ├── UpstreamUnavailable     connect error, reset, 5xx             → RETRY
    │   ├── UpstreamRateLimited     429 (retry_after when given)          → RATE_LIMITED
    │   ├── UpstreamCutOff          401/402/403/451, billing/region codes → CUT_OFF
    │   ├── UpstreamModelNotFound   404                                   → NEXT
    │   ├── ContextLengthExceeded   400 context_length_exceeded          → CONTEXT
    │   ├── ContentFiltered         400 content policy                    → CONTENT_FILTER
    │   ├── UpstreamRejected        other 400/422                         → CLIENT (returned as is)
    │   ├── UpstreamSilent          no headers / first token / idle       → SILENT
    │   ├── UpstreamOverloaded      embedded engine queue full            → BUSY
    │   │   └── ConnectionPoolFull  no pooled connection free within connect → BUSY
    │   └── UpstreamBroken          a stream broke after content: continued, else an error event
    └── GatewayError                the request as a whole could not be served
        ├── AllTargetsFailed        502, every target failed
        ├── AllTargetsBusy          429 with Retry-After: every target rate-limited or busy
        ├── (all_targets_drained)   503 when an operator drained every target
        ├── ServerBusy              503 with Retry-After: no room for another client connection
        ├── DeadlineExceeded        504
        ├── AccountingUnavailable   503 with Retry-After: the gateway's own database is down
        └── LimitBackendUnavailable 503 with Retry-After: the limits store (Redis) is down, and the config
                                    says to refuse rather than guess

The errors no request meets as such are said to a person (by the CLI, in a log, in a reload's answer) and
have no status of their own; they live here too, so that this module is the one place to look:

    Exception
    ├── ConfigError                 the configuration cannot be read or is invalid: one problem a line
    ├── ModelResolutionError        an embedded model's spec names no GGUF file that can be found or fetched
    │   ├── HubUnreachable          the model hub cannot be reached (no network) and the file is not cached
    │   ├── HubFileNotFound         the hub has no such repository or file, or it is gated (needs a login)
    │   └── ModelCacheUnwritable    the download cannot be written to the cache: disk full or not writable
    ├── EngineProcessError          the embedded engine's own process (one per machine, serving every
    │                               worker) could not be started: a model failed to load, no socket
    ├── DatabaseError               the database refused a statement (a value it cannot store, a constraint)
    │   └── DatabaseUnavailable     down, unreachable, busy, full or read-only: the same statement may work
    │                               later (a request meets it as AccountingUnavailable)
    ├── ProtocolError               an upstream's bytes are not an HTTP/1.1 response (the lean transport
    │                               raises httpx's RemoteProtocolError for it, which providers convert)
    ├── HttpError                   the fault wall (testing/) cannot read a request: answered with `status`
    └── ValueError                  a value given cannot be used (a schema validator reports a ValueError
        │                           as a config problem: DatabaseUrlError relies on it)
        ├── DatabaseUrlError        not a database URL Lifeline can use; the message never quotes it
        ├── Untranslatable          a request holds what the target's API cannot express (a provider
        │                           answers it as UpstreamRejected)
        ├── UsageQueryError         a usage report's grouping or filter cannot be used
        ├── PromptError             a drill's prompts file cannot be used (names the file and line)
        ├── DrillError              a drill cannot run as asked (an unknown target or alias, a bad number)
        ├── LabelledSetError        the audit classifier's labelled answers cannot be used (names the line)
        ├── SuiteError              an audit suite cannot be used (names the file and line, or the suite)
        ├── EvalInputError          an eval's items cannot be used (names the file and line)
        ├── EvalError               an eval cannot run as asked (an unknown candidate, judge or baseline)
        └── AuditError              a speech audit cannot run as asked (a language the suite lacks)
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from typing import Any, Literal

from lifeline.attempts import AttemptLog, Outcome


class Failover(enum.Enum):
    """What the router does after an attempt fails with a given error (see routing/policy.py)."""

    RETRY = "retry"  # transient: the same target again with backoff, then the next
    RATE_LIMITED = "rate_limited"  # honour Retry-After within the deadline, else the next
    CUT_OFF = "cut_off"  # no retry; open the circuit for a long cooldown; the next
    NEXT = "next"  # no retry; the next target
    BUSY = "busy"  # no retry; the next target; says nothing about the target's health (a full queue)
    CONTEXT = "context"  # the next target with a larger context window, else the error
    CONTENT_FILTER = "content_filter"  # the error goes back unless the alias opts in to failover
    SILENT = "silent"  # a target that went quiet is not retried; the next
    CLIENT = "client"  # the client's mistake: returned as is, no failover


class LifelineError(Exception):
    status: int = 500
    type: str = "api_error"
    code: str | None = "internal_error"
    param: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param
        self.headers: dict[str, str] = dict(headers or {})
        #: the attempts made before this error was raised (set by the router), for the ledger
        self.attempts = AttemptLog()

    def envelope(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# --- the client's mistakes -------------------------------------------------------------------------


class ClientError(LifelineError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class InvalidRequest(ClientError):
    code = "invalid_value"


class AuthenticationFailed(ClientError):
    status = 401
    code = "invalid_api_key"


class PermissionDenied(ClientError):
    status = 403
    code = "permission_denied"


class KeyNotFound(ClientError):
    status = 404
    code = "key_not_found"


class TargetNotFound(ClientError):
    status = 404
    code = "target_not_found"


class ModelNotFound(ClientError):
    status = 404
    code = "model_not_found"
    param = "model"


class ResponseNotFound(ClientError):
    """A stored response that does not exist for this caller: never stored, deleted, past retention, or
    another key's."""

    status = 404
    code = "response_not_found"


class RouteNotFound(ClientError):
    status = 404
    code = "not_found"


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class HostNotAllowed(ClientError):
    status = 403
    code = "host_not_allowed"


class AdminDisabled(ClientError):
    status = 403
    code = "admin_disabled"


class OriginNotAllowed(ClientError):
    status = 403
    code = "origin_not_allowed"


class UnsupportedMediaType(ClientError):
    status = 415
    code = "unsupported_media_type"


# The connection's own mistakes, answered by the HTTP protocol (server/serving.py) or while reading a body.


class RequestTimeout(ClientError):
    status = 408
    code = "request_timeout"


class HeadersTooLarge(ClientError):
    status = 431
    code = "request_header_fields_too_large"


class MalformedRequest(ClientError):
    code = "invalid_http_request"


class MethodNotImplemented(ClientError):
    status = 501
    code = "method_not_implemented"


class ClientClosed(ClientError):
    status = 499
    code = "client_closed_request"


class NothingToReload(ClientError):
    status = 409
    code = "no_config_file"


class ReloadFailed(ClientError):
    """The new config was refused; the gateway serving before keeps serving."""

    code = "invalid_config"


# A key's own limits (accounting/limits.py builds the messages).


def whole_seconds(seconds: float) -> int:
    """Whole seconds for a Retry-After header: rounded up, so a client that waits that long finds a slot."""
    return max(1, math.ceil(seconds - 1e-9))


class RateLimitExceeded(ClientError):
    """A key's requests-per-minute or tokens-per-minute limit refused a request."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit: Literal["rpm", "tpm"], retry_after: float | None) -> None:
        headers = {"retry-after": str(whole_seconds(retry_after))} if retry_after is not None else None
        super().__init__(message, headers=headers)
        self.limit = limit
        self.retry_after = retry_after


class BudgetExceeded(ClientError):
    """A key's budget for the current period cannot cover this request's worst case."""

    status = 429
    type = "budget_exceeded"
    code = "budget_exceeded"

    def __init__(
        self, message: str, *, limit_nusd: int, period: str, spent_nusd: int, reserved_nusd: int, amount_nusd: int
    ) -> None:
        super().__init__(message)
        self.limit_nusd = limit_nusd
        #: "day", "month" or "total"
        self.period = period
        self.spent_nusd = spent_nusd
        self.reserved_nusd = reserved_nusd
        self.amount_nusd = amount_nusd


# --- one failed attempt at one target --------------------------------------------------------------


class UpstreamError(LifelineError):
    """An attempt at a target failed. ``upstream_status`` is what the upstream said, if it said anything."""

    failover: Failover = Failover.RETRY
    status = 502
    type = "api_error"
    code = "upstream_error"
    #: what the attempt log records for an attempt that failed with this error
    outcome: Outcome = Outcome.ERROR

    def __init__(
        self,
        message: str,
        *,
        target: str = "",
        upstream_status: int | None = None,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.target = target
        self.upstream_status = upstream_status
        self.retry_after = retry_after


class UpstreamUnavailable(UpstreamError):
    failover = Failover.RETRY
    outcome = Outcome.UNAVAILABLE


class UpstreamRateLimited(UpstreamError):
    failover = Failover.RATE_LIMITED
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    outcome = Outcome.RATE_LIMITED


class UpstreamCutOff(UpstreamError):
    failover = Failover.CUT_OFF
    outcome = Outcome.CUT_OFF


class UpstreamModelNotFound(UpstreamError):
    failover = Failover.NEXT
    outcome = Outcome.MODEL_NOT_FOUND


class ContextLengthExceeded(UpstreamError):
    failover = Failover.CONTEXT
    status = 400
    type = "invalid_request_error"
    code = "context_length_exceeded"
    param = "messages"
    outcome = Outcome.CONTEXT_LENGTH_EXCEEDED


class ContentFiltered(UpstreamError):
    failover = Failover.CONTENT_FILTER
    status = 400
    type = "invalid_request_error"
    code = "content_filter"
    outcome = Outcome.CONTENT_FILTER


class UpstreamRejected(UpstreamError):
    """The upstream said the request itself is wrong (400/422): the client gets it back as is."""

    failover = Failover.CLIENT
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    outcome = Outcome.REJECTED


class UpstreamSilent(UpstreamError):
    failover = Failover.SILENT
    status = 504
    type = "api_error"
    code = "upstream_timeout"
    outcome = Outcome.SILENT


class UpstreamOverloaded(UpstreamError):
    """The embedded engine's wait queue is full."""

    failover = Failover.BUSY
    status = 503
    type = "api_error"
    code = "overloaded"
    outcome = Outcome.OVERLOADED


class ConnectionPoolFull(UpstreamOverloaded):
    """Every connection of the target's pool stayed busy for the whole connect timeout: the gateway's own
    cap is full, which says nothing about the target's health (no circuit verdict; the next target)."""

    outcome = Outcome.POOL_FULL


class UpstreamBroken(UpstreamError):
    """A stream broke after content reached the client; it is reported to the client as an error event."""

    failover = Failover.NEXT
    outcome = Outcome.BROKEN


# --- the request as a whole ------------------------------------------------------------------------


class GatewayError(LifelineError):
    status = 502
    type = "api_error"


class AllTargetsFailed(GatewayError):
    status = 502
    code = "all_targets_failed"


class AllTargetsBusy(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "all_targets_busy"


class DeadlineExceeded(GatewayError):
    status = 504
    code = "deadline_exceeded"


class AccountingUnavailable(GatewayError):
    """The gateway's own database (keys, budgets, usage) cannot be reached. Not the client's fault and
    not for long, so: 503 with Retry-After. The message never says where the database is."""

    status = 503
    code = "database_unavailable"
    #: seconds a client is asked to wait
    RETRY_AFTER = 5

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message
            or f"The gateway's database (keys, budgets, usage) is unreachable; retry in {self.RETRY_AFTER} seconds.",
            headers={"retry-after": str(self.RETRY_AFTER)},
        )


class ServerBusy(GatewayError):
    status = 503
    code = "server_busy"


class LimitBackendUnavailable(GatewayError):
    """The limits store (Redis) cannot be reached and the configuration says to refuse rather than guess."""

    status = 503
    code = "limits_unavailable"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(
            message or "Rate limits and budgets cannot be checked right now (the limits store is unreachable).",
            headers={"retry-after": "1"},
        )


# --- not a request's error: said to a person (the CLI, a log, a reload's answer) --------------------------


class ConfigError(Exception):
    """The configuration could not be read or is invalid. `problems` holds one line per offending key
    (`targets.x.model: …`, prefixed with `file:line:` by `load_config`); str() joins them with "; "."""

    def __init__(self, *problems: str, missing: Sequence[str] = ()) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)
        #: environment variables the config refers to that are not set, in order of first use
        self.missing_variables = list(missing)


class ModelResolutionError(Exception):
    """The configured model cannot be found or fetched."""


class HubUnreachable(ModelResolutionError):
    """The model hub could not be reached (no network, a proxy, a failing hub) and the file is not cached."""


class HubFileNotFound(ModelResolutionError):
    """The hub has no such repository, revision or file, or the repository needs a login (a gated model)."""


class ModelCacheUnwritable(ModelResolutionError):
    """A download could not be written to the local model cache: the disk is full or the cache not writable."""


class EngineProcessError(Exception):
    """The engine process that serves the embedded models to every worker could not start (it says why)."""


class DatabaseError(Exception):
    """The database could not be reached or refused a statement."""


class DatabaseUnavailable(DatabaseError):
    """The database is down, unreachable, busy, out of disk or read-only: not the statement's fault, so the
    same statement may succeed later. Every other DatabaseError is the database refusing the statement
    (a value it cannot store, a constraint), which repeating will not change."""


class ProtocolError(Exception):
    """The upstream sent something that is not an HTTP/1.1 response."""


class HttpError(Exception):
    """A request the fault wall cannot read; answered with ``status`` and the connection is closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DatabaseUrlError(ValueError):
    """Not a database URL Lifeline can use; the message says why without quoting the URL."""


class Untranslatable(ValueError):
    """The request holds something the target's API cannot express."""


class UsageQueryError(ValueError):
    """A grouping or filter the report cannot use; the message says which and what is allowed."""


class PromptError(ValueError):
    """The prompts file cannot be used; the message names the file and line."""


class DrillError(ValueError):
    """The drill cannot run as asked (an unknown target or alias, a bad number); the message says why."""


class LabelledSetError(ValueError):
    """A file of labelled answers (the audit classifier's accuracy set) cannot be used; names the line."""


class SuiteError(ValueError):
    """An audit suite cannot be used; the message names the file and line (or the built-in suite)."""


class EvalInputError(ValueError):
    """An eval's items cannot be used; the message names the file and line."""


class EvalError(ValueError):
    """An eval cannot run as asked (an unknown candidate, baseline or judge, a bad number)."""


class AuditError(ValueError):
    """A speech audit cannot run as asked (a language the suite lacks, a gateway that cannot start)."""


# Error codes an upstream uses for a refusal of the account rather than of the request. They arrive with
# 400, 403 or 429 depending on the provider; the code, not the message, is what marks a cut-off.
CUT_OFF_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_hard_limit_reached",
        "billing_not_active",
        "account_deactivated",
        "account_suspended",
        "unsupported_country_region_territory",
        "unsupported_country",
        "region_not_supported",
        "access_terminated",
        "organization_deactivated",
        "invalid_api_key",
        "permission_denied",
    }
)
CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length", "context_window_exceeded"})
CONTENT_FILTER_CODES = frozenset({"content_filter", "content_policy_violation", "data_inspection_failed"})
MODEL_NOT_FOUND_CODES = frozenset({"model_not_found", "model_not_available"})


def from_upstream_status(
    status: int,
    error: dict[str, Any] | None,
    *,
    target: str,
    retry_after: float | None,
) -> UpstreamError:
    """Classify an upstream's error response by status and error code (never by message text)."""
    error = error or {}
    raw_code = error.get("code")
    code = str(raw_code) if raw_code is not None else None
    etype = error.get("type") if isinstance(error.get("type"), str) else None
    message = str(error.get("message") or f"upstream answered {status}")
    param = error.get("param") if isinstance(error.get("param"), str) else None
    kwargs: dict[str, Any] = {"target": target, "upstream_status": status, "retry_after": retry_after}
    cls: type[UpstreamError]
    if code in CUT_OFF_CODES or status in (401, 402, 403, 451):
        cls = UpstreamCutOff
    elif status == 429:
        cls = UpstreamRateLimited
    elif code in CONTEXT_CODES:
        cls = ContextLengthExceeded
    elif code in CONTENT_FILTER_CODES or etype in CONTENT_FILTER_CODES:
        cls = ContentFiltered
    elif status == 404 or code in MODEL_NOT_FOUND_CODES:
        cls = UpstreamModelNotFound
    elif status in (400, 413, 422):
        # Passed back to the client as the upstream said it, status included.
        return UpstreamRejected(
            message, status=status, type=etype or "invalid_request_error", code=code, param=param, **kwargs
        )
    elif status == 408 or status >= 500:
        cls = UpstreamUnavailable
    else:
        # An unexpected status (3xx, 409, 418 …) is a broken target, not the client's fault.
        cls = UpstreamUnavailable
    err = cls(message, **kwargs)
    if cls in (ContextLengthExceeded, ContentFiltered):
        err.param = param or err.param
    return err
