"""JSON Schema (draft 2020-12) generated from the dataclasses a JSON document is built from.

The run report's schema used to be 290 hand-written lines beside the dataclasses that
produce the report, free to drift from them. Now :func:`object_schema` reads the same
declaration :meth:`RunReport.to_dict` serialises: field types from the annotations,
descriptions from the field and property docstrings, constraints from
``Annotated[T, JsonSchema(...)]``, computed members from ``JSON_COMPUTED`` and omitted
fields from ``JSON_EXCLUDED``. A free-form dict documents the keys it is known to hold
with ``JsonSchema(known=Class)`` (or a function returning the class, resolved only when
the schema is built). Every object is closed (``additionalProperties: false``)
and every member required, so a key added to or dropped from ``to_dict`` without the
declaration fails validation at once.

Stdlib only (pydantic would cost ~60 ms of start-up on every ``harness run``, and the
report models are plain dataclasses); it covers exactly the types the models use.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from datetime import datetime
from enum import Enum
from functools import cache
from typing import Any

from harness_lib.models import JsonSchema

__all__ = ["object_schema", "type_schema"]

_SIMPLE = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _one_line(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line."""
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


@cache
def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings: the string literal right after each annotated field."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = _one_line(after.value.value)
    return docs


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "enum" in schema:
        return {**schema, "type": [schema["type"], "null"], "enum": [*schema["enum"], None]}
    if isinstance(schema.get("type"), str):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def type_schema(tp: Any) -> dict[str, Any]:
    """The schema of one annotation (resolved, possibly ``Annotated``)."""
    extra: dict[str, Any] = {}
    if typing.get_origin(tp) is typing.Annotated:
        tp, *meta = typing.get_args(tp)
        for m in meta:
            if isinstance(m, JsonSchema):
                extra.update(m)
    known = extra.pop("known", None)
    if known is not None and not isinstance(known, type):
        # A function naming the class: it lives in a module that imports this one (the
        # stack's check results), so it is looked up only when a schema is built.
        known = known()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if all(a in _SIMPLE for a in rest):
            names = [_SIMPLE[a] for a in rest] + (["null"] if len(rest) < len(args) else [])
            schema: dict[str, Any] = {"type": names[0] if len(names) == 1 else names}
        else:
            (only,) = rest  # unions of objects are not used by the models
            schema = _nullable(type_schema(only))
    elif tp in _SIMPLE:
        schema = {"type": _SIMPLE[tp]}
    elif tp is datetime:
        schema = {"type": "string", "format": "date-time"}
    elif isinstance(tp, type) and issubclass(tp, Enum):
        schema = {"type": "string", "enum": [str(m.value) for m in tp]}
    elif origin is list:
        schema = {"type": "array", "items": type_schema(args[0])}
    elif origin is dict or tp is dict:
        schema = {"type": "object"}
        if known is not None:
            schema["properties"] = object_schema(known)["properties"]
            schema["additionalProperties"] = True
    elif dataclasses.is_dataclass(tp):
        schema = object_schema(tp)
    elif tp is Any:
        schema = {}
    else:
        raise TypeError(f"no JSON Schema for {tp!r}")
    schema.update(extra)
    return schema


def object_schema(cls: type) -> dict[str, Any]:
    """A closed object schema for a dataclass: its fields (minus ``JSON_EXCLUDED``) and
    ``JSON_COMPUTED`` properties, all required, each with its docstring as description."""
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = _field_docs(cls)
    excluded = set(getattr(cls, "JSON_EXCLUDED", ()))
    props: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in excluded:
            continue
        props[f.name] = {**type_schema(hints[f.name]), "description": docs.get(f.name, "")}
    for name in getattr(cls, "JSON_COMPUTED", ()):
        getter = getattr(cls, name).fget
        ret = typing.get_type_hints(getter, include_extras=True)["return"]
        props[name] = {**type_schema(ret), "description": _one_line(getter.__doc__)}
    missing = [k for k, v in props.items() if not v["description"]]
    if missing:
        # Every member a consumer sees is explained; a new field needs its docstring.
        raise TypeError(f"{cls.__name__}: document {', '.join(missing)} (a docstring)")
    return {
        "type": "object",
        "description": _one_line(cls.__doc__),
        "required": list(props),
        "additionalProperties": False,
        "properties": props,
    }
