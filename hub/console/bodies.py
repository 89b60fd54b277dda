"""Request bodies: the JSON object, and its fields checked by kind (name, note, names, ...)."""
from __future__ import annotations

import json
import re
from typing import Any

from hub.console.errors import ConsoleError

MAX_NAME = 255
MAX_NOTE = 500
MAX_LIST = 1000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# ---- request bodies ------------------------------------------------------------------------

def parse_object(body: bytes | str) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise ConsoleError(400, "the request body is not UTF-8 text") from None
    if not body.strip():
        raise ConsoleError(400, "the request body is empty: send a JSON object")
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ConsoleError(400, f"the request body is not valid JSON ({exc.msg} at line "
                                f"{exc.lineno} column {exc.colno})") from None
    except RecursionError:  # json gives up on deep nesting ([[[[…) with Python's stack
        raise ConsoleError(400, "the request body is nested too deeply: send a flat JSON object") from None
    if not isinstance(data, dict):
        raise ConsoleError(400, f"the request body must be a JSON object, not {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# field kinds: "name" (non-empty string), "server" (string, may be empty), "note" (optional
# text), "note_any" (text of any length, e.g. a roster), "names" (array of names), "bool",
# "any" (checked by the action)
def check_fields(data: dict[str, Any], required: dict[str, str],
                 optional: dict[str, str] | None = None) -> dict[str, Any]:
    """Exactly these fields, each of its kind; 400 naming the first field that is wrong."""
    optional = optional or {}
    allowed = {**required, **optional}
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConsoleError(400, f"unknown field {unknown[0]!r}; this request takes "
                                f"{', '.join(repr(k) for k in allowed)}")
    for name in required:
        if name not in data:
            raise ConsoleError(400, f"missing field {name!r}")
    return {name: check(name, kind, data[name]) for name, kind in allowed.items() if name in data}


def check(name: str, kind: str, value: Any) -> Any:
    if kind == "any":
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConsoleError(400, f"{name!r} must be true or false, not {_kind(value)}")
        return value
    if kind == "note_any":
        if not isinstance(value, str):
            raise ConsoleError(400, f"{name!r} must be a string, not {_kind(value)}")
        return value
    if kind == "names":
        if not isinstance(value, list):
            raise ConsoleError(400, f"{name!r} must be an array of names, not {_kind(value)}")
        if len(value) > MAX_LIST:
            raise ConsoleError(400, f"{name!r} lists more than {MAX_LIST} names")
        return sorted(set(check(f"{name}[{i}]", "name", v) for i, v in enumerate(value)))
    if not isinstance(value, str):
        raise ConsoleError(400, f"{name!r} must be a string, not {_kind(value)}")
    limit = MAX_NOTE if kind == "note" else MAX_NAME
    if len(value) > limit:
        raise ConsoleError(400, f"{name!r} is longer than {limit} characters")
    if kind == "name" and not value.strip():
        raise ConsoleError(400, f"{name!r} must not be empty")
    if kind != "note" and _CONTROL.search(value):
        raise ConsoleError(400, f"{name!r} contains control characters")
    return value
