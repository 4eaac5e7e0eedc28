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

Inlining ``$ref``\\ s expands the schema: ``$defs`` whose entries each refer to the next
one twice double at every level (1.7 KB of request became 6.4 MB and seconds of CPU at 16
levels). So the translation of one request has a :class:`SchemaBudget`, shared by all its
schemas (every tool's and the response format's): at most :data:`MAX_SCHEMA_NODES` schemas
written, :data:`MAX_SCHEMA_CHARS` characters of names and values, and
:data:`MAX_SCHEMA_DEPTH` levels of nesting. Past one, the translation stops at once and
refuses with :class:`Unsupported` naming the schema's parameter: another model of the chain
takes the schema as it is, else the client gets a 400. Where an error is in the schema is
kept as a chain of steps and written out only for the error (a path written for every
node would copy long property names once per node below them).
"""

from __future__ import annotations

import math
from typing import Any

import orjson

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

# The bounds of one request's schema translation (see the module's docstring). OpenAI's
# own structured outputs stop at 5,000 properties and 10 levels: real schemas are far
# below these, a $ref bomb passes them within a few milliseconds of work.
MAX_SCHEMA_NODES = 10_000
MAX_SCHEMA_CHARS = 1_000_000
MAX_SCHEMA_DEPTH = 64
# A name or a path in an error message is cut to this many characters.
_SHOWN = 120

# Where a schema is in the request: the parameter, then (parent, step) pairs.
Where = str | tuple["Where", str]


def _path(where: Where) -> str:
    steps: list[str] = []
    while isinstance(where, tuple):
        where, step = where
        steps.append(step)
    return _cut(where + "".join(reversed(steps)))


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[: _SHOWN // 2]}...{text[-_SHOWN // 2 :]}"


def _root(where: Where) -> str:
    while isinstance(where, tuple):
        where = where[0]
    return where


def _exclusive_bounds(schema: dict[str, Any], out: dict[str, Any]) -> None:
    """``exclusiveMinimum``/``exclusiveMaximum`` (a number, or draft 4's flag on
    ``minimum``/``maximum``) as Gemini's inclusive bounds: exact for integers (the next
    integer in), the bound itself for numbers (one value wider: Gemini cannot say less)."""
    integer = out.get("type") == "INTEGER"
    for key, bound, step in (
        ("exclusiveMinimum", "minimum", 1),
        ("exclusiveMaximum", "maximum", -1),
    ):
        value = schema.get(key)
        if value is None or value is False:
            continue
        edge = schema.get(bound) if value is True else value
        if isinstance(edge, bool) or not isinstance(edge, (int, float)):
            continue  # a flag without its bound says nothing
        if integer:
            edge = math.floor(edge) + 1 if step > 0 else math.ceil(edge) - 1
        out[bound] = edge if bound not in out or value is True else _inner(out[bound], edge, step)


def _inner(a: Any, b: Any, step: int) -> Any:
    """The tighter of two bounds (the larger minimum, the smaller maximum)."""
    if not isinstance(a, (int, float)) or isinstance(a, bool):
        return b
    return max(a, b) if step > 0 else min(a, b)


class SchemaBudget:
    """What the schemas of one request may still cost; shared by all of them."""

    def __init__(
        self,
        nodes: int = MAX_SCHEMA_NODES,
        chars: int = MAX_SCHEMA_CHARS,
        depth: int = MAX_SCHEMA_DEPTH,
    ) -> None:
        self.nodes = nodes
        self.chars = chars
        self.depth = depth
        self.limits = (nodes, chars)

    def node(self, where: Where, depth: int) -> None:
        self.nodes -= 1
        if self.nodes < 0:
            self._refuse(where, f"more than {self.limits[0]:,} schemas ($refs inlined)")
        if depth > self.depth:
            self._refuse(where, f"more than {self.depth} levels of nesting ($refs inlined)")

    def spend(self, chars: int, where: Where) -> None:
        self.chars -= chars
        if self.chars < 0:
            self._refuse(where, f"more than {self.limits[1]:,} characters of names and values")

    @staticmethod
    def _refuse(where: Where, what: str) -> None:
        raise Unsupported(
            f"the request's schemas translate for Gemini to {what}, past the runtime's "
            f"bound (at {_path(where)})",
            _root(where),
        )


def _size(value: Any) -> int:
    """The characters a copied value adds to the translation."""
    if isinstance(value, str):
        return len(value) + 2
    if isinstance(value, bool | int | float) or value is None:
        return 8
    return len(orjson.dumps(value))


def gemini_schema(
    schema: dict[str, Any], param: str, budget: SchemaBudget | None = None
) -> dict[str, Any]:
    """Translate a JSON Schema; ``param`` is where it sits in the request (for errors).
    ``budget`` is the request's (a fresh one when None)."""
    return _Translator(schema, param, budget or SchemaBudget()).node(schema, param, (), 0)


