"""Read string metadata from a GGUF file's header, without loading the model: enough to tell at start-up,
in one line, that a `lora_path` names no LoRA adapter or an adapter for another architecture (llama.cpp
would only fail later, while the gateway starts)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from lifeline.errors import ModelResolutionError

MAGIC = b"GGUF"
#: byte sizes of the fixed-size GGUF value types (8 is a string, 9 an array)
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _u32(stream: BinaryIO) -> int:
    return int(struct.unpack("<I", _read(stream, 4))[0])


def _u64(stream: BinaryIO) -> int:
    return int(struct.unpack("<Q", _read(stream, 8))[0])


def _string(stream: BinaryIO) -> str:
    return _read(stream, _u64(stream)).decode("utf-8", "replace")


def _skip(stream: BinaryIO, kind: int) -> None:
    if kind == _STRING:
        stream.seek(_u64(stream), 1)
    elif kind == _ARRAY:
        item, count = _u32(stream), _u64(stream)
        if item in _SIZES:
            stream.seek(_SIZES[item] * count, 1)
        else:
            for _ in range(count):
                _skip(stream, item)
    elif kind in _SIZES:
        stream.seek(_SIZES[kind], 1)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")


def gguf_header(path: Path, wanted: set[str]) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """From the file's header: the string values of the `wanted` metadata keys it holds, and every tensor's
    shape (innermost dimension first, as GGUF stores it). Not a GGUF file, or a truncated one:
    ModelResolutionError."""
    found: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with path.open("rb") as stream:
            if _read(stream, 4) != MAGIC:
                raise ModelResolutionError(f"{path} is not a GGUF file")
            _u32(stream)  # version
            tensors, keys = _u64(stream), _u64(stream)
            for _ in range(keys):
                key, kind = _string(stream), _u32(stream)
                if key in wanted and kind == _STRING:
                    found[key] = _string(stream)
                else:
                    _skip(stream, kind)
            for _ in range(tensors):
                name = _string(stream)
                shapes[name] = tuple(_u64(stream) for _ in range(_u32(stream)))
                stream.seek(4 + 8, 1)  # type, offset
    except (EOFError, ValueError, struct.error):
        raise ModelResolutionError(f"{path} is not a readable GGUF file") from None
    except OSError as exc:
        raise ModelResolutionError(f"cannot read {path}: {exc.strerror}") from None
    return found, shapes


def lora_misfit(adapter: dict[str, tuple[int, ...]], model: dict[str, tuple[int, ...]]) -> str | None:
    """Why the adapter's tensors do not fit the model's (None when they do): llama.cpp checks the same
    when it loads an adapter, but may not survive a misfit, so it is never given one."""
    for name, a in adapter.items():
        if not name.endswith(".lora_a"):
            continue
        base = name.removesuffix(".lora_a")
        b, target = adapter.get(f"{base}.lora_b"), model.get(base)
        if b is None:
            return f"{name} has no {base}.lora_b"
        if target is None:
            return f"the model has no tensor {base}"
        if len(a) != 2 or len(b) != 2 or len(target) != 2:
            return f"{base}: only 2-dimensional tensors can be adapted"
        if base == "token_embd.weight":
            fits = target[0] == b[1] and target[1] == a[1]
        else:
            fits = target[0] == a[0] and target[1] == b[1] and a[1] == b[0]
        if not fits:
            return f"{base} is {list(target)}, the adapter's A and B are {list(a)} and {list(b)}"
    if not any(name.endswith(".lora_a") for name in adapter):
        return "it adapts no tensor"
    return None
