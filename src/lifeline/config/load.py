"""Reading a config file: YAML, `${VAR}` / `${VAR:-default}` interpolation from the environment, validation.

Errors are raised as `ConfigError`, one problem per offending key (`targets.openai.base_url: ...`), and
`load_config` puts the file and line in front of each, so the CLI can print clear lines instead of a
traceback. No message quotes a value from the file or the environment (any value may be a secret): a
problem names the file, the line and the key.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from lifeline.config.catalogue import expand
from lifeline.config.environment import Environment, interpolate
from lifeline.config.extras import missing_otel
from lifeline.config.schema import Config
from lifeline.errors import ConfigError


def parse_config(data: Any, env: Mapping[str, str] | None = None, *, ignore_env: bool = False) -> Config:
    """Validate a parsed config. `ignore_env` checks the structure alone: no variable is read, and what
    depends on one is not judged."""
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping (targets:, aliases: …)")
    environment = Environment(os.environ if env is None else env, ignore=ignore_env)
    data = interpolate(data, environment)
    # Presets and open-model aliases become plain targets here.
    data = expand(data, environment)
    environment.check()
    config = _validate(data, environment.unresolved)
    if config.tracing.enabled:
        # here, not at the first request: `check` must not say ok to what `serve` cannot run
        missing = missing_otel()
        if missing:
            raise ConfigError(f"tracing.enabled: {missing}")
    return config


#: what stands in for a value left as `${VAR}` (check --no-env) that the schema refuses: the key's default
#: (the key removed), else a URL
_ABSENT = object()
_STAND_INS: tuple[Any, ...] = (_ABSENT, "http://unresolved.invalid")


def _validate(data: dict[str, Any], unresolved: Sequence[str]) -> Config:
    """Validate; a value still holding an unresolved `${VAR}` that the schema refuses is replaced by a
    stand-in, since the real value cannot be judged."""
    aside = [_parts(path) for path in unresolved]
    tried: dict[tuple[str, ...], int] = {}
    while True:
        try:
            return Config.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc, set_aside=unresolved)
            if problems:
                raise ConfigError(*problems) from None
            locs = [tuple(str(part) for part in err["loc"]) for err in exc.errors()]
            for path in {path for path in aside for loc in locs if _within(path, loc)}:
                attempt = tried.get(path, 0)
                if attempt == len(_STAND_INS):
                    raise ConfigError(f"{'.'.join(path)}: cannot be checked without its environment variable") from None
                tried[path] = attempt + 1
                data = _replace(data, path, _STAND_INS[attempt])


def _replace(data: Any, path: Sequence[str], value: Any) -> Any:
    """A copy of `data` with the value at `path` replaced (or removed, for _ABSENT)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        out = {}
        for key, item in data.items():
            if str(key) != head:
                out[key] = item
            elif rest or value is not _ABSENT:
                out[key] = _replace(item, rest, value)
        if not rest and value is not _ABSENT and head not in map(str, data):
            out[head] = value  # removed by an earlier stand-in
        return out
    if isinstance(data, list) and head.isdigit() and int(head) < len(data):
        index = int(head)
        if not rest and value is _ABSENT:
            return data
        return [*data[:index], _replace(data[index], rest, value), *data[index + 1 :]]
    return data


def load_config(path: str | Path, env: Mapping[str, str] | None = None, *, ignore_env: bool = False) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        line, what = describe_yaml_error(exc, text)
        raise ConfigError(f"{path}:{line}: {what}" if line else f"{path}: {what}") from None
    try:
        return parse_config(data, env, ignore_env=ignore_env)
    except ConfigError as exc:
        located = []
        for problem in exc.problems:
            line = line_of(text, problem.split(": ", 1)[0])
            located.append(f"{path}:{line}: {problem}" if line else f"{path}: {problem}")
        raise ConfigError(*located, missing=exc.missing_variables) from None


