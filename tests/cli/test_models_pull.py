"""`lifeline models local` and `lifeline models pull NAME`: the recommended GGUFs for the embedded engine,
pulled through the engine's own hub fetch into the cache it reads. The fetch is injected (no network here):
a small cache that "downloads" a file once and serves it from then on, as the hub client's cache does."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest
import typer
import yaml

from lifeline.cli import catalogue as cli
from lifeline.config import parse_config
from lifeline.config.catalogue import find_local, local_models
from lifeline.errors import HubFileNotFound, HubUnreachable, ModelCacheUnwritable
from lifeline.providers.llamacpp import LlamaCppProvider, resolve_model
from tests.cli.support import command_app, invoke


class FakeHub:
    """A hub cache: the first fetch of a file writes it (a small GGUF), every later one finds it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.downloads: list[tuple[str, str]] = []
        self.fetches = 0

    def __call__(self, repo_id: str, filename: str) -> str:
        self.fetches += 1
        path = self.root / repo_id.replace("/", "--") / filename
        if not path.exists():
            self.downloads.append((repo_id, filename))
            path.parent.mkdir(parents=True)
            writer = gguf.GGUFWriter(str(path), "qwen3")
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
        return str(path)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    return command_app(cli.register, monkeypatch)


def use_fetch(monkeypatch: pytest.MonkeyPatch, fetch: object) -> None:
    monkeypatch.setattr(cli, "hub_fetch", lambda: fetch)


def test_local_lists_every_recommended_model_with_size_licence_and_sourced_figures(app: typer.Typer) -> None:
    result = invoke(app, "models", "local")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["model", "params", "licence", "size", "quality", "file"]
    rows = {line.split()[0]: line for line in lines[1 : len(local_models()) + 1]}
    assert list(rows) == [m.id for m in local_models()]
    assert "Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf" in rows["qwen3-0.6b"] and "639 MB*" in rows["qwen3-0.6b"]
    assert "gemma " in rows["gemma-3-270m-it"] and "IFEval 51.2" in rows["gemma-3-270m-it"]
    assert "shipped" in rows["smollm2-135m-instruct"]
    # every figure is printed with the page it was read from
    assert "  qwen3-0.6b: MMLU 52.81 (5-shot, on Qwen3-0.6B-Base" in result.output
    assert result.output.count("https://") == sum(len(m.quality) for m in local_models())

    listed = json.loads(invoke(app, "models", "local", "--json").output)
    assert [m["id"] for m in listed] == [m.id for m in local_models()]
    qwen = next(m for m in listed if m["id"] == "qwen3-0.6b")
    assert qwen["spec"] == "hf:Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf" and qwen["licence"] == "apache-2.0"
    assert qwen["file"]["verified"] is False and qwen["file"]["note"]
    assert qwen["quality"][0]["source"] == "https://arxiv.org/abs/2505.09388"
    shipped = next(m for m in listed if m["shipped"])
    assert shipped["spec"] == "builtin:smollm2" and shipped["size_mb"] > 50


def test_pull_goes_through_the_engines_fetch_into_the_cache_it_reads(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hub = FakeHub(tmp_path / "cache")
    use_fetch(monkeypatch, hub)
    result = invoke(app, "models", "pull", "qwen3-0.6b")
    assert result.exit_code == 0, result.output
    assert hub.downloads == [("Qwen/Qwen3-0.6B-GGUF", "Qwen3-0.6B-Q8_0.gguf")]
    where = hub.root / "Qwen--Qwen3-0.6B-GGUF" / "Qwen3-0.6B-Q8_0.gguf"
    assert f"pulled qwen3-0.6b (apache-2.0 licence) to {where}" in result.output
    # the snippet printed is a config that validates, and its target is the file just pulled
    snippet = result.output[result.output.index("targets:") :]
    data = yaml.safe_load(snippet) | {"aliases": {"chat": {"targets": ["local"]}}}
    target = parse_config(data, env={}).targets["local"]
    assert target.kind == "llamacpp" and target.model == "hf:Qwen/Qwen3-0.6B-GGUF/Qwen3-0.6B-Q8_0.gguf"
    assert target.n_ctx == 4096
    # the engine resolves that spec through the same fetch and finds the file without downloading again
    engine = LlamaCppProvider("local", target, fetch=hub)
    assert engine._path == where and engine.model == "qwen3-0.6b-q8_0"
    assert resolve_model(target.model, hub)[0] == where
    assert len(hub.downloads) == 1 and hub.fetches == 3


def test_pull_of_the_shipped_model_downloads_nothing(app: typer.Typer, monkeypatch: pytest.MonkeyPatch) -> None:
    use_fetch(monkeypatch, lambda repo, file: pytest.fail("the shipped model is never fetched"))
    result = invoke(app, "models", "pull", "smollm2-135m-instruct")
    assert result.exit_code == 0
    assert "ships with Lifeline: nothing to download" in result.output
    assert "model: builtin:smollm2" in result.output


def test_an_unknown_name_is_one_line_with_the_close_matches(app: typer.Typer) -> None:
    result = invoke(app, "models", "pull", "qwen3-06b")
    assert result.exit_code == 2
    said = "error: no recommended local model 'qwen3-06b'; did you mean qwen3-0.6b, qwen3-1.7b?"
    assert result.output.splitlines() == [said]
    far = invoke(app, "models", "pull", "llama")
    assert far.exit_code == 2 and "(known: smollm2-135m-instruct, qwen3-0.6b," in far.output


@pytest.mark.parametrize(
    ("failure", "says"),
    [
        (HubUnreachable("cannot reach the hub for X, and it is not in the local cache"), "cannot reach the hub"),
        (HubFileNotFound("the hub repository R has no file F"), "has no file"),
        (ModelCacheUnwritable("no space left on the disk of the model cache for X"), "no space left"),
        (RuntimeError("something unexpected"), "the download failed (RuntimeError: something unexpected)"),
    ],
)
def test_a_failed_download_is_one_line_and_exit_2(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch, failure: Exception, says: str
) -> None:
    def fetch(repo_id: str, filename: str) -> str:
        raise failure

    use_fetch(monkeypatch, fetch)
    result = invoke(app, "models", "pull", "gemma-3-270m-it")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert lines[0].startswith("downloading unsloth/gemma-3-270m-it-GGUF/gemma-3-270m-it-Q8_0.gguf (about 292 MB)")
    assert len(lines) == 2 and lines[1].startswith("error: gemma-3-270m-it: ") and says in lines[1]


def test_a_file_that_is_not_a_gguf_is_refused(
    app: typer.Typer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    page = tmp_path / "login.html"
    page.write_text("<html>sign in</html>")
    use_fetch(monkeypatch, lambda repo, file: str(page))
    result = invoke(app, "models", "pull", "smollm2-1.7b-instruct")
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == f"error: smollm2-1.7b-instruct: {page} is not a GGUF file"


def test_find_local_names_only_recommended_models() -> None:
    assert find_local("gemma-3-1b-it").local is not None
    with pytest.raises(ValueError, match="no recommended local model 'deepseek-r1'"):
        find_local("deepseek-r1")  # catalogued, but not a model for the embedded engine
