"""What the conversion of a LiteLLM config (config/litellm.py) has to say: a note per setting left behind or
carried with a difference, and the `${VAR}` references that replace LiteLLM's `os.environ/` and the secrets
written in its file (the note names the variable, never the value)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

_ENV_PREFIX = "os.environ/"


class NoteKind(Enum):
    #: the setting is not in the new config
    DROPPED = "not carried over"
    #: carried, but it does not behave quite as in LiteLLM
    DIFFERS = "carried with a difference"
    #: a value written in the LiteLLM file became a ${VAR} reference: the variable must be set
    VARIABLE = "set a variable"


@dataclass(frozen=True)
class Note:
    kind: NoteKind
    #: the LiteLLM key path (model_list[2].litellm_params.rpm)
    path: str
    why: str

    def line(self) -> str:
        return f"{self.kind.value}: {self.path}: {self.why}"


@dataclass
class Converter:
    """The notes of one conversion, and the variables it has named."""

    notes: list[Note] = field(default_factory=list)
    #: literal secret → the variable that now holds it (one variable per distinct value)
    _literal_vars: dict[str, str] = field(default_factory=dict)
    #: what a literal-holding variable was first named after, so that two values never share a name
    _var_values: dict[str, str] = field(default_factory=dict)

    def drop(self, path: str, why: str) -> None:
        self.notes.append(Note(NoteKind.DROPPED, path, why))

    def differs(self, path: str, why: str) -> None:
        self.notes.append(Note(NoteKind.DIFFERS, path, why))

    def value(self, raw: Any) -> Any:
        """A carried value: `os.environ/NAME` becomes `${NAME}`."""
        if isinstance(raw, str) and raw.startswith(_ENV_PREFIX):
            return "${" + raw[len(_ENV_PREFIX) :] + "}"
        return raw

    def secret(self, raw: Any, path: str, variable: str) -> str | None:
        """A secret as a `${VAR}` reference: LiteLLM's own reference, or for a value written in the file a
        variable named after `variable` (the note names it, never the value)."""
        if raw is None:
            return None
        if isinstance(raw, str) and raw.startswith(_ENV_PREFIX):
            return "${" + raw[len(_ENV_PREFIX) :] + "}"
        text = str(raw)
        name = self._literal_vars.get(text)
        if name is None:
            name, n = variable, 1
            while name in self._var_values:
                n += 1
                name = f"{variable}_{n}"
            self._literal_vars[text] = name
            self._var_values[name] = path
        self.notes.append(
            Note(
                NoteKind.VARIABLE,
                path,
                f"the value written there is not copied; set {name} to it (the new config reads ${{{name}}})",
            )
        )
        return "${" + name + "}"