def describe_yaml_error(exc: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """The line and a description naming the column and key, never the text there (PyYAML's own message
    quotes the line, and the line may hold a secret)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        reason = getattr(exc, "reason", None)  # a ReaderError: a character YAML does not allow
        return None, f"not valid YAML{f': {reason}' if isinstance(reason, str) else ''}"
    mark = exc.problem_mark
    where = [f"column {mark.column + 1}"]
    key = _key_at(text, mark.index)
    if key:
        where.append(f"key {key}")
    problem = _unquoted(exc.problem or "syntax error")
    message = f"not valid YAML: {problem} ({', '.join(where)})"
    if exc.context and exc.context_mark is not None:
        message += f", {_unquoted(exc.context)} that starts at line {exc.context_mark.line + 1}"
    return mark.line + 1, message


def _unquoted(text: str) -> str:
    """PyYAML's messages quote the name of an undefined alias, an anchor or a tag, which are written where a
    value goes (`master_key: *secret` reads as an alias): keep single characters and token names only."""
    return re.sub(r"'(?!<)[^']{2,}'", "(not shown)", text)


def _key_at(text: str, index: int) -> str | None:
    """The dotted path of the key whose value holds the character at `index` (where PyYAML failed), from the
    parser's events up to there (keys only: the scalars that are values are never looked at)."""
    frames: list[list[Any]] = []  # [is_mapping, expecting_key, key or index]
    try:
        for event in yaml.parse(text):
            if event.start_mark is not None and event.start_mark.index >= index:
                break
            if isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
                if frames:
                    frames.pop()
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue
            if frames:
                top = frames[-1]
                if top[0] and top[1]:  # a key of the mapping
                    top[1], top[2] = False, event.value if isinstance(event, yaml.ScalarEvent) else "?"
                    if not isinstance(event, yaml.CollectionStartEvent):
                        continue
                elif top[0]:  # the value of the last key
                    top[1] = True
                else:
                    top[2] += 1
            if isinstance(event, yaml.MappingStartEvent):
                frames.append([True, True, None])
            elif isinstance(event, yaml.SequenceStartEvent):
                frames.append([False, False, -1])
    except yaml.YAMLError:
        pass
    parts = []
    for is_mapping, _, key in frames:
        if is_mapping and key is not None:
            parts.append(f".{key}")
        elif not is_mapping and key >= 0:
            parts.append(f"[{key}]")
    return "".join(parts).lstrip(".") or None


def line_of(text: str, dotted: str) -> int | None:
    """The line of the YAML key that a dotted path (`targets.x.preset`, `aliases.a.targets[0]`) names.
    Path parts that are not keys (a union's tag, like `openai` in `targets.x.openai.model`) are passed over."""
    try:
        node: yaml.Node | None = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line: int | None = None
    for part in dotted.replace("[", ".").replace("]", "").split("."):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    node, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
    return line


def describe_validation_error(exc: ValidationError) -> str:
    return "; ".join(validation_problems(exc))


def validation_problems(exc: ValidationError, set_aside: Iterable[str] = ()) -> list[str]:
    """One `path: what is wrong` line per error, quoting no value; errors about a path in `set_aside`
    (or below it) are left out."""
    aside = [_parts(path) for path in set_aside]
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(part) for part in err["loc"])
        if any(_within(path, loc) for path in aside):
            continue
        # Discriminated unions put the tag in the location ("targets.x.openai.model"); keep it, it helps.
        where = ".".join(loc)
        kind, ctx = err["type"], err.get("ctx") or {}
        if kind == "extra_forbidden":
            text = f"unknown key{_suggest(loc[-1], _keys_at(loc[:-1]))}"
        elif kind == "union_tag_not_found":
            field = str(ctx.get("discriminator", "kind")).strip("'")
            text = f"no `{field}`: say which it is: {_or(_tags_at(loc))}" + (
                " (or name a host with `preset:`)" if loc[:1] == ("targets",) else ""
            )
        elif kind == "union_tag_invalid":
            field = str(ctx.get("discriminator", "kind")).strip("'")
            where = f"{where}.{field}"
            tags = _tags_at(loc)
            close = difflib.get_close_matches(str(ctx.get("tag")), tags, n=1, cutoff=0.6)
            text = f"unknown {field}; did you mean {close[0]}?" if close else f"unknown {field}: {_or(tags)}"
        else:
            text = _without_input(err["msg"], err.get("input"))
        problems.append(f"{where or 'config'}: {text}")
    return problems


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p for p in dotted.replace("[", ".").replace("]", "").split(".") if p)


def _within(path: tuple[str, ...], loc: tuple[str, ...]) -> bool:
    """Whether `loc` (which may carry a union's tag the path has not) is `path` or below it."""
    rest = iter(loc)
    return bool(path) and loc[:1] == path[:1] and all(any(part == step for step in rest) for part in path)


def _without_input(message: str, value: Any) -> str:
    """A validator's message may echo the value it refused (a secret, perhaps): take it out."""
    if isinstance(value, str) and len(value.strip()) >= 4:
        for text in (repr(value), f'"{value}"', value):
            message = message.replace(text, "the value")
    return message


def _suggest(name: str, known: Sequence[str]) -> str:
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if matches:
        return f"; did you mean {', '.join(matches)}?"
    return f" (keys here: {', '.join(known)})" if known else ""


def _or(names: Sequence[str]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else "".join(names)


def _unwrap(annotation: Any) -> Any:
    """`Annotated[X, …]` → X; `X | None` → X."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if get_origin(annotation) in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _tagged(annotation: Any) -> dict[str, type[BaseModel]]:
    """The members of a union of models told apart by their `kind`, by tag."""
    out: dict[str, type[BaseModel]] = {}
    if get_origin(annotation) in (Union, types.UnionType):
        for member in get_args(annotation):
            field = (
                member.model_fields.get("kind") if isinstance(member, type) and issubclass(member, BaseModel) else None
            )
            for tag in get_args(_unwrap(field.annotation)) if field else ():
                out[str(tag)] = member
    return out


def _type_at(loc: Sequence[str]) -> Any:
    """The schema's type at a location of a validation error (None when the walk gets lost)."""
    annotation: Any = Config
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        elif get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        elif part in _tagged(annotation):
            annotation = _tagged(annotation)[part]
        else:
            return None
    return _unwrap(annotation)


def _keys_at(loc: Sequence[str]) -> list[str]:
    model = _type_at(loc)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _tags_at(loc: Sequence[str]) -> list[str]:
    return list(_tagged(_type_at(loc)))
