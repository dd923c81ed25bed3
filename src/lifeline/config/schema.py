"""The configuration schema: one validated object, built once at start-up and passed explicitly.

Every model forbids unknown keys, so a typo in a config file is an error at load, naming the line's path.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from lifeline.config.database_url import parse_database_url

PositiveSeconds = Annotated[float, Field(gt=0)]

#: a host name, or one with a leading dot for the names under it
_HOST_NAME = re.compile(r"^\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*$")


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(Strict):
    """Per-target timeouts, in seconds. Each wait is also bounded by the request's remaining deadline."""

    connect: PositiveSeconds = 5.0
    #: streaming: until the upstream's response headers arrive
    first_byte: PositiveSeconds = 15.0
    #: non-streaming: until the whole answer has arrived (an upstream sends headers only with the answer)
    response: PositiveSeconds = 120.0
    #: streaming: from the request until the first content token. Unset on an HTTP target: the alias's
    #: `first_token_failover_ms` while another target remains, the rest of the deadline on the last one
    #: (on the embedded engine too, where the wait for the engine counts in it)
    ttft: PositiveSeconds = 30.0
    #: streaming: the longest gap between two events once the stream has started
    idle: PositiveSeconds = 30.0

    @property
    def ttft_set(self) -> bool:
        """Whether the config set `ttft` (then it applies wherever the target is in a chain)."""
        return "ttft" in self.model_fields_set


class RetryPolicy(Strict):
    #: retries of the same target after a transient failure (connection error, 5xx), before the next target
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    #: retries of the same target after a 429 without Retry-After
    rate_limit_retries: Annotated[int, Field(ge=0, le=10)] = 1
    backoff_base: PositiveSeconds = 0.25
    backoff_max: PositiveSeconds = 4.0
    #: the longest Retry-After Lifeline will wait out on one target before moving to the next
    retry_after_cap: Annotated[float, Field(ge=0)] = 5.0


class CircuitPolicy(Strict):
    failure_threshold: Annotated[int, Field(ge=1)] = 5
    cooldown: PositiveSeconds = 30.0
    #: after a cut-off (401/402/403/451, billing, region): a long cooldown
    cutoff_cooldown: PositiveSeconds = 600.0
    #: how long a target that answered 429 without Retry-After is left alone by other requests
    rate_limit_pause: PositiveSeconds = 1.0


class Price(Strict):
    """USD per one million tokens."""

    input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]


class Capabilities(Strict):
    """What a target can serve. A request that needs what a target lacks skips it (the reason goes into the
    attempt log) instead of failing there. Unset fields take the target kind's defaults."""

    tools: bool | None = None
    json_schema: bool | None = None
    vision: bool | None = None
    #: continuing a partial assistant message (prefix / prefill)
    prefill: bool | None = None


class TargetMeta(Strict):
    """Facts about the model behind a target, for routing constraints. Filled from the catalogue for
    catalogue targets; declare them yourself for others."""

    open_weights: bool | None = None
    licence: str | None = None
    publisher: str | None = None
    #: ISO 3166 alpha-2 country of the model's publisher
    country: str | None = None
    #: served on your own infrastructure (vLLM, SGLang, Ollama, llama.cpp, the embedded engine …)
    self_hosted: bool | None = None


class TargetCommon(Strict):
    capabilities: Capabilities = Field(default_factory=Capabilities)
    meta: TargetMeta = Field(default_factory=TargetMeta)
    #: embeddings: targets whose vectors are interchangeable share an embedding space (default: the model
    #: id); an embeddings alias may only mix targets of one space
    embedding_space: str | None = None


class HttpTarget(TargetCommon):
    """What every target reached over HTTP has."""

    base_url: str
    api_key: SecretStr | None = None
    #: the model id sent upstream
    model: str
    #: extra headers sent with every request (e.g. an organisation id)
    headers: dict[str, str] = Field(default_factory=dict)
    context_window: Annotated[int, Field(gt=0)] | None = None
    #: overrides the built-in price table (lifeline.accounting.pricing) for this target
    price: Price | None = None
    max_connections: Annotated[int, Field(gt=0)] = 100
    #: "lean": Lifeline's own HTTP/1.1 connection pool (fast; plain HTTP and TLS); "httpx": httpx's default
    #: pool (HTTP/1.1 through httpcore), for servers the lean one cannot talk to
    http_client: Literal["lean", "httpx"] = "lean"
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: RetryPolicy | None = None

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value


