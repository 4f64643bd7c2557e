"""The JSON schemas of the model steps' replies, and the check every reply passes before use.

A reply is checked with the ``jsonschema`` library (Draft 2020-12) and two stricter types than
JSON Schema's own: an ``integer`` is a Python int (not a bool, not 2.0) and a ``number`` is a
finite int or float (not a bool, NaN or infinity, which Python's JSON reader accepts). What a
reply breaks is reported in a few short lines that quote at most a few characters of it, so a
hostile reply cannot fill a stage's detail.
"""
from __future__ import annotations

import math
from itertools import islice
from typing import Any

import jsonschema

from ..colors import COLOR_NAMES
from ..parser import RELATIONS, SUPERLATIVES

ATTRS = sorted(set(COLOR_NAMES) | set(SUPERLATIVES))
_PHRASE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["noun", "attributes"],
    "properties": {
        "noun": {"type": "string", "maxLength": 64},
        "attributes": {"type": "array", "maxItems": 6, "items": {"type": "string", "enum": ATTRS}},
    },
}
_INT_OR_NULL = {"anyOf": [{"type": "integer", "minimum": -1, "maximum": 100000}, {"type": "null"}]}
_LOCATION = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "floor": _INT_OR_NULL,  # rank from the bottom (1 = lowest), -1 = top floor
        "floor_id": _INT_OR_NULL,
        "room": {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "null"}]},
        "room_id": _INT_OR_NULL,
        "room_with": {"anyOf": [_PHRASE, {"type": "null"}]},
    },
}
PARSE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["target", "attributes", "relations", "facing"],
    "properties": {
        "target": {"type": "string", "maxLength": 64},
        "attributes": {"type": "array", "maxItems": 6, "items": {"type": "string", "enum": ATTRS}},
        "relations": {
            "type": "array",
            "maxItems": 4,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["relation", "anchors"],
                "properties": {
                    "relation": {"type": "string", "enum": list(RELATIONS)},
                    "anchors": {"type": "array", "minItems": 1, "maxItems": 2, "items": _PHRASE},
                },
            },
        },
        "facing": {"anyOf": [_PHRASE, {"type": "null"}]},
        "location": {"anyOf": [_LOCATION, {"type": "null"}]},  # optional: floor / room constraint
    },
}
VERIFY_SCHEMA = {
    "type": "object",
    "required": ["candidates"],
    "properties": {
        "candidates": {
            "type": "array",
            "maxItems": 64,
            "items": {
                "type": "object",
                "required": ["id", "confidence"],
                "properties": {
                    "id": {"type": "integer"},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                },
            },
        }
    },
}
ORIENTATION_SCHEMA = {
    "type": "object",
    "required": ["orientations"],
    "properties": {
        "orientations": {
            "type": "array",
            "maxItems": 64,
            "items": {
                "type": "object",
                "required": ["id", "yaw_bin"],
                "properties": {
                    "id": {"type": "integer"},
                    "yaw_bin": {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "null"}]},
                },
            },
        }
    },
}
DECIDE_SCHEMA = {
    "type": "object",
    "required": ["id", "reason"],
    "properties": {
        "id": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        "reason": {"type": "string"},
    },
}


class StepFailed(Exception):
    """A step's reply was received but cannot be used."""


def _is_integer(_checker, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(_checker, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    ),
)
_MAX_ERRORS = 5
_VALIDATORS: dict[int, tuple[dict, Any]] = {}  # id(schema) -> (schema, validator), for the schemas above


def _validator(schema: dict):
    hit = _VALIDATORS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    v = _Validator(schema)
    if len(_VALIDATORS) < 64:  # the module's schemas; a caller's own are built each time
        _VALIDATORS[id(schema)] = (schema, v)
    return v


def _short(value: Any, n: int = 40) -> str:
    return repr(str(value)[:n])


def _describe(e: jsonschema.ValidationError, path: str) -> str:
    """One short line for one error (never more than a few characters of the reply)."""
    where = path + e.json_path[1:]
    kind, value, inst = e.validator, e.validator_value, e.instance
    if kind == "anyOf":
        return f"{where}: matches none of the allowed forms"
    if kind == "type":
        return f"{where}: expected {value}, got {type(inst).__name__}"
    if kind == "enum":
        return f"{where}: {_short(inst)} is not one of the allowed values"
    if kind == "maxLength":
        return f"{where}: longer than {value} characters"
    if kind in ("minimum", "maximum"):
        return f"{where}: {_short(inst)} is out of range"
    if kind in ("minItems", "maxItems"):
        return f"{where}: {len(inst)} items is out of range"
    if kind == "required":
        missing = [k for k in value if k not in inst]
        return f"{where}: missing {missing[0]!r}" if missing else f"{where}: missing a required key"
    if kind == "additionalProperties":
        allowed = e.schema.get("properties", {})
        extra = [k for k in inst if k not in allowed]
        return f"{where}: unexpected key(s) {[str(k)[:20] for k in extra[:3]]}"
    return f"{where}: breaks {kind!r}"


def schema_errors(value: Any, schema: dict, path: str = "$") -> list[str]:
    """Where ``value`` breaks ``schema`` (at most five short lines); [] when it fits."""
    errors = islice(_validator(schema).iter_errors(value), _MAX_ERRORS)
    return [_describe(e, path) for e in errors]


def check_reply(data: Any, schema: dict, name: str) -> None:
    """StepFailed unless ``data`` fits ``schema`` (the schema of step ``name``)."""
    errs = schema_errors(data, schema)
    if errs:
        raise StepFailed(f"reply does not fit the {name} schema: " + "; ".join(errs))
