"""Output schemas: turning ``output_schema`` into a JSON Schema and a validator.

``OutputSchema.of(schema)`` accepts a pydantic model class, a dataclass or
TypedDict (validated through pydantic's ``TypeAdapter``), or a JSON Schema dict
(validated with ``jsonschema``). ``validate(text)`` parses the model's text (a
Markdown code fence around the JSON is tolerated, as models add one) and
returns ``(data, [])`` or ``(None, errors)``, each error a short
``path: message`` string that the nudge shows the model. The text is hostile:
an answer nested deeper than ``MAX_JSON_DEPTH`` is an error like any other
(never a ``RecursionError``), and at most ``MAX_ERRORS`` errors of at most
``MAX_ERROR_CHARS`` characters each are kept. pydantic and jsonschema are
imported only when a schema of their kind is used.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._types import MAX_JSON_DEPTH, json_depth

__all__ = ["OutputSchema", "nudge"]

MAX_ERRORS = 20
MAX_ERROR_CHARS = 300
_TOO_DEEP = f"(root): nested too deeply (over {MAX_JSON_DEPTH} levels)"

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


def _strip_fence(text: str) -> str:
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _location(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "(root)"


class OutputSchema:
    """A JSON Schema to request and a validator to check the answer with."""

    def __init__(
        self, name: str, json_schema: Mapping[str, Any], check: Callable[[Any], Any]
    ) -> None:
        self.name = name
        self.json_schema = json_schema
        self._check = check

    @classmethod
    def of(cls, schema: Any) -> OutputSchema:
        if isinstance(schema, Mapping):
            return cls._from_json_schema(schema)
        if isinstance(schema, type):
            return cls._from_type(schema)
        raise TypeError(
            "output_schema must be a pydantic model class, a dataclass, a TypedDict "
            f"or a JSON Schema dict, got {schema!r}"
        )

    @classmethod
    def _from_json_schema(cls, schema: Mapping[str, Any]) -> OutputSchema:
        try:
            import jsonschema
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "a JSON Schema output_schema needs jsonschema: pip install 'steptrace[schema]'"
            ) from exc
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)  # a bad schema is the caller's error, now
        validator = validator_class(schema)

        def check(data: Any) -> Any:
            errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
            if errors:
                raise _Invalid([f"{_location(e.absolute_path)}: {e.message}" for e in errors])
            return data

        title = schema.get("title")
        return cls(title if isinstance(title, str) and title else "output", schema, check)

    @classmethod
    def _from_type(cls, schema: type) -> OutputSchema:
        if not (
            dataclasses.is_dataclass(schema)
            or hasattr(schema, "__required_keys__")  # any TypedDict, typing_extensions' too
            or hasattr(schema, "model_json_schema")
        ):
            raise TypeError(
                f"output_schema {schema.__name__} is not a pydantic model, dataclass or TypedDict"
            )
        try:
            import pydantic
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"output_schema {schema.__name__} needs pydantic: pip install 'steptrace[schema]'"
            ) from exc
        adapter: Any = pydantic.TypeAdapter(schema)

        def check(data: Any) -> Any:
            try:
                return adapter.validate_python(data)
            except pydantic.ValidationError as exc:
                raise _Invalid(
                    [f"{_location(e['loc'])}: {e['msg']}" for e in exc.errors()]
                ) from None

        return cls(schema.__name__, adapter.json_schema(), check)

    def validate(self, text: str) -> tuple[Any, list[str]]:
        """``(data, [])`` when ``text`` is valid JSON matching the schema, else
        ``(None, errors)``."""
        try:
            data = json.loads(_strip_fence(text))
        except RecursionError:
            return None, [_TOO_DEEP]
        except json.JSONDecodeError as exc:
            return None, [f"(root): not valid JSON ({exc.msg} at line {exc.lineno})"]
        except ValueError as exc:  # an integer too long to convert
            return None, [f"(root): not valid JSON ({str(exc)[:100]})"]
        if json_depth(data) > MAX_JSON_DEPTH:
            return None, [_TOO_DEEP]
        try:
            return self._check(data), []
        except _Invalid as invalid:
            errors = invalid.errors[:MAX_ERRORS]
            return None, [
                e if len(e) <= MAX_ERROR_CHARS else e[: MAX_ERROR_CHARS - 3] + "..." for e in errors
            ]
        except RecursionError:  # a validator's own recursion, inside the depth limit
            return None, [_TOO_DEEP]

    @property
    def request_format(self) -> dict[str, Any]:
        """What ``LlmRequest.response_schema`` carries for native structured output."""
        return {
            "name": re.sub(r"[^A-Za-z0-9_-]", "_", self.name)[:64],
            "schema": dict(self.json_schema),
        }


class _Invalid(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("; ".join(errors))


def nudge(errors: list[str], schema: OutputSchema) -> str:
    """The re-prompt after an invalid answer: the errors, and what to send instead."""
    listed = "\n".join(f"- {error}" for error in errors)
    return (
        "Your previous answer did not match the required output schema.\n"
        f"Errors:\n{listed}\n"
        "Answer again with only a JSON value matching this JSON Schema, and nothing else:\n"
        f"{json.dumps(schema.json_schema, sort_keys=True)}"
    )