class OpenAITarget(HttpTarget):
    kind: Literal["openai"]
    supports_n: bool = True
    #: how this server continues a partial assistant message, for mid-stream continuation (with
    #: capabilities.prefill): "prefix" — DeepSeek's `prefix: true` on the last message; "partial" — Qwen's
    #: `partial: true`; "continue_final_message" — vLLM/SGLang's request flag. Default "prefix".
    prefill_mode: Literal["prefix", "partial", "continue_final_message"] | None = None
    #: ask the upstream for usage in streams (stream_options.include_usage) whatever the client asked
    stream_usage: bool = True
    #: how /v1/responses reaches this target: "translated" — as a chat completion, like every chat target;
    #: "native" — passed through to the upstream's own `{base_url}/responses` (docs/responses.md)
    responses: Literal["translated", "native"] = "translated"
    #: the Responses API's built-in tools (web_search, file_search, code_interpreter …) a native target runs:
    #: a request offering one goes only to native targets that list it
    responses_tools: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _tools_need_native(self) -> OpenAITarget:
        if self.responses_tools and self.responses != "native":
            raise ValueError("responses_tools needs responses: native (a translated target runs no built-in tool)")
        return self


class AnthropicTarget(HttpTarget):
    """Anthropic's Messages API (`POST {base_url}/v1/messages`)."""

    kind: Literal["anthropic"]
    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    #: Anthropic requires max_tokens; this is sent when the client sets none
    default_max_tokens: Annotated[int, Field(gt=0)] = 4096

    @property
    def supports_n(self) -> bool:
        return False


class GeminiTarget(HttpTarget):
    """Google's Gemini API (`{base_url}/models/{model}:generateContent` and `:streamGenerateContent`)."""

    kind: Literal["gemini"]
    base_url: str = "https://generativelanguage.googleapis.com/v1beta"

    @property
    def supports_n(self) -> bool:
        return False


class LlamaCppTarget(TargetCommon):
    kind: Literal["llamacpp"]
    #: a GGUF path, `builtin:smollm2`, or `hf:REPO/FILE.gguf` fetched from a model hub on the user's machine
    model: str = "builtin:smollm2"
    #: the name reported in answers' `model` field; defaults to the model file's name
    served_name: str | None = None
    n_ctx: Annotated[int, Field(gt=0)] = 2048
    n_threads: Annotated[int, Field(gt=0)] | None = None
    #: layers offloaded to a GPU when llama-cpp-python was built with a GPU backend (-1: all); 0: the CPU
    n_gpu_layers: Annotated[int, Field(ge=-1)] = 0
    #: requests waiting for the engine beyond the one generating; when full the engine reports overload
    max_queue: Annotated[int, Field(ge=0)] = 8
    #: seconds a client is told to wait (Retry-After) when the queue is full
    retry_after: PositiveSeconds = 1.0
    #: answers are capped at this many tokens when the client sets no max_tokens
    default_max_tokens: Annotated[int, Field(gt=0)] = 256
    context_window: Annotated[int, Field(gt=0)] | None = None
    #: the embedded engine costs nothing by default
    price: Price = Field(default_factory=lambda: Price(input=0, output=0))
    #: load the model for embeddings (/v1/embeddings) instead of chat
    embedding: bool = False
    #: a LoRA adapter (GGUF, for this model's architecture) applied to the model when it loads
    lora_path: str | None = None
    #: how strongly the adapter applies (1.0: as trained; 0: not at all)
    lora_scale: Annotated[float, Field(allow_inf_nan=False)] = 1.0
    timeouts: Timeouts = Field(default_factory=Timeouts)
    retry: RetryPolicy | None = None
    #: internal, set at run time (`lifeline serve --workers N`): the Unix socket of the one engine process
    #: that has loaded this target's model for every worker; the worker forwards its calls there
    engine_socket: str | None = None
    #: internal, set at run time with `engine_socket`: the name the engine process serves this target's model
    #: under (the target's own name, or a new one after a reload changed its settings)
    engine_target: str | None = None

    @property
    def supports_n(self) -> bool:
        return False

    @field_validator("engine_socket")
    @classmethod
    def _engine_socket(cls, value: str | None) -> str | None:
        return None if value is None else check_engine_socket(value)