class _Translator:
    def __init__(self, root: dict[str, Any], param: str, budget: SchemaBudget) -> None:
        self.budget = budget
        self.defs: dict[str, Any] = {}
        for key in ("$defs", "definitions"):
            defs = root.get(key) or {}
            if not isinstance(defs, dict):
                raise Unsupported(f"'{key}' must be an object", f"{param}.{key}")
            for name, sub in defs.items():
                self.defs[f"#/{key}/{name}"] = sub

    def node(self, schema: Any, where: Where, refs: tuple[str, ...], depth: int) -> dict[str, Any]:
        self.budget.node(where, depth)
        if not isinstance(schema, dict):
            raise Unsupported("Gemini's schema needs an object here", _path(where))
        if "$ref" in schema:
            return self._ref(schema, where, refs, depth)
        out: dict[str, Any] = {}
        spend = self.budget.spend
        for key, value in schema.items():
            at: Where = (where, f".{key}")
            if key in _DROPPED:
                continue
            if key in _COPIED:
                spend(len(key) + _size(value), at)
                out[key] = value
            elif key == "type":
                self._type(value, at, out)
            elif key == "nullable":
                out["nullable"] = bool(value)
            elif key == "enum":
                self._enum(value, at, out)
            elif key == "const":
                if not isinstance(value, str):
                    raise Unsupported("Gemini's schema has 'const' only for strings", _path(at))
                spend(len(value), at)
                out["enum"] = [value]
            elif key == "properties":
                if not isinstance(value, dict):
                    raise Unsupported("'properties' must be an object", _path(at))
                props = {}
                for name, sub in value.items():
                    spend(2 * len(name) + 8, at)  # the name, and again in propertyOrdering
                    props[name] = self.node(sub, (at, f".{name}"), refs, depth + 1)
                out["properties"] = props
                out["propertyOrdering"] = list(value)
            elif key == "required":
                spend(_size(value), at)
                out["required"] = list(value)
            elif key == "items":
                out["items"] = self.node(value, at, refs, depth + 1)
            elif key == "anyOf":
                if not isinstance(value, list):
                    raise Unsupported("'anyOf' must be a list", _path(at))
                out["anyOf"] = [
                    self.node(s, (at, f"[{i}]"), refs, depth + 1) for i, s in enumerate(value)
                ]
            elif key == "additionalProperties":
                if value is not False:
                    raise Unsupported(
                        "Gemini's schema has no 'additionalProperties' (only false can be "
                        "honoured: its output holds the declared properties only)",
                        _path(at),
                    )
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                if not isinstance(value, (int, float)):  # bool is an int: draft 4's flag
                    raise Unsupported(f"'{key}' must be a number or a boolean", _path(at))
            elif key != "format":
                raise Unsupported(f"Gemini's schema has no {_cut(repr(key))}", _path(at))
        _exclusive_bounds(schema, out)
        if "enum" in out:
            out.setdefault("type", "STRING")
            if out["type"] != "STRING":
                raise Unsupported(
                    "Gemini's schema has 'enum' only for strings", _path((where, ".enum"))
                )
            out["format"] = "enum"
        if "format" in schema and "enum" not in out:
            self._format(schema["format"], (where, ".format"), out)
        if "type" not in out and "properties" in out:
            out["type"] = "OBJECT"
        return out

    def _ref(
        self, schema: dict[str, Any], where: Where, refs: tuple[str, ...], depth: int
    ) -> dict[str, Any]:
        ref = schema["$ref"]
        at: Where = (where, ".$ref")
        if not isinstance(ref, str):
            raise Unsupported("'$ref' must be a string", _path(at))
        if ref in refs:
            raise Unsupported(
                f"Gemini's schema cannot express the recursive $ref {_cut(repr(ref))}", _path(at)
            )
        if ref not in self.defs:
            raise Unsupported(
                f"$ref {_cut(repr(ref))} is not a local $defs or definitions entry", _path(at)
            )
        siblings = {k: v for k, v in schema.items() if k != "$ref"}
        target = self.node(self.defs[ref], at, (*refs, ref), depth + 1)
        return {**target, **self.node(siblings, where, refs, depth)} if siblings else target

    def _type(self, value: Any, where: Where, out: dict[str, Any]) -> None:
        types = value if isinstance(value, list) else [value]
        if not all(isinstance(t, str) and t.lower() in _TYPES for t in types):
            raise Unsupported(f"unknown type {_cut(repr(value))}", _path(where))
        named = [t.lower() for t in types if t.lower() != "null"]
        if len(named) > 1:
            raise Unsupported("Gemini's schema has one type per schema (use anyOf)", _path(where))
        if len(named) < len(types):
            out["nullable"] = True
        out["type"] = _TYPES[named[0] if named else "null"]

    def _enum(self, value: Any, where: Where, out: dict[str, Any]) -> None:
        if not isinstance(value, list):
            raise Unsupported("'enum' must be a list", _path(where))
        if None in value:
            out["nullable"] = True
        values = [v for v in value if v is not None]
        if not all(isinstance(v, str) for v in values):
            raise Unsupported("Gemini's schema has 'enum' only for strings", _path(where))
        self.budget.spend(sum(len(v) + 3 for v in values), where)
        out["enum"] = values

    def _format(self, value: Any, where: Where, out: dict[str, Any]) -> None:
        if value not in _FORMATS.get(out.get("type", ""), set()):
            raise Unsupported(
                f"Gemini's schema has no format {_cut(repr(value))} for this type", _path(where)
            )
        out["format"] = value
