"""JSON Schema -> the schema dialect of Gemini (an OpenAPI 3.0 subset), or a clear refusal.

Gemini's ``Schema`` has ``type`` (one type, plus ``nullable``), ``format`` (``enum`` and
``date-time`` for strings, ``int32``/``int64``, ``float``/``double``), ``enum`` (strings
only), ``properties``, ``required``, ``items``, ``anyOf``, the length, size and range
bounds, ``pattern``, ``title``, ``description`` and ``default``. What it lacks is refused
with :class:`Unsupported` naming the keyword and where it is, so that the dispatcher can
fall back to a model that takes the schema as it is, and the client learns why otherwise.

Translated rather than refused: a ``["T", "null"]`` type (``nullable``), ``const`` of a
string (a one-value ``enum``), a ``null`` among enum values (``nullable``), local
``$ref``\\ s to ``$defs``/``definitions`` (inlined; a recursive one is refused), and
``additionalProperties: false`` (dropped: Gemini's output holds only the declared
properties, so the constraint holds; ``true`` or a schema is refused). Annotations that
constrain nothing (``$schema``, ``$id``, ``$comment``, ``examples``) are dropped.
"""

from __future__ import annotations

from typing import Any

from .base import Unsupported

_TYPES = {
    "string": "STRING",
    "number": "NUMBER",
    "integer": "INTEGER",
    "boolean": "BOOLEAN",
    "array": "ARRAY",
    "object": "OBJECT",
    "null": "NULL",
}
_FORMATS = {
    "STRING": {"enum", "date-time"},
    "INTEGER": {"int32", "int64"},
    "NUMBER": {"float", "double"},
}
_COPIED = (
    "title",
    "description",
    "default",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minProperties",
    "maxProperties",
    "pattern",
)
_DROPPED = frozenset({"$schema", "$id", "$comment", "examples", "$defs", "definitions"})


def gemini_schema(schema: dict[str, Any], param: str) -> dict[str, Any]:
    """Translate a JSON Schema; ``param`` is where it sits in the request (for errors)."""
    return _Translator(schema).node(schema, param, ())


class _Translator:
    def __init__(self, root: dict[str, Any]) -> None:
        self.defs: dict[str, Any] = {}
        for key in ("$defs", "definitions"):
            for name, sub in (root.get(key) or {}).items():
                self.defs[f"#/{key}/{name}"] = sub

    def node(self, schema: Any, param: str, refs: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(schema, dict):
            raise Unsupported("Gemini's schema needs an object here", param)
        if "$ref" in schema:
            return self._ref(schema, param, refs)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            where = f"{param}.{key}"
            if key in _DROPPED:
                continue
            if key in _COPIED:
                out[key] = value
            elif key == "type":
                self._type(value, where, out)
            elif key == "nullable":
                out["nullable"] = bool(value)
            elif key == "enum":
                self._enum(value, where, out)
            elif key == "const":
                if not isinstance(value, str):
                    raise Unsupported("Gemini's schema has 'const' only for strings", where)
                out["enum"] = [value]
            elif key == "properties":
                out["properties"] = {
                    name: self.node(sub, f"{where}.{name}", refs) for name, sub in value.items()
                }
                out["propertyOrdering"] = list(value)
            elif key == "required":
                out["required"] = list(value)
            elif key == "items":
                out["items"] = self.node(value, where, refs)
            elif key == "anyOf":
                out["anyOf"] = [self.node(s, f"{where}[{i}]", refs) for i, s in enumerate(value)]
            elif key == "additionalProperties":
                if value is not False:
                    raise Unsupported(
                        "Gemini's schema has no 'additionalProperties' (only false can be "
                        "honoured: its output holds the declared properties only)",
                        where,
                    )
            elif key != "format":
                raise Unsupported(f"Gemini's schema has no {key!r}", where)
        if "enum" in out:
            out.setdefault("type", "STRING")
            if out["type"] != "STRING":
                raise Unsupported("Gemini's schema has 'enum' only for strings", f"{param}.enum")
            out["format"] = "enum"
        if "format" in schema and "enum" not in out:
            self._format(schema["format"], f"{param}.format", out)
        if "type" not in out and "properties" in out:
            out["type"] = "OBJECT"
        return out

    def _ref(self, schema: dict[str, Any], param: str, refs: tuple[str, ...]) -> dict[str, Any]:
        ref = schema["$ref"]
        where = f"{param}.$ref"
        if ref in refs:
            raise Unsupported(f"Gemini's schema cannot express the recursive $ref {ref!r}", where)
        if ref not in self.defs:
            raise Unsupported(f"$ref {ref!r} is not a local $defs or definitions entry", where)
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        target = self.node(self.defs[ref], where, (*refs, ref))
        return {**target, **self.node(siblings, param, refs)} if siblings else target

    def _type(self, value: Any, where: str, out: dict[str, Any]) -> None:
        types = value if isinstance(value, list) else [value]
        if not all(isinstance(t, str) and t.lower() in _TYPES for t in types):
            raise Unsupported(f"unknown type {value!r}", where)
        named = [t.lower() for t in types if t.lower() != "null"]
        if len(named) > 1:
            raise Unsupported("Gemini's schema has one type per schema (use anyOf)", where)
        if len(named) < len(types):
            out["nullable"] = True
        out["type"] = _TYPES[named[0] if named else "null"]

    def _enum(self, value: Any, where: str, out: dict[str, Any]) -> None:
        if not isinstance(value, list):
            raise Unsupported("'enum' must be a list", where)
        if None in value:
            out["nullable"] = True
        values = [v for v in value if v is not None]
        if not all(isinstance(v, str) for v in values):
            raise Unsupported("Gemini's schema has 'enum' only for strings", where)
        out["enum"] = values

    def _format(self, value: Any, where: str, out: dict[str, Any]) -> None:
        if value not in _FORMATS.get(out.get("type", ""), set()):
            raise Unsupported(f"Gemini's schema has no format {value!r} for this type", where)
        out["format"] = value
