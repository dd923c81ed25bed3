"""The checks at the gateway's edge, before any route: what a browser could be tricked into sending.

- **Host** (every request): a page on a name its attacker controls can rebind that name to 127.0.0.1 and
  talk to a loopback gateway as if it were its own site; its requests carry that name as `Host`. A gateway on
  loopback answers only to addresses, `localhost`, the name it is bound to and `server.allowed_hosts`; one
  bound beyond loopback answers any name until `server.allowed_hosts` lists its names.
- **The admin API** (`/admin/*`): refused on a bind beyond loopback without a master key (unless
  `server.insecure_admin`); a state-changing call must come from the gateway's own origin, and carry JSON
  as JSON — a cross-site form can send `text/plain` without a preflight, never `application/json`.
- **Other requests that change something** (a chat request costs money): one from another site's page must
  be JSON, which a browser sends cross-site only after a preflight the gateway never grants (no CORS).

A refusal is answered in OpenAI's envelope, before the gateway counts the request.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence

from starlette.types import Scope

from lifeline.config.schema import ServerSettings
from lifeline.errors import (
    AdminDisabled,
    ClientError,
    HostNotAllowed,
    OriginNotAllowed,
    UnsupportedMediaType,
)

log = logging.getLogger("lifeline.server")

#: the paths of the admin API (and of anything else that controls the gateway, such as a console)
ADMIN_PREFIXES = ("/admin",)
_ADMIN_PATHS = frozenset(ADMIN_PREFIXES)
_UNDER_ADMIN = tuple(p + "/" for p in ADMIN_PREFIXES)
#: the headers the guard reads (the others are not looked at)
_READ = frozenset({b"host", b"origin", b"sec-fetch-site", b"content-type", b"content-length", b"transfer-encoding"})
#: how many Host headers a policy remembers its verdict on (a client can send any number of different ones)
_MAX_VERDICTS = 256
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})
#: a host name as it may appear in a Host header (letters, digits, '-', '_', '.')
_NAME = re.compile(r"^[a-z0-9_.-]+$")


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only: 127.0.0.0/8, ::1 or `localhost`."""
    host = host.strip().lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_authority(authority: str) -> tuple[str, int | None] | None:
    """`host[:port]` of a Host header or an origin → (lower-case host without brackets or a trailing dot,
    port); None when malformed."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, rest = authority[1:end], authority[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, colon, port_text = authority.partition(":")
        rest = colon + port_text
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or len(rest) > 6:
            return None
        port = int(rest[1:])
    host = host.removesuffix(".")
    if not host or not (_NAME.match(host) or ":" in host):
        return None
    return host, port


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostPolicy:
    """The Host names a gateway bound to `bind` answers to. An address is always answered: a browser sends
    one only when the page's own URL names it, and an address cannot be rebound to another machine."""

    def __init__(self, bind: str, allowed_hosts: Sequence[str]) -> None:
        bind = bind.strip().lower()
        self.loopback = is_loopback(bind)
        # Beyond loopback, a gateway is reached by names it cannot know (a service name, a load balancer's):
        # it answers any Host until the operator lists its names, which closes rebinding there too.
        self.any_host = "*" in allowed_hosts or (not allowed_hosts and not is_loopback(bind))
        own = {"localhost"} | ({bind} if bind not in _WILDCARD_BINDS else set())
        #: ".example.org" answers example.org and every name under it
        self.suffixes = tuple({"localhost", *(h[1:] for h in allowed_hosts if h.startswith("."))})
        listed = {h for h in allowed_hosts if h != "*" and not h.startswith(".")}
        self.names = frozenset(own | listed | set(self.suffixes))
        #: named in the config: a page served under one of these names may call the admin API
        self.configured = frozenset(h for h in allowed_hosts if h != "*")
        #: Host header → whether it is answered (a gateway is reached by a handful of names)
        self._verdicts: dict[str, bool] = {}

    def allows(self, host_header: str | None) -> bool:
        if host_header is None:
            return True  # HTTP/1.0 without Host: not a browser
        if self.any_host:
            return True
        verdict = self._verdicts.get(host_header)
        if verdict is None:
            parsed = split_authority(host_header)
            verdict = parsed is not None and self.answers(parsed[0])
            if len(self._verdicts) < _MAX_VERDICTS:
                self._verdicts[host_header] = verdict
        return verdict

    def answers(self, host: str) -> bool:
        return host in self.names or _is_address(host) or any(host.endswith("." + s) for s in self.suffixes)

    def configured_name(self, host: str) -> bool:
        return any(host == h or (h.startswith(".") and (host == h[1:] or host.endswith(h))) for h in self.configured)


