"""A valid instance of a JSON Schema, built without a model: what the scripted
provider answers an ``output_schema`` with when asked to (``schema_answers``).

It covers what pydantic and hand-written schemas use: ``$ref`` into ``$defs``
(or ``definitions``), ``const``, ``enum``, ``default``, ``anyOf``/``oneOf``
(the first branch that yields a valid value), ``allOf`` (merged), objects with
their required properties, arrays with ``minItems``/``prefixItems``, strings
with ``minLength``/``maxLength`` and common ``format`` values, and bounded
numbers. The values are fixed and small, so an answer is deterministic and its
token count stable. A schema it cannot satisfy raises ``ValueError``: the caller
validates the instance anyway, so nothing invalid slips through silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["schema_instance"]

_FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}
_MAX_DEPTH = 32  # a recursive schema ends at an optional field or fails here


def schema_instance(schema: Mapping[str, Any]) -> Any:
    """A value matching ``schema`` (a JSON Schema dict)."""
    return _Builder(schema).build(schema, 0)


class _Builder:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, ref: str) -> Mapping[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"cannot follow $ref {ref!r}: only local references are supported")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node  # type: ignore[no-any-return]

    def build(self, schema: Any, depth: int) -> Any:
        if schema is True or schema == {}:
            return None
        if not isinstance(schema, Mapping):
            raise ValueError(f"cannot build a value for schema {schema!r}")
        if depth > _MAX_DEPTH:
            raise ValueError("schema nests too deeply (a required recursive field?)")
        if "$ref" in schema:
            return self.build(self.resolve(schema["$ref"]), depth + 1)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return schema["enum"][0]
        if "default" in schema:
            return schema["default"]
        if "allOf" in schema:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in schema["allOf"]:
                part = self.resolve(part["$ref"]) if "$ref" in part else part
                for key, value in part.items():
                    if key in ("properties", "required") and key in merged:
                        merged[key] = (
                            {**merged[key], **value}
                            if key == "properties"
                            else [*merged[key], *value]
                        )
                    else:
                        merged.setdefault(key, value)
            return self.build(merged, depth + 1)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                branches = schema[key]
                # null last: a real value says more about the schema than None.
                ordered = sorted(
                    branches, key=lambda b: isinstance(b, Mapping) and b.get("type") == "null"
                )
                for branch in ordered:
                    try:
                        return self.build(branch, depth + 1)
                    except ValueError:
                        continue
                raise ValueError(f"no branch of {key} yields a value")
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "string"
        return getattr(self, f"_{kind}")(schema, depth)

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        value = {name: self.build(properties.get(name, {}), depth + 1) for name in required}
        for name in list(properties)[: max(0, schema.get("minProperties", 0) - len(value))]:
            value.setdefault(name, self.build(properties[name], depth + 1))
        return value

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        prefix = [self.build(item, depth + 1) for item in schema.get("prefixItems", [])]
        items = schema.get("items")
        more = max(0, schema.get("minItems", 0) - len(prefix))
        if more and not isinstance(items, Mapping):
            raise ValueError("an array needs more items than its schema describes")
        if more and schema.get("uniqueItems"):
            raise ValueError("cannot build distinct items for uniqueItems")
        return prefix + [self.build(items, depth + 1) for _ in range(more)]

    def _string(self, schema: Mapping[str, Any], depth: int) -> str:
        if "pattern" in schema:
            raise ValueError(f"cannot build a string matching pattern {schema['pattern']!r}")
        text = _FORMATS.get(schema.get("format", ""), "a")
        low, high = schema.get("minLength", 0), schema.get("maxLength")
        if len(text) < low:
            text = text + "a" * (low - len(text))
        if high is not None and len(text) > high:
            text = "a" * high
        return text

    def _integer(self, schema: Mapping[str, Any], depth: int) -> int:
        low = schema.get("minimum")
        if "exclusiveMinimum" in schema:
            low = math.floor(schema["exclusiveMinimum"]) + 1
        elif low is not None:
            low = math.ceil(low)
        high = schema.get("maximum")
        if "exclusiveMaximum" in schema:
            high = math.ceil(schema["exclusiveMaximum"]) - 1
        value = low if low is not None else (min(0, high) if high is not None else 0)
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0 and value % step:
            value += step - value % step
        if high is not None and value > high:
            raise ValueError(f"no integer fits the bounds of {dict(schema)!r}")
        return int(value)

    def _number(self, schema: Mapping[str, Any], depth: int) -> float:
        if "multipleOf" in schema:
            return float(self._integer(schema, depth))
        low, high = schema.get("minimum"), schema.get("maximum")
        low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")

        def fits(x: float) -> bool:
            return (
                (low is None or x >= low)
                and (high is None or x <= high)
                and (low_x is None or x > low_x)
                and (high_x is None or x < high_x)
            )

        floor = max((b for b in (low, low_x) if b is not None), default=None)
        ceiling = min((b for b in (high, high_x) if b is not None), default=None)
        candidates = [0.0]
        if floor is not None:
            candidates += [float(floor), float(floor) + 1.0]
            if ceiling is not None:
                candidates.append((float(floor) + float(ceiling)) / 2)
        if ceiling is not None:
            candidates += [float(ceiling), float(ceiling) - 1.0]
        for value in candidates:
            if fits(value):
                return value
        raise ValueError(f"no number fits the bounds of {dict(schema)!r}")

    def _boolean(self, schema: Mapping[str, Any], depth: int) -> bool:
        return False

    def _null(self, schema: Mapping[str, Any], depth: int) -> None:
        return None
