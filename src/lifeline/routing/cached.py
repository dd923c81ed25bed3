"""A whole answer played as a relayed stream's events, for a streaming client answered from the response cache
(accounting/cache.py): the chunks a live stream of the same answer would carry, then a normal `End`, so that
every wire encoder (server/sse.py) ends it as it ends a complete live answer."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import orjson

from lifeline.attempts import Outcome
from lifeline.protocol.assemble import chunks_of
from lifeline.routing.streaming import Content, End, StreamEvent


async def replay(body: dict[str, Any], usage: dict[str, Any], usage_estimated: bool) -> AsyncGenerator[StreamEvent]:
    """The events of the `chat.completion` `body`, ending complete with `usage`."""
    for data in chunks_of(body):
        finish = any(choice.get("finish_reason") for choice in data["choices"])
        yield Content(data, orjson.dumps(data), finish=finish)
    yield End(Outcome.OK, usage, usage_estimated)