def same_origin(origin: str, host_header: str | None, policy: HostPolicy) -> bool:
    """Whether a browser's `Origin` is the gateway's own: the scheme's host and port the request went to (as
    its Host header says), or a name listed in `server.allowed_hosts` (a proxy that rewrites Host)."""
    scheme, sep, authority = origin.strip().lower().partition("://")
    if not sep or scheme not in ("http", "https"):
        return False  # "null" (a sandboxed frame, a file), or some other scheme
    parsed = split_authority(authority)
    if parsed is None:
        return False
    default_port = 443 if scheme == "https" else 80
    host, port = parsed[0], parsed[1] or default_port
    requested = split_authority(host_header) if host_header is not None else None
    if requested is not None and requested[0] == host and (requested[1] or default_port) == port:
        return True
    return policy.configured_name(host)


def _cross_site(headers: dict[bytes, bytes], host: str | None, policy: HostPolicy) -> bool:
    """Whether a browser sent the request for another site's page: its Origin, else its fetch metadata."""
    origin = _text(headers.get(b"origin"))
    if origin is not None:
        return not same_origin(origin, host, policy)
    return headers.get(b"sec-fetch-site", b"").lower() in (b"cross-site", b"same-site")


def _headers(scope: Scope) -> dict[bytes, bytes]:
    # the first of each name the guard reads, as Starlette's Request.headers.get does
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _READ and name not in found:
            found[name] = value
    return found


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


class EdgeGuard:
    """See the module docstring; `check` is called by the gateway's middleware (server/middleware.py) for
    every request, with the settings of the gateway serving now (a reload may change `allowed_hosts` and the
    master key; the bind address and `insecure_admin` are fixed at start)."""

    def __init__(self) -> None:
        self._settings: ServerSettings | None = None
        self._policy = HostPolicy("127.0.0.1", ())

    def policy(self, settings: ServerSettings) -> HostPolicy:
        if settings is not self._settings:
            self._policy = HostPolicy(settings.host, settings.allowed_hosts)
            self._settings = settings
        return self._policy

    def check(self, scope: Scope, settings: ServerSettings, *, has_master_key: bool) -> ClientError | None:
        headers = _headers(scope)
        policy = self.policy(settings)
        host = _text(headers.get(b"host"))
        if not policy.allows(host):
            return HostNotAllowed(
                "This gateway does not answer to the name in the request's Host header (a guard against DNS "
                "rebinding). Reach it by its address or localhost, or add the name to server.allowed_hosts."
            )
        path: str = scope["path"]
        admin = path in _ADMIN_PATHS or path.startswith(_UNDER_ADMIN)
        if admin and not has_master_key and not settings.insecure_admin and not policy.loopback:
            return AdminDisabled(
                f"The admin API is off: this gateway listens on {settings.host or 'every address'}, beyond "
                "loopback, without admin.master_key. Set a master key, or start it with --insecure-admin "
                "(server.insecure_admin) to serve the admin API to anyone who can reach it."
            )
        if scope["method"] in _SAFE_METHODS:
            return None
        cross_site = _cross_site(headers, host, policy)
        if not admin and not cross_site:
            return None
        content_type = headers.get(b"content-type")
        media_type = content_type.split(b";", 1)[0].strip().lower() if content_type is not None else None
        if not admin:
            # What a page on another site can send without the browser asking first (a "simple" request): not
            # JSON. It could not read the answer, but the request would be served, and paid.
            if cross_site and media_type != b"application/json":
                return OriginNotAllowed("A request from another site's page must be sent as application/json.")
            return None
        if cross_site:
            return OriginNotAllowed("A change through the admin API must not come from another site's page.")
        if media_type is not None and media_type != b"application/json":
            return UnsupportedMediaType("The admin API takes a body as application/json only.")
        if media_type is None and (b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0"):
            return UnsupportedMediaType("The admin API takes a body as application/json only; send Content-Type.")
        return None
