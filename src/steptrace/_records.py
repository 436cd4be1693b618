"""A frozen record base for the core's validated value types, without ``dataclasses``.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis`` and
``tokenize``) and builds every class through ``exec``: about 7 ms, plus half a
millisecond a class, on every ``import steptrace``. The core's few validated
value types (``Budget``, ``StepDefinition``, ``PersonaDefinition``) need only
what this base gives them, driven by their ``_fields``: immutability, equality,
hashing, a readable repr and pickling. Each class writes its own ``__init__``,
which validates and then stores the fields through ``_set``. Plain records with
no validation are ``typing.NamedTuple`` classes instead.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = ["FrozenRecord"]


class FrozenRecord:
    """Base of immutable slotted records; ``_fields`` lists the fields in order,
    which must also be the order of the subclass's ``__init__`` parameters."""

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, FrozenRecord)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({inner})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), self._values())
