"""Runtime control on real sockets: drain, cut and heal targets through the admin API and the CLI, and reload
the config (admin API and SIGHUP) while requests are in flight — with the fault wall upstream and the
official `openai` SDK and httpx as clients."""

from __future__ import annotations

import functools
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import typer
import yaml
from typer.testing import CliRunner

import lifeline.testing.gateway
from lifeline.cli.admin import register
from lifeline.config import load_config
from lifeline.server.app import create_app
from lifeline.server.gateway import Gateway
from lifeline.testing import FaultWall, wall_text
from lifeline.testing.gateway import RunningGateway, run_gateway
from tests.conftest import FAST_RETRY, GatewayFactory, make_config, wall_target
from tests.integration.processes import free_port, replica

MASTER = "mk-test-control-0123456789"
AUTH = {"authorization": f"Bearer {MASTER}"}
MESSAGES = [{"role": "user", "content": "hello there"}]
SLOW = "ok?tps=20&tokens=30"  # a 1.5 s stream


def ask(gw: RunningGateway, model: str = "chat", **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 4, **extra}
    return httpx.post(f"{gw.base_url}/chat/completions", json=body, timeout=30)


def control(gw: RunningGateway, target: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{gw.url}/admin/targets/{target}", json=body, headers=AUTH, timeout=10)


def row(gw: RunningGateway, target: str) -> dict[str, Any]:
    rows = httpx.get(f"{gw.url}/admin/targets", headers=AUTH, timeout=10).json()["targets"]
    found: dict[str, Any] = next(r for r in rows if r["target"] == target)
    return found


def sdk(gw: RunningGateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=30)


def two_targets(wall: FaultWall, primary: str = "ok?t=primary", **primary_extra: Any) -> Any:
    return make_config(
        {"primary": wall_target(wall, primary, **primary_extra), "backup": wall_target(wall, "ok?t=backup")},
        admin={"master_key": MASTER},
    )


@contextmanager
def open_stream(gw: RunningGateway, model: str = "chat") -> Iterator[tuple[httpx.Response, Iterator[str]]]:
    """A streamed request, held open: the response, and its event payloads as they come."""
    body = {"model": model, "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{gw.base_url}/chat/completions", json=body, timeout=30) as response:
        payloads = (line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: "))
        yield response, payloads


def text_of(payloads: list[str]) -> str:
    """The answer's text from a stream's payloads; asserts it ended with [DONE] after a finish reason."""
    assert payloads[-1] == "[DONE]", payloads[-3:]
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert any(c["choices"] and c["choices"][0].get("finish_reason") == "stop" for c in chunks)
    return "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])


# --- drain ------------------------------------------------------------------------------------------


def test_drain_sends_new_requests_on_while_a_stream_on_the_target_finishes(
    wall: FaultWall, gateway: GatewayFactory
) -> None:
    with gateway(two_targets(wall, SLOW)) as gw:
        with open_stream(gw) as (response, payloads):
            assert response.headers["x-lifeline-target"] == "primary"
            seen = [next(payloads)]
            drained = control(gw, "primary", state="drained")
            during = ask(gw)
            seen += list(payloads)
        assert drained.status_code == 200, drained.text
        assert drained.json()["override"] == "drained"
        assert (drained.json()["target"], drained.json()["kind"]) == ("primary", "openai")
        assert during.status_code == 200
        assert during.headers["x-lifeline-target"] == "backup"
        assert during.headers["x-lifeline-attempts"] == "1"  # the drained target was skipped, not tried
        assert text_of(seen) == wall_text(30)  # the stream already on it finished, whole
        assert len(wall.attempts_for(SLOW)) == 1
        assert row(gw, "primary")["override"] == "drained"
        assert httpx.get(f"{gw.url}/readyz").status_code == 200  # the alias still has a target

        healed = control(gw, "primary", state="healthy")
        assert healed.json()["override"] is None
        back = ask(gw, max_tokens=2)
    assert back.headers["x-lifeline-target"] == "primary"


# --- cut --------------------------------------------------------------------------------------------


def test_cut_forbidden_is_a_cut_off_the_upstream_never_sees(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(two_targets(wall)) as gw:
        cut = control(gw, "primary", state="cut")
        answered = ask(gw)
        after = row(gw, "primary")
        again = ask(gw)
        failovers = httpx.get(f"{gw.url}/admin/failovers", headers=AUTH).json()["data"]
        healed = control(gw, "primary", state="healthy")
        back = ask(gw)
    assert cut.json()["override"] == "cut:forbidden"
    assert answered.status_code == 200
    assert (answered.headers["x-lifeline-target"], answered.headers["x-lifeline-attempts"]) == ("backup", "2")
    # a real cut-off: no retry, the circuit opens for the long cooldown, later requests skip the target
    assert after["state"] == "open" and after["last_error"] == "cut_off 403"
    assert after["open_for_seconds"] > 500
    assert again.headers["x-lifeline-attempts"] == "1"
    assert [(f["from"], f["outcome"], f["status"], f["alias"]) for f in failovers] == [
        ("primary", "cut_off", 403, "chat")
    ]
    assert healed.json()["state"] == "closed" and healed.json()["override"] is None
    assert back.headers["x-lifeline-target"] == "primary"
    assert len(wall.attempts_for("ok?t=primary")) == 1  # only after the heal


def test_cut_timeout_waits_for_the_targets_own_timeout(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = two_targets(wall, timeouts={"first_byte": 0.3, "response": 0.4})
    with gateway(config) as gw:
        control(gw, "primary", state="cut", fault="timeout")
        whole = ask(gw)
        streamed = sdk(gw).chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, stream=True)
        text = "".join((c.choices[0].delta.content or "") for c in streamed.parse() if c.choices)
        after = row(gw, "primary")
    # which timeout each phase waits is tests/providers/test_faults.py's; here: silent, and not retried
    assert whole.headers["x-lifeline-target"] == "backup"
    assert whole.headers["x-lifeline-attempts"] == "2"  # a silent target is not retried
    assert streamed.headers["x-lifeline-target"] == "backup"
    assert streamed.headers["x-lifeline-attempts"] == "2"
    assert text == wall_text(12)
    assert after["last_error"] == "silent" and after["consecutive_failures"] == 2
    assert wall.attempts_for("ok?t=primary") == []


def test_cut_stream_cut_breaks_a_stream_after_n_chunks(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = two_targets(wall)
    # the break itself is what is shown here: nothing continues or restarts the answer
    alias = config.aliases["chat"].model_copy(update={"max_continuations": 0})
    with gateway(config.model_copy(update={"aliases": {"chat": alias}})) as gw:
        control(gw, "primary", state="cut", fault="stream_cut", after=2)
        pieces: list[str] = []
        with pytest.raises(openai.APIError, match=r"stream cut \(injected\)"):
            for c in sdk(gw).chat.completions.create(model="chat", messages=MESSAGES, stream=True):
                if c.choices and c.choices[0].delta.content:
                    pieces.append(c.choices[0].delta.content)
        whole = ask(gw)
    assert "".join(pieces) == wall_text(2)
    assert len(wall.attempts_for("ok?t=primary")) == 1  # the real answer was flowing when it was cut
    # a whole answer meets the cut before it starts: retried like any dropped connection, then the next target
    assert (whole.headers["x-lifeline-target"], whole.headers["x-lifeline-attempts"]) == ("backup", "4")


def test_cut_unavailable_is_retried_then_fails_over(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(two_targets(wall)) as gw:
        cut = control(gw, "primary", state="cut", fault="unavailable")
        answered = ask(gw)
        after = row(gw, "primary")
    assert cut.json()["override"] == "cut:unavailable"
    assert answered.headers["x-lifeline-target"] == "backup"
    assert answered.headers["x-lifeline-attempts"] == str(FAST_RETRY["max_retries"] + 2)
    assert after["last_error"] == "unavailable 503" and after["consecutive_failures"] == 3
    assert wall.attempts_for("ok?t=primary") == []


def test_the_control_endpoint_checks_what_it_is_told(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(two_targets(wall)) as gw:
        unknown = control(gw, "nope", state="drained")
        bad_state = control(gw, "primary", state="asleep")
        no_state = control(gw, "primary")
        bad_fault = control(gw, "primary", state="cut", fault="meteor")
        stray_after = control(gw, "primary", state="cut", fault="forbidden", after=2)
        negative = control(gw, "primary", state="cut", fault="stream_cut", after=-1)
        fault_on_drain = control(gw, "primary", state="drained", fault="timeout")
        stray = control(gw, "primary", state="drained", colour="red")
        no_key = httpx.post(f"{gw.url}/admin/targets/primary", json={"state": "drained"})
        no_key_failovers = httpx.get(f"{gw.url}/admin/failovers")
        untouched = row(gw, "primary")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "target_not_found"
    assert "primary" in unknown.json()["error"]["message"]  # names the targets there are
    for response, param in (
        (bad_state, "state"),
        (no_state, "state"),
        (bad_fault, "fault"),
        (stray_after, "after"),
        (negative, "after"),
        (fault_on_drain, "fault"),
        (stray, "colour"),
    ):
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    assert no_key.status_code == 401 and no_key_failovers.status_code == 401
    assert untouched["override"] is None


# --- reload -----------------------------------------------------------------------------------------


def file_config(wall: FaultWall, tmp_path: Path, aliases: dict[str, list[str]], **targets: str) -> dict[str, Any]:
    return {
        "targets": {name: wall_target(wall, model) for name, model in targets.items()},
        "aliases": {name: {"targets": chain} for name, chain in aliases.items()},
        "retry": FAST_RETRY,
        "admin": {"master_key": MASTER},
        "accounting": {"data_dir": str(tmp_path), "ledger": {"commit_interval": 0.05}},
    }


def write(path: Path, data: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(data))


@contextmanager
def serving(path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningGateway]:
    """run_gateway, serving a config file as `lifeline serve --config FILE` does (reloadable)."""
    monkeypatch.setattr(lifeline.testing.gateway, "create_app", functools.partial(create_app, config_path=path))
    with run_gateway(load_config(path)) as gw:
        yield gw


def reload(gw: RunningGateway) -> httpx.Response:
    return httpx.post(f"{gw.url}/admin/reload", headers=AUTH, timeout=30)


def wait_closed(gateway: Gateway, polls: int = 1500) -> None:
    """Wait until the replaced gateway has closed; a guard against hanging, not a measure of speed."""
    for _ in range(polls):
        if not gateway.started:
            return
        time.sleep(0.02)
    raise AssertionError("the replaced gateway was never closed")


def ledger(gw: RunningGateway) -> list[tuple[str, str | None, int]]:
    current = gw.gateway.accounting
    assert current.ledger is not None
    current.ledger.flush(10)
    rows = current.db.query("SELECT request_id, target, status FROM ledger ORDER BY started_at")
    return [(str(r[0]), r[1], int(r[2])) for r in rows]


def test_reload_serves_new_requests_from_the_new_file_while_a_stream_on_the_old_one_finishes(
    wall: FaultWall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lifeline.yaml"
    slow, fast = f"{SLOW}&t=a", "ok?t=b"
    write(path, file_config(wall, tmp_path, {"chat": ["a"]}, a=slow, b=fast))
    with serving(path, monkeypatch) as gw:
        old = gw.gateway
        with open_stream(gw) as (response, payloads):
            seen = [next(payloads)]
            write(path, file_config(wall, tmp_path, {"chat": ["b"], "fresh": ["b", "a"]}, a=slow, b=fast))
            reloaded = reload(gw)
            moved = ask(gw)
            fresh = ask(gw, "fresh")
            assert old.started, "the old gateway closed under a running stream"
            seen += list(payloads)
        wait_closed(old)
        after = ask(gw)
        records = ledger(gw)
    assert reloaded.status_code == 200, reloaded.text
    body = reloaded.json()
    assert body["reloaded"] is True
    assert (body["aliases"], body["targets"]) == (["chat", "fresh"], ["a", "b"])
    assert "a" in body["circuits_carried_over"]  # unchanged target: its circuit carried over
    assert response.headers["x-lifeline-target"] == "a"
    assert text_of(seen) == wall_text(30)  # the stream on the old config finished intact
    assert moved.headers["x-lifeline-target"] == "b"
    assert fresh.status_code == 200
    assert after.headers["x-lifeline-target"] == "b"
    # every request has its record: the stream's went through the old gateway's ledger, flushed on close
    assert sorted(r[0] for r in records) == sorted(
        [response.headers["x-request-id"], *(r.headers["x-request-id"] for r in (moved, fresh, after))]
    )
    assert all(r[2] == 200 for r in records)


def test_an_invalid_file_is_refused_and_the_old_config_keeps_serving(
    wall: FaultWall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lifeline.yaml"
    good = file_config(wall, tmp_path, {"chat": ["a"]}, a="ok?t=a")
    write(path, good)
    with serving(path, monkeypatch) as gw:
        before = gw.gateway
        write(path, {**good, "aliases": {"chat": {"targets": ["nope"]}}})
        unknown_target = reload(gw)
        path.write_text("targets: [this is: not yaml")
        not_yaml = reload(gw)
        absent = tmp_path / "absent.gguf"
        write(path, {**good, "targets": {**good["targets"], "local": {"kind": "llamacpp", "model": str(absent)}}})
        unbuildable = reload(gw)
        path.unlink()
        missing = reload(gw)
        still = ask(gw)
        assert gw.gateway is before and before.started
    for response, words in (
        (unknown_target, "nope"),
        (not_yaml, "not valid YAML"),
        (unbuildable, "absent.gguf"),
        (missing, "cannot read"),
    ):
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_config"
        assert words in error["message"] and "previous config keeps serving" in error["message"]
        assert str(path) in error["message"]
    assert still.status_code == 200 and still.headers["x-lifeline-target"] == "a"


def test_a_refused_reload_quotes_no_secret_in_its_answer_or_the_log(
    wall: FaultWall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """#15.4: a YAML syntax error used to quote the offending line (an inline master key) in the body of the
    refused POST /admin/reload and in the reload log; pydantic's messages echoed values too."""
    caplog.set_level("INFO", logger="lifeline")
    inline = "sk-inline-reload-secret-5e4d3c2b1a"
    path = tmp_path / "lifeline.yaml"
    good = file_config(wall, tmp_path, {"chat": ["a"]}, a="ok?t=a")
    write(path, good)
    text = path.read_text()
    with serving(path, monkeypatch) as gw:
        refused = []
        for broken in (
            text.replace(f"master_key: {MASTER}", f"master_key: {inline}: x"),
            text.replace(f"master_key: {MASTER}", f'master_key: "{inline}'),
            text + f"tracing:\n  headers: {{authorization: {inline}\n",
        ):
            path.write_text(broken)
            refused.append(reload(gw))
        bad_kind = {"kind": inline, "api_key": inline, "base_url": "http://x/v1", "model": "m"}
        write(path, {**good, "admin": {"master_key": inline}, "targets": {**good["targets"], "b": bad_kind}})
        refused.append(reload(gw))
        still = ask(gw)
    for response in refused:
        assert response.status_code == 400, response.text
        assert "previous config keeps serving" in response.json()["error"]["message"]
        assert inline not in response.text and inline[:10] not in response.text
    assert caplog.text.count("config reload failed") == len(refused)
    assert inline not in caplog.text and inline[:10] not in caplog.text
    assert still.status_code == 200


def test_reload_without_a_config_file_is_a_409(wall: FaultWall, gateway: GatewayFactory) -> None:
    with gateway(two_targets(wall)) as gw:
        refused = reload(gw)
        no_key = httpx.post(f"{gw.url}/admin/reload")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "no_config_file"
    assert "--config" in refused.json()["error"]["message"]
    assert no_key.status_code == 401


def test_reloads_under_load_lose_no_request_and_no_record(
    wall: FaultWall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lifeline.yaml"
    config = file_config(wall, tmp_path, {"chat": ["a", "b"]}, a="ok?tps=50&tokens=5&t=a", b="ok?t=b")
    write(path, config)
    answers: list[httpx.Response] = []
    errors: list[BaseException] = []

    def client(gw: RunningGateway, streamed: bool) -> None:
        try:
            for _ in range(6):
                if streamed:
                    with open_stream(gw) as (response, payloads):
                        text_of(list(payloads))
                    answers.append(response)
                else:
                    answers.append(ask(gw))
        except BaseException as exc:
            errors.append(exc)

    with serving(path, monkeypatch) as gw:
        clients = [threading.Thread(target=client, args=(gw, i % 2 == 0)) for i in range(4)]
        for thread in clients:
            thread.start()
        for chain in (["b", "a"], ["a", "b"], ["b"]):
            time.sleep(0.1)
            write(path, {**config, "aliases": {"chat": {"targets": chain}}})
            assert reload(gw).status_code == 200
        for thread in clients:
            thread.join(30)
        for _ in range(1500):  # the replaced gateways close (and drain their ledgers) once idle: wait for it
            records = ledger(gw)
            if len(records) >= len(answers):
                break
            time.sleep(0.02)
    assert not errors, errors
    assert len(answers) == 24 and all(r.status_code == 200 for r in answers)
    assert sorted(r[0] for r in records) == sorted(r.headers["x-request-id"] for r in answers)


def test_sighup_reloads_a_real_lifeline_serve(wall: FaultWall, tmp_path: Path) -> None:
    config = file_config(wall, tmp_path, {"chat": ["a"]}, a="ok?t=a")
    with replica(config, tmp_path) as process:
        path = tmp_path / "lifeline.yaml"  # where replica() wrote it, with its port
        written = yaml.safe_load(path.read_text())

        def ask_model(model: str) -> int:
            body = {"model": model, "messages": MESSAGES, "max_tokens": 2}
            return httpx.post(f"{process.base_url}/chat/completions", json=body, timeout=10).status_code

        path.write_text("aliases: {chat: {targets: [nope]}}")
        process.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert process.process.poll() is None, "SIGHUP must not end the process"
        assert ask_model("chat") == 200  # the invalid file was refused; the old config serves

        path.write_text(yaml.safe_dump({**written, "aliases": {**written["aliases"], "fresh": {"targets": ["a"]}}}))
        assert ask_model("fresh") == 404
        process.process.send_signal(signal.SIGHUP)
        for _ in range(600):  # the reload runs in the background: wait for it, however slow the machine
            if ask_model("fresh") == 200:
                break
            time.sleep(0.05)
        assert ask_model("fresh") == 200, "the reload never took effect"
        assert ask_model("chat") == 200


# --- the CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.delenv("LIFELINE_URL", raising=False)
    monkeypatch.delenv("LIFELINE_MASTER_KEY", raising=False)
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """lifeline"""

    register(app)
    return app


def run(app: typer.Typer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["admin", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def test_the_cli_controls_a_running_gateway(
    cli: typer.Typer, wall: FaultWall, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gateway(two_targets(wall)) as gw:
        where = ["--url", gw.url, "--key", MASTER]
        code, listed = run(cli, "targets", *where)
        assert code == 0, listed
        assert listed.splitlines()[0].split()[:4] == ["TARGET", "KIND", "MODEL", "CIRCUIT"]
        assert any(line.split()[:4] == ["primary", "openai", "ok?t=primary", "closed"] for line in listed.splitlines())

        code, drained = run(cli, "drain", "primary", *where)
        assert code == 0 and "drained" in drained
        assert ask(gw).headers["x-lifeline-target"] == "backup"

        code, cut = run(cli, "cut", "primary", "--fault", "stream_cut", "--after", "1", *where, "--json")
        assert code == 0 and orjson.loads(cut)["override"] == "cut:stream_cut"
        code, cut = run(cli, "cut", "primary", *where)  # forbidden by default
        assert code == 0 and "cut:forbidden" in cut
        ask(gw)

        monkeypatch.setenv("LIFELINE_URL", gw.url)  # the environment serves as well as the options
        monkeypatch.setenv("LIFELINE_MASTER_KEY", MASTER)
        code, failovers = run(cli, "failovers")
        assert code == 0, failovers
        assert failovers.splitlines()[0].split()[:4] == ["TIME", "ALIAS", "FROM", "OUTCOME"]
        assert "cut_off" in failovers and "403" in failovers
        code, as_json = run(cli, "failovers", "--json")
        assert orjson.loads(as_json)["data"][0]["from"] == "primary"

        code, healed = run(cli, "heal", "primary")
        assert code == 0 and "closed" in healed
        assert orjson.loads(run(cli, "targets", "--json")[1])["targets"][0]["override"] is None
        assert ask(gw).headers["x-lifeline-target"] == "primary"

        code, refused = run(cli, "reload")
        assert code == 1 and "error: 409" in refused and "--config" in refused
        code, missing = run(cli, "drain", "nope")
        assert code == 1 and "error: 404" in missing and "no target 'nope'" in missing
        code, wrong_key = run(cli, "targets", "--key", "wrong")
        assert code == 1 and "refused the master key (401)" in wrong_key
    code, nobody = run(cli, "targets", "--url", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and "error: cannot connect to the gateway" in nobody


def test_the_cli_reloads_a_config_file(
    cli: typer.Typer, wall: FaultWall, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "lifeline.yaml"
    config = file_config(wall, tmp_path, {"chat": ["a"]}, a="ok?t=a")
    write(path, config)
    with serving(path, monkeypatch) as gw:
        write(path, {**config, "aliases": {"chat": {"targets": ["a"]}, "fresh": {"targets": ["a"]}}})
        code, out = run(cli, "reload", "--url", gw.url, "--key", MASTER)
        assert code == 0, out
        assert "reloaded: aliases chat, fresh; targets a" in out
        assert ask(gw, "fresh").status_code == 200
        write(path, {**config, "aliases": {}})
        code, refused = run(cli, "reload", "--url", gw.url, "--key", MASTER)
    assert code == 1 and "error: 400" in refused and "at least one alias" in refused


def test_a_drained_target_is_skipped_by_name_and_never_probed(wall: FaultWall, gateway: GatewayFactory) -> None:
    config = make_config({"only": wall_target(wall, "ok?t=drained-only")}, accounting={"data_dir": tempfile.mkdtemp()})
    with gateway(config) as gw:
        gw.gateway.health.drain("only")
        response = httpx.post(
            f"{gw.base_url}/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}
        )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "all_targets_drained"
    assert wall.attempts_for("ok?t=drained-only") == []