def check_engine_socket(path: str) -> str:
    """An engine socket's path as a Unix socket can be bound at it: absolute and short enough."""
    if not path.startswith("/"):
        raise ValueError("engine_socket must be an absolute path")
    if len(path.encode()) > 107:  # sun_path holds 108 bytes, the last one a NUL
        raise ValueError("engine_socket is longer than a Unix socket path may be (107 bytes)")
    return path


Target = Annotated[OpenAITarget | AnthropicTarget | GeminiTarget | LlamaCppTarget, Field(discriminator="kind")]


class Constraints(Strict):
    """Which targets an alias may use at all; checked at load (an alias left with none is an error)."""

    open_weights_only: bool = False
    #: licence ids allowed (e.g. apache-2.0, mit); targets with an unknown licence are excluded
    licences: list[str] | None = None
    #: publisher countries allowed / denied (ISO 3166 alpha-2)
    countries_allow: list[str] | None = None
    countries_deny: list[str] | None = None
    self_hosted_only: bool = False
    #: language → the largest censorship gap allowed in a target's latest stored audit (`lifeline audit
    #: --store`, read when the gateway is built or reloaded); a target never audited in a language is kept
    max_censorship_gap: dict[str, Annotated[float, Field(ge=-1, le=1)]] | None = None
    #: with max_censorship_gap: a target without a stored audit in each of its languages is excluded too
    require_audit: bool = False

    @property
    def uses_audits(self) -> bool:
        return self.max_censorship_gap is not None or self.require_audit

    def excludes_by_audit(self, gaps: Mapping[str, float | None] | None) -> str | None:
        """None when a target whose latest audit found `gaps` (language → gap; None: never audited) meets
        max_censorship_gap; else why not."""
        for language, limit in (self.max_censorship_gap or {}).items():
            gap = (gaps or {}).get(language)
            if gap is None:
                if self.require_audit:
                    return f"no stored audit in {language} (require_audit)"
                continue
            if gap > limit:
                return f"censorship gap {gap:+.2f} in {language} over {limit:+.2f} (latest audit)"
        if self.require_audit and not gaps:
            return "never audited (require_audit)"
        return None

    def excludes(self, meta: TargetMeta, kind: str) -> str | None:
        """None when a target with these facts satisfies the constraints; else why not. Unknown facts
        exclude: a constraint is a promise, and an unknown licence cannot keep it."""
        self_hosted = meta.self_hosted if meta.self_hosted is not None else kind == "llamacpp"
        if self.open_weights_only and meta.open_weights is not True:
            return "not known to be open weights"
        if self.licences is not None and (meta.licence or "").lower() not in {x.lower() for x in self.licences}:
            return f"licence {meta.licence or 'unknown'} not allowed"
        country = (meta.country or "").upper()
        if self.countries_allow is not None and country not in {c.upper() for c in self.countries_allow}:
            return f"publisher country {country or 'unknown'} not allowed"
        if self.countries_deny is not None and (not country or country in {c.upper() for c in self.countries_deny}):
            return f"publisher country {country or 'unknown'} denied"
        if self.self_hosted_only and not self_hosted:
            return "not self-hosted"
        return None


class CaptureSettings(Strict):
    """Opt-in capture of an alias's requests and the answers its clients received, for `lifeline eval`
    (docs/eval.md). A key whose metadata says `capture: false` is never captured (nor shadowed)."""

    #: the share of requests captured, 0 to 1
    sample: Annotated[float, Field(ge=0, le=1)] = 1.0
    #: a request (its JSON body) larger than this is not captured; an answer larger than this is stored
    #: without its body
    max_bytes: Annotated[int, Field(gt=0)] = 256 * 1024
    #: captures older than this many days are pruned; None keeps them
    retention_days: Annotated[float, Field(gt=0)] | None = 30
    #: replace e-mail addresses, phone numbers, long digit runs and API-key-like tokens before storing
    redact: bool = True
    #: more regular expressions whose matches are replaced (with `redact` on), checked at load
    redact_patterns: list[str] = Field(default_factory=list)

    @field_validator("redact_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for index, pattern in enumerate(patterns):
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"entry {index} is not a valid regular expression: {exc}") from None
            if compiled.match(""):
                raise ValueError(f"entry {index} matches the empty string, so it would redact nothing useful")
        return patterns


