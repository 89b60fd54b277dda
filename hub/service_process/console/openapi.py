"""Request checks from openapi.yaml: a request's JSON body and path parameters are validated
against the schemas the spec gives its operation (jsonschema), and the first error becomes one
400 message in words ("missing field 'user'", "'note' is longer than 500 characters").

openapi.yaml is OpenAPI 3.0, whose schemas are JSON Schema draft 4 plus ``nullable``: before
validation, ``$ref``s are inlined and ``nullable`` becomes a ``null`` type. A schema may carry
``x-message``, the 400 message when a value breaks it (or one of its oneOf branches), where the
generic one would say less; ``{name}`` stands for the field, quoted.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from hub.common.errors import ConsoleError

if TYPE_CHECKING:  # jsonschema loads with the first checked request (see _validator)
    # jsonschema and its format checkers load with the first checked request, not at the console's start
    from jsonschema import Draft4Validator
    from jsonschema.exceptions import ValidationError

SPEC_FILE = Path(__file__).with_name("openapi.yaml")

# When several things are wrong, the message names the first: the body's shape (unknown,
# then missing fields), then fields in the spec's order, each by the first keyword here.
_KEYWORDS = ("type", "additionalProperties", "required", "maxLength", "maxItems", "minLength", "minItems",
             "pattern", "not", "enum", "minimum", "maximum", "oneOf")


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
    except ValueError:  # a number of more than 4300 digits: Python's limit on integer strings
        raise ConsoleError(400, "the request body has a number too long to read: send numbers of at most a few "
                                "digits") from None
    if "\\u" in body:  # \ud800 alone is valid JSON but no text: writing it (audit, intent, hub) would fail
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ConsoleError(400, "the request body has a lone UTF-16 surrogate escape (such as \\ud800): "
                                    "send text as UTF-8 or as escaped pairs") from None
    if not isinstance(data, dict):
        raise ConsoleError(400, f"the request body must be a JSON object, not {_kind(data)}")
    return data


def _kind(value: Any) -> str:
    """What a JSON value is, in words: "a string", "an array", "null", ..."""
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


class Operation:
    """One method of one path in the spec: validators for its request body and path parameters."""

    def __init__(self, spec: dict[str, Any], path: str, method: str):
        item = spec["paths"][path]
        op = item[method]
        request = op.get("requestBody")
        self.body_required = bool(request and request.get("required"))
        schema = request["content"]["application/json"]["schema"] if request else None
        self.body = _validator(schema, spec) if schema is not None else None
        self.params = {p["name"]: _validator(p["schema"], spec)
                       for p in (*item.get("parameters", ()), *op.get("parameters", ())) if p["in"] == "path"}

    def check_body(self, raw: bytes | str) -> dict[str, Any]:
        """The body as a checked JSON object ({} for a blank optional body), or a 400."""
        if not self.body_required and not raw.strip():
            return {}
        data = parse_object(raw)
        if self.body is None:
            if data:
                raise ConsoleError(400, "this request takes no body")
            return data
        _check(self.body, data, [])
        return data

    def check_params(self, values: dict[str, str]) -> None:
        """Path parameters (url-decoded) against their schemas, or a 400 naming the parameter."""
        for name, value in values.items():
            if name in self.params:
                _check(self.params[name], value, [name])


@lru_cache(maxsize=None)
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_FILE.read_text())


@lru_cache(maxsize=None)
def operation(path: str, method: str) -> Operation:
    """The checks for `method` (get, post, ...) on `path` ("/pins/{user}"), from openapi.yaml."""
    return Operation(spec(), path, method.lower())


# ---- OpenAPI 3.0 schema -> JSON Schema draft 4 ------------------------------------------------

def _validator(schema: dict[str, Any], spec: dict[str, Any]) -> Draft4Validator:
    # Imported here: about 5 MB resident that the console's process holds only once a request
    # is checked (docs/performance.md, "Memory of the hub side").
    # jsonschema and its format checkers load with the first checked request, not at the console's start
    from jsonschema import Draft4Validator

    converted = _json_schema(schema, spec)
    Draft4Validator.check_schema(converted)
    return Draft4Validator(converted)


def _json_schema(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The schema with ``$ref``s inlined (their siblings are ignored, as OpenAPI 3.0 says) and
    ``nullable: true`` as a ``null`` type."""
    if "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        return _json_schema(node, spec)
    out = dict(schema)
    for key in ("items", "not", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _json_schema(out[key], spec)
    for key in ("oneOf", "anyOf", "allOf"):
        if key in out:
            out[key] = [_json_schema(s, spec) for s in out[key]]
    if "properties" in out:
        out["properties"] = {name: _json_schema(s, spec) for name, s in out["properties"].items()}
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


# ---- the first error, in words ------------------------------------------------------------

def _check(validator: Draft4Validator, value: Any, where: list[str | int]) -> None:
    errors = list(validator.iter_errors(value))
    if errors:
        first = _first(validator, errors, list(validator.schema.get("properties") or {}))
        raise ConsoleError(400, _message(first, _name([*where, *first.absolute_path])))


def _first(validator: Draft4Validator, errors: list[ValidationError], order: list[str]) -> ValidationError:
    """The error to report; for a value that breaks a oneOf, the error within the one branch
    of the value's type (if exactly one is), so that the message says what is wrong in it."""
    first = min(errors, key=lambda e: _rank(e, order))
    if first.validator == "oneOf":
        fits = [i for i, branch in enumerate(first.validator_value)
                if "type" in branch and validator.is_type(first.instance, branch["type"])]
        inner = [e for e in first.context if len(fits) == 1 and e.relative_schema_path[0] == fits[0]]
        if inner:
            return _first(validator, inner, order)
    return first


def _rank(error: ValidationError, order: list[str]) -> tuple:
    keyword = _KEYWORDS.index(error.validator) if error.validator in _KEYWORDS else len(_KEYWORDS)
    path = list(error.absolute_path)
    if not path:
        return (0, keyword)
    field = order.index(path[0]) if path[0] in order else len(order)
    return (1, field, tuple(path[1:]), keyword)


def _name(path: list[str | int]) -> str:
    """'users[1]' for ["users", 1]."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return repr(text)


def _message(error: ValidationError, name: str) -> str:
    schema, keyword, limit, value = error.schema, error.validator, error.validator_value, error.instance
    custom = schema.get("x-message") if isinstance(schema, dict) else None
    if not custom and error.parent is not None and error.parent.validator == "oneOf" \
            and len(error.relative_schema_path) == 2:  # raised by a branch itself: the oneOf's message
        custom = error.parent.schema.get("x-message")
    if custom:
        return custom.format(name=name)
    if keyword == "additionalProperties":
        known = list(schema.get("properties") or {})
        unknown = sorted(set(value) - set(known))
        return f"unknown field {unknown[0]!r}; this request takes {', '.join(repr(k) for k in known)}"
    if keyword == "required":
        return f"missing field {next(k for k in limit if k not in value)!r}"
    if keyword == "type":
        return f"{name} must be {_types(limit, schema)}, not {_kind(value)}"
    if keyword == "oneOf":
        return f"{name} must be {' or '.join(_types(s.get('type'), s) for s in limit)}, not {_kind(value)}"
    if keyword == "maxLength":
        return f"{name} is longer than {limit} characters"
    if keyword == "minLength":
        return f"{name} must not be empty" if limit == 1 else f"{name} is shorter than {limit} characters"
    if keyword == "maxItems":
        return f"{name} lists more than {limit} {_items(schema)}"
    if keyword == "minItems":
        return f"{name} lists fewer than {limit} {_items(schema)}"
    if keyword == "enum":
        options = [repr(o) for o in limit]
        choices = f"{', '.join(options[:-1])} or {options[-1]}" if len(options) > 1 else options[0]
        if schema.get("title"):
            return f"unknown {schema['title']} {value!r}: use {choices}"
        return f"{name} must be {choices}, not {value!r}"
    if keyword in ("minimum", "maximum"):
        above = keyword == "minimum" and schema.get("exclusiveMinimum")
        below = keyword == "maximum" and schema.get("exclusiveMaximum")
        bound = "above" if above else "below" if below else "at least" if keyword == "minimum" else "at most"
        return f"{name} must be {bound} {limit}"
    return f"{name} is not valid here ({error.message})"


def _types(types: Any, schema: dict[str, Any]) -> str:
    words = {"string": "a string", "boolean": "true or false", "integer": "a whole number", "number": "a number",
             "object": "an object", "null": "null", "array": f"an array of {_items(schema)}"}
    listed = types if isinstance(types, list) else [types]
    return " or ".join(words.get(t, str(t)) for t in listed)


def _items(schema: dict[str, Any]) -> str:
    return "names" if (schema.get("items") or {}).get("type") == "string" else "items"
