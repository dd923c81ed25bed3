"""Console sessions: a random id in an HttpOnly, SameSite=Strict cookie, the session itself kept here.

The master key is never stored: a session remembers an HMAC of it under a per-process secret, so a session
opened with a key that a reload has since replaced is no longer valid. Each session has its own CSRF token,
which every state-changing form and call must carry.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "lifeline_console"
#: how long a session lasts without being used
IDLE_SECONDS = 8 * 3600
MAX_SESSIONS = 1000


@dataclass
class Session:
    id: str
    csrf: str
    key_mark: bytes
    last_seen: float
    #: one message for the next page (a redirect after a form): (kind, text)
    flash: list[tuple[str, str]] = field(default_factory=list)
    #: a new key's secret, shown once on the next page and then forgotten
    secret: str | None = None


class Sessions:
    def __init__(self) -> None:
        self._pepper = secrets.token_bytes(32)
        self._sessions: dict[str, Session] = {}

    def mark(self, master_key: str) -> bytes:
        return hmac.new(self._pepper, master_key.encode(), hashlib.sha256).digest()

    def key_matches(self, given: str, master_key: str) -> bool:
        return bool(given) and hmac.compare_digest(self.mark(given), self.mark(master_key))

    def open(self, master_key: str) -> Session:
        now = time.monotonic()
        self._expire(now)
        if len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.mark(master_key), now)
        self._sessions[session.id] = session
        return session

    def find(self, session_id: str | None, master_key: str) -> Session | None:
        if not session_id:
            return None
        now = time.monotonic()
        session = self._sessions.get(session_id)
        if session is None or now - session.last_seen > IDLE_SECONDS:
            self._sessions.pop(session_id, None)
            return None
        if not hmac.compare_digest(session.key_mark, self.mark(master_key)):
            # the master key changed (a reload): every session opened with the old one ends
            del self._sessions[session_id]
            return None
        session.last_seen = now
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values() if now - s.last_seen > IDLE_SECONDS]:
            del self._sessions[sid]