class ShadowSettings(Strict):
    """Send a sample of an alias's requests, after the client's answer is complete, to candidate targets (or
    aliases) too, and store their answers beside the incumbent's in the capture store (docs/eval.md)."""

    #: target names (each called alone, no failover) or chat alias names (routed as that alias would be)
    candidates: Annotated[list[str], Field(min_length=1)]
    #: the share of requests shadowed, 0 to 1
    sample: Annotated[float, Field(ge=0, le=1)] = 1.0
    #: a hard cap on what this alias's shadow calls may cost per UTC day (price book); a call that could pass
    #: it is not made
    max_usd_per_day: Annotated[float, Field(ge=0)]
    #: shadow calls of this alias running at once at most; more are dropped (counted)
    max_concurrency: Annotated[int, Field(gt=0)] = 4


class CacheSettings(Strict):
    """An alias's opt-in response cache (docs/continuity.md "Response cache"): complete answers kept under
    their normalised request, in memory or in Redis when `accounting.redis_url` is set (shared by replicas)."""

    #: "hit": a deterministic request (temperature 0, or a seed) is answered from the cache when it holds the
    #: answer; "stale_on_failure": only when every target failed is the last good answer served (marked
    #: stale); "both": either
    mode: Literal["hit", "stale_on_failure", "both"] = "stale_on_failure"
    #: seconds an answer may be served after it was stored
    ttl: PositiveSeconds = 3600.0
    #: answers kept for this alias at most; the least recently used are evicted first
    max_entries: Annotated[int, Field(gt=0)] = 1000
    #: bytes of stored answers for this alias at most; the least recently used are evicted first
    max_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    #: answers are kept per virtual key; true shares them between keys, so that one key may receive an answer
    #: first given to another (whatever its prompt held)
    shared_across_keys: bool = False

    @property
    def hits(self) -> bool:
        return self.mode in ("hit", "both")

    @property
    def stale(self) -> bool:
        return self.mode in ("stale_on_failure", "both")


