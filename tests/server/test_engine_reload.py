"""A worker's reload keeps its embedded targets on the engine process (the file never names the socket), as
long as the file leaves their settings unchanged."""

from __future__ import annotations

from typing import Any

from lifeline.config.schema import LlamaCppTarget
from lifeline.server.reload import keep_fixed_settings
from tests.conftest import make_config

LOCAL: dict[str, Any] = {"kind": "llamacpp", "model": "builtin:smollm2", "n_ctx": 512}


def attached(**local: Any) -> Any:
    config = make_config({"local": {**LOCAL, **local}, "other": {**LOCAL, "n_ctx": 256}})
    socket = {"engine_socket": "/tmp/e.sock", "served_name": "smollm2-135m-instruct"}
    targets = {name: t.model_copy(update=socket) for name, t in config.targets.items()}
    return config.model_copy(update={"targets": targets})


def socket_of(config: Any, name: str) -> str | None:
    target = config.targets[name]
    assert isinstance(target, LlamaCppTarget)
    return target.engine_socket


def test_an_unchanged_target_stays_on_the_engine_process_and_a_changed_one_loads_here() -> None:
    running = attached()
    from_file = make_config({"local": LOCAL, "other": {**LOCAL, "n_ctx": 1024}, "new": LOCAL})
    reloaded = keep_fixed_settings(from_file, running)
    assert socket_of(reloaded, "local") == "/tmp/e.sock"
    assert reloaded.targets["local"].served_name == "smollm2-135m-instruct"  # type: ignore[union-attr]
    assert socket_of(reloaded, "other") is None  # another context size than the engine process loaded
    assert socket_of(reloaded, "new") is None


def test_without_an_engine_process_a_reload_takes_the_file_as_it_is() -> None:
    running = make_config({"local": LOCAL})
    from_file = make_config({"local": LOCAL})
    assert keep_fixed_settings(from_file, running).targets == from_file.targets