class Alias(Strict):
    #: "chat" aliases serve /v1/chat/completions (and /v1/messages); "embeddings" aliases serve /v1/embeddings
    kind: Literal["chat", "embeddings"] = "chat"
    targets: list[str] = Field(default_factory=list)
    #: every configured host (see `hosts`) of this catalogue model, expanded at load into targets placed
    #: before `targets`
    open_model: str | None = None
    #: how the targets are ordered for each request: as listed; by weight; by lowest observed latency
    #: (EWMA); by lowest price. Failover walks the resulting order.
    policy: Literal["ordered", "weighted", "latency", "cost"] = "ordered"
    #: target → weight, for policy "weighted" (targets left out weigh 1)
    weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    constraints: Constraints = Field(default_factory=Constraints)
    #: on a content-policy refusal, try the next target instead of returning the refusal
    failover_on_content_filter: bool = False
    #: when a stream breaks after content reached the client, continue the same answer on the next target
    #: that accepts an assistant prefix (capabilities.prefill), up to this many times; 0 turns it off
    max_continuations: Annotated[int, Field(ge=0, le=5)] = 2
    #: hold back the first tokens of a stream (this many content events, and at least this long) before
    #: releasing anything, so that an early failure is still retried invisibly
    hold_back_tokens: Annotated[int, Field(ge=0)] = 0
    hold_back_ms: Annotated[float, Field(ge=0)] = 0
    #: streaming: a target (without its own timeouts.ttft) that has sent no first content — text, reasoning,
    #: a tool call — after this long is left for the next available target; the last one gets the rest of
    #: the deadline. None: the targets' own ttft everywhere
    first_token_failover_ms: Annotated[float, Field(gt=0)] | None = 10_000
    #: when a stream breaks after content and no target can continue it, restart the request on the next
    #: target and send only what follows the text the client already has, if the regenerated answer starts
    #: with exactly that text (whitespace aside); else the stream ends with the error (docs/continuity.md)
    replay: bool = True
    #: streaming: when the first target has sent no content after this long, start the next one in
    #: parallel, keep whichever answers first and cancel the other
    hedge_after_ms: Annotated[float, Field(gt=0)] | None = None
    #: opt-in capture of requests and answers (chat aliases)
    capture: CaptureSettings | None = None
    #: shadow traffic to candidates (chat aliases); shadowed requests are captured
    shadow: ShadowSettings | None = None
    #: opt-in response cache (chat aliases): exact repeats answered from it, or only when every target failed
    cache: CacheSettings | None = None


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 4000
    max_body_bytes: Annotated[int, Field(gt=0)] = 4 * 1024 * 1024
    #: the default total deadline of a request, across every attempt; the header
    #: `x-lifeline-timeout` (seconds) may shorten it
    request_timeout: PositiveSeconds = 300.0
    #: the request line and headers of one request, in bytes; more is refused with 431
    max_header_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    #: header lines in one request; more is refused with 431
    max_headers: Annotated[int, Field(gt=0)] = 100
    #: a new connection, or a request once its first byte has come, must have sent all its headers within
    #: this many seconds (else 408, or a plain close when nothing came at all)
    header_timeout: PositiveSeconds = 10.0
    #: a request's whole body must have come within this many seconds of its headers (else 408); a model
    #: request's deadline bounds it too
    body_timeout: PositiveSeconds = 60.0
    #: open client connections at most; a connection beyond them is answered 503 and closed
    max_connections: Annotated[int, Field(gt=0)] = 1000
    #: an idle keep-alive connection is closed after this many seconds
    keepalive_timeout: PositiveSeconds = 5.0
    #: a keep-alive connection is closed after this many requests (the last answer says `connection: close`)
    max_requests_per_connection: Annotated[int, Field(gt=0)] = 1000
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: Host names the gateway answers to besides addresses, localhost and the bind address (a guard against
    #: DNS rebinding): "gw.example.org", ".example.org" (the name and every name under it), or "*" (any)
    allowed_hosts: list[str] = Field(default_factory=list)
    #: serve /admin/* without admin.master_key on a bind beyond loopback (`serve --insecure-admin`)
    insecure_admin: bool = False
    #: worker processes serving the one port (`serve --workers`): 1 is the single process; "auto" is one per
    #: CPU this process may run on (server/workers.py)
    workers: int | Literal["auto"] = 1

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 512):
            return value
        raise ValueError("give a number of worker processes from 1 to 512, or auto (one per CPU)")

    @field_validator("allowed_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        names = []
        for index, entry in enumerate(hosts):
            name = entry.strip().lower().removesuffix(".")
            if name.startswith("[") and name.endswith("]"):
                name = name[1:-1]  # an IPv6 address as a URL writes it
            if name != "*" and not _HOST_NAME.match(name) and not _is_ipv6(name):
                raise ValueError(
                    f"entry {index} is not a host name: give the name alone (gw.example.org, .example.org or *), "
                    "without scheme, port or path"
                )
            names.append(name)
        return names


class AdminSettings(Strict):
    #: guards /admin/*; without it the admin endpoints are open (bind to loopback)
    master_key: SecretStr | None = None

    @field_validator("master_key")
    @classmethod
    def _not_empty(cls, key: SecretStr | None) -> SecretStr | None:
        # `${VAR:-}` with VAR unset reads as "": an empty key would be matched by an empty bearer. Surrounding
        # whitespace cannot travel in a header, so a key read with a trailing newline would never match.
        if key is None:
            return None
        trimmed = key.get_secret_value().strip()
        if not trimmed:
            raise ValueError(
                "the master key is empty (an unset variable?); set it, or remove the line to run without one"
            )
        return SecretStr(trimmed)


class WriterSettings(Strict):
    """A background writer (accounting/ledger.py) in front of a table."""

    #: the background writer commits at least this often (seconds); after SIGKILL at most this much is lost
    commit_interval: PositiveSeconds = 0.5
    #: records per commit at most
    batch_size: Annotated[int, Field(gt=0)] = 1000
    #: records waiting for the writer; beyond this new records are dropped and counted (never blocking requests)
    buffer_size: Annotated[int, Field(gt=0)] = 100_000


class CaptureStoreSettings(WriterSettings):
    """The writer of captures (whole requests and answers, so a smaller buffer than the ledger's)."""

    batch_size: Annotated[int, Field(gt=0)] = 100
    buffer_size: Annotated[int, Field(gt=0)] = 2000


class LedgerSettings(WriterSettings):
    enabled: bool = True
    #: records older than this many days are pruned in small batches; None keeps everything
    retention_days: Annotated[float, Field(gt=0)] | None = 90


class AccountingSettings(Strict):
    #: where the SQLite database lives (default: $LIFELINE_DATA_DIR, else ~/.local/share/lifeline)
    data_dir: str | None = None
    #: postgresql://user:pass@host:port/db — replaces SQLite for the ledger and keys; or sqlite:///path.
    #: Anything else is refused (config/database_url.py); empty means not set.
    database_url: SecretStr | None = None
    #: redis://host:port/db — shares rate limits, budget reservations and circuit state across replicas
    redis_url: SecretStr | None = None
    #: when Redis is unreachable: "open" serves requests (limits not enforced, a warning logged) or
    #: "closed" refuses them with 503
    redis_failure: Literal["open", "closed"] = "open"
    #: seconds to connect to Redis, and for each limits call, before it counts as unreachable
    redis_timeout: PositiveSeconds = 0.5
    #: how often a replica re-reads keys from the database (seconds): a revocation elsewhere takes effect
    #: within this time
    key_refresh_interval: PositiveSeconds = 2.0
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    #: the writer of captures and shadow answers (aliases' `capture:` and `shadow:`)
    captures: CaptureStoreSettings = Field(default_factory=CaptureStoreSettings)

    @field_validator("database_url", mode="before")
    @classmethod
    def _recognised_database_url(cls, value: object) -> object:
        """Refuse a URL that is not PostgreSQL or SQLite; keep the normal form of one that is."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not isinstance(value, str):
            return value  # None, or a wrong type pydantic names itself
        if not value.strip():
            return None  # `${DATABASE_URL:-}` left empty: no URL, SQLite at data_dir
        return parse_database_url(value).url


class TracingSettings(Strict):
    """OpenTelemetry spans (one per request, one per attempt), exported over OTLP/HTTP. Off by default."""

    enabled: bool = False
    #: the collector's OTLP/HTTP traces endpoint
    endpoint: str = "http://127.0.0.1:4318/v1/traces"
    service_name: str = "lifeline"
    #: sent with every export (e.g. an authorization header for a hosted collector)
    headers: dict[str, str] = Field(default_factory=dict)


class ResponseWritesSettings(WriterSettings):
    """How stored responses reach the database (accounting/responses.py)."""

    #: "batched": kept in memory, readable at once on this process, and written by a background writer in
    #: group commits (after SIGKILL at most about commit_interval seconds of them are lost); "immediate": each
    #: one written before its answer is returned (a thread hand-off per response); "auto": batched on
    #: SQLite, immediate on PostgreSQL (where another replica may be asked for the next turn at once)
    mode: Literal["auto", "batched", "immediate"] = "auto"
    commit_interval: PositiveSeconds = 0.1
    batch_size: Annotated[int, Field(gt=0)] = 500
    #: responses waiting for the writer; beyond this each one is written immediately (never dropped)
    buffer_size: Annotated[int, Field(gt=0)] = 10_000


class ResponsesSettings(Strict):
    """The Responses API (/v1/responses): how long stored responses are kept, and how they are written."""

    #: stored responses older than this many days are gone (unreadable at once, pruned hourly); None keeps them
    retention_days: Annotated[float, Field(gt=0)] | None = 30
    writes: ResponseWritesSettings = Field(default_factory=ResponseWritesSettings)


class AuthSettings(Strict):
    #: require a virtual key (Authorization: Bearer ll-…) on /v1 endpoints
    enabled: bool = False


class HostSpec(Strict):
    """An account at a host of open weights (a preset), from which `open_model` aliases draw targets."""

    #: the preset this host is (default: the host's own name)
    preset: str | None = None
    base_url: str | None = None
    #: default: ${<the preset's key variable>}
    api_key: SecretStr | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_connections: Annotated[int, Field(gt=0)] = 100


EvalCheck = Literal["answered", "finish", "json", "schema", "tool", "tool_use", "refusal", "length", "reference"]


BREAKAGE_CHECKS: tuple[EvalCheck, ...] = ("answered", "finish", "json", "schema", "tool", "tool_use", "refusal")


class EvalSettings(Strict):
    """`eval:` — the thresholds of `lifeline eval`'s verdict and its defaults (docs/eval.md "Verdict rules");
    each can also be set by a flag of the command."""

    #: non-inferiority: the 95 % lower bound of the share of items won or tied must reach this
    min_win_or_tie: Annotated[float, Field(ge=0, le=1)] = 0.8
    #: a breakage check's failure rate may not exceed this at its 95 % upper bound
    max_breakage: Annotated[float, Field(ge=0, le=1)] = 0.02
    #: the checks whose failures are breakage (a reason for "not ready"); the others are caveats
    breakage_checks: list[EvalCheck] = Field(default_factory=lambda: list(BREAKAGE_CHECKS))
    #: a candidate slower than this times the baseline (p95 latency) or dearer (cost per 1k) is a caveat
    max_latency_ratio: Annotated[float, Field(gt=0)] = 1.5
    max_cost_ratio: Annotated[float, Field(gt=0)] = 1.5
    #: the length check passes between these ratios of the answer's length to the baseline's
    length_ratio_min: Annotated[float, Field(ge=0)] = 0.5
    length_ratio_max: Annotated[float, Field(gt=0)] = 2.0
    #: fewer paired items than this is a warning: the intervals are too wide to decide much
    min_sample: Annotated[int, Field(ge=1)] = 30
    #: a judge whose two orders disagree on more than this share of pairs is a caveat (order bias)
    max_judge_disagreement: Annotated[float, Field(ge=0, le=1)] = 0.3
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    #: seeds the bootstrap, so that a report's intervals are reproducible
    seed: int = 0


class ConsoleSettings(Strict):
    """The operator console at /ui (docs/console.md)."""

    #: a directory of drill, eval and audit reports (each run's --out directory under it) for the Reports page
    reports_dir: str | None = None


class Config(Strict):
    server: ServerSettings = Field(default_factory=ServerSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    accounting: AccountingSettings = Field(default_factory=AccountingSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    responses: ResponsesSettings = Field(default_factory=ResponsesSettings)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    circuit: CircuitPolicy = Field(default_factory=CircuitPolicy)
    #: hosts of open weights you hold accounts with; `open_model` aliases expand over them
    hosts: dict[str, HostSpec] = Field(default_factory=dict)
    targets: dict[str, Target] = Field(default_factory=dict)
    aliases: dict[str, Alias]
    eval: EvalSettings = Field(default_factory=EvalSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    @model_validator(mode="after")
    def _check_references(self) -> Config:
        if not self.aliases:
            raise ValueError("at least one alias is needed")
        for name, alias in self.aliases.items():
            if not alias.targets:
                raise ValueError(f"alias {name!r} has no targets")
            for target in alias.targets:
                if target not in self.targets:
                    known = ", ".join(sorted(self.targets)) or "none"
                    raise ValueError(f"alias {name!r} names unknown target {target!r} (targets: {known})")
            if len(set(alias.targets)) != len(alias.targets):
                raise ValueError(f"alias {name!r} lists a target twice")
            for target in alias.weights:
                if target not in alias.targets:
                    raise ValueError(f"alias {name!r} weighs target {target!r}, which it does not list")
            if alias.kind == "embeddings":
                self._check_embeddings(name, alias)
            else:
                embedders = [t for t in alias.targets if getattr(self.targets[t], "embedding", False)]
                if embedders:
                    raise ValueError(f"chat alias {name!r} lists embedding-only target(s) {', '.join(embedders)}")
            self._check_capture(name, alias)
            allowed, excluded = self.permitted_targets(alias)
            if not allowed:
                reasons = "; ".join(f"{t}: {r}" for t, r in excluded.items())
                raise ValueError(f"alias {name!r}: its constraints exclude every target ({reasons})")
        return self

    def _check_capture(self, name: str, alias: Alias) -> None:
        if alias.kind == "embeddings" and (alias.capture is not None or alias.shadow is not None):
            raise ValueError(f"embeddings alias {name!r}: capture and shadow are for chat aliases")
        if alias.kind == "embeddings" and alias.cache is not None:
            raise ValueError(f"embeddings alias {name!r}: the response cache is for chat aliases")
        if alias.shadow is None:
            return
        for candidate in alias.shadow.candidates:
            if candidate == name:
                raise ValueError(f"alias {name!r} shadows itself")
            other = self.aliases.get(candidate)
            if other is not None:
                if other.kind != "chat":
                    raise ValueError(f"alias {name!r}: shadow candidate {candidate!r} is not a chat alias")
            elif candidate not in self.targets:
                raise ValueError(f"alias {name!r}: shadow candidate {candidate!r} is neither a target nor an alias")
            elif getattr(self.targets[candidate], "embedding", False):
                raise ValueError(f"alias {name!r}: shadow candidate {candidate!r} is an embedding-only target")
        if len(set(alias.shadow.candidates)) != len(alias.shadow.candidates):
            raise ValueError(f"alias {name!r} lists a shadow candidate twice")

    def capture_of(self, alias: str) -> CaptureSettings | None:
        """How an alias's requests are captured: its `capture:`; the defaults when it only shadows (a shadow
        answer is stored beside the incumbent's); None when neither is set."""
        spec = self.aliases[alias]
        if spec.capture is not None:
            return spec.capture
        return CaptureSettings() if spec.shadow is not None else None

    def _check_embeddings(self, name: str, alias: Alias) -> None:
        spaces: dict[str, list[str]] = {}
        for target_name in alias.targets:
            target = self.targets[target_name]
            if target.kind not in ("openai", "llamacpp") or (target.kind == "llamacpp" and not target.embedding):
                raise ValueError(
                    f"embeddings alias {name!r}: target {target_name!r} cannot embed "
                    "(use kind openai, or llamacpp with embedding: true)"
                )
            space = target.embedding_space or target.model
            spaces.setdefault(space, []).append(target_name)
        if len(spaces) > 1:
            mixed = "; ".join(f"{space}: {', '.join(ts)}" for space, ts in spaces.items())
            raise ValueError(
                f"embeddings alias {name!r} mixes embedding models ({mixed}): vectors of different models are "
                "not interchangeable; give targets that really serve the same model the same embedding_space"
            )

    def permitted_targets(
        self, alias: Alias, audits: Mapping[str, Mapping[str, float | None]] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The alias's targets its constraints allow, and why each other one is excluded (resolved once at
        load, and again by the router it is built with). `audits` (target → language → latest censorship gap,
        read from the accounting database by the gateway) applies max_censorship_gap; without it (at load)
        the audit constraints are not checked."""
        allowed: list[str] = []
        excluded: dict[str, str] = {}
        for name in alias.targets:
            target = self.targets[name]
            reason = alias.constraints.excludes(target.meta, target.kind)
            if reason is None and audits is not None and alias.constraints.uses_audits:
                reason = alias.constraints.excludes_by_audit(audits.get(name))
            if reason is None:
                allowed.append(name)
            else:
                excluded[name] = reason
        return allowed, excluded

    def retry_for(self, target: str) -> RetryPolicy:
        return self.targets[target].retry or self.retry


def default_config() -> Config:
    """The configuration used with no config file: the embedded model under `default` and `local`."""
    return Config(
        targets={"local": LlamaCppTarget(kind="llamacpp", model="builtin:smollm2")},
        aliases={"default": Alias(targets=["local"]), "local": Alias(targets=["local"])},
    )
