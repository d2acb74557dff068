"""Action parameter schemas: normalisation, validation with coercion, and redaction (pure).

Packs declare parameters either flat, StackStorm style (``{name: {type, required, default, enum,
secret}}``), or as a full JSON Schema object. Both are normalised to one JSON Schema; one that
declares properties gets ``additionalProperties: false`` (a typo is refused, where Attune would
pass it on), while an empty or absent schema accepts any parameters, as Attune's does.
``secret: true`` on a property marks it for redaction.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from typing import Any

from cachetools import LRUCache
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.exceptions import ValidationError as SchemaValidationError

from engine.errors import InvalidParameters, PackError

REDACTED = "********"
#: Deepest nesting of a parameter value (JSON objects and arrays).
MAX_DEPTH = 64

_FLAT_KEYS = {
    "type",
    "required",
    "default",
    "enum",
    "secret",
    "description",
    "items",
    "properties",
    "minimum",
    "maximum",
    "pattern",
    "format",
    "minLength",
    "maxLength",
    "position",
    "immutable",
}
_JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object", "null"}


def normalize_schema(spec: Mapping[str, Any] | None) -> dict[str, Any]:
    """Turn a flat or JSON-Schema parameter declaration into one JSON Schema object."""
    if not spec:
        return {"type": "object", "properties": {}, "additionalProperties": True}
    if not isinstance(spec, Mapping):
        raise PackError("parameters must be a mapping of name to definition")
    if spec.get("type") == "object" and isinstance(spec.get("properties", {}), Mapping):
        schema = copy.deepcopy(dict(spec))
        schema.setdefault("properties", {})
        schema.setdefault("additionalProperties", bool(not schema["properties"]))
        schema.setdefault("required", [])
    else:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, definition in spec.items():
            if not isinstance(definition, Mapping):
                raise PackError(f"parameter '{name}' must be a mapping, e.g. {{type: string}}")
            prop = {
                k: copy.deepcopy(v)
                for k, v in definition.items()
                if k not in {"required", "position", "immutable"}
            }
            _check_type(str(name), prop.get("type"))
            if definition.get("required"):
                required.append(str(name))
            properties[str(name)] = prop
        schema = {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise PackError(f"invalid parameter schema: {exc.message}") from exc
    return schema


def _check_type(name: str, ptype: Any) -> None:
    """Refuse a flat parameter's ``type`` unless it is a JSON type or a list of them."""
    if ptype is None:
        return
    for t in ptype if isinstance(ptype, list) else [ptype]:
        if not isinstance(t, str) or t not in _JSON_TYPES:
            shown = t if isinstance(t, str) else json.dumps(t, default=str)
            raise PackError(f"parameter '{name}' has unknown type '{shown}'")


def flat_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The StackStorm-style flat map Attune's clients read (``{name: {type, required, ...}}``)
    of a normalised schema; a schema with more at its root than properties, required and
    ``additionalProperties`` cannot be said flat and is returned as it is."""
    props = schema.get("properties")
    extra_root = set(schema) - {"type", "properties", "required", "additionalProperties"}
    if schema.get("type") != "object" or not isinstance(props, Mapping) or extra_root:
        return dict(schema)
    required = set(schema.get("required") or [])
    return {
        name: {**prop, "required": True} if name in required else dict(prop)
        for name, prop in props.items()
    }


def secret_names(schema: Mapping[str, Any]) -> frozenset[str]:
    props = schema.get("properties") or {}
    return frozenset(
        name for name, p in props.items() if isinstance(p, Mapping) and p.get("secret")
    )


def _prop_types(prop: Mapping[str, Any]) -> list[str]:
    t = prop.get("type")
    if isinstance(t, str):
        return [t]
    if isinstance(t, list):
        return [str(x) for x in t]
    return []


def coerce_value(value: Any, prop: Mapping[str, Any]) -> Any:
    """Convert a string to the property's declared type when that is unambiguous.

    Chat and the command line deliver every value as text; a value that cannot be converted is
    returned unchanged, and validation then names the parameter and the expected type.
    """
    if not isinstance(value, str):
        return value
    types = _prop_types(prop)
    if not types or "string" in types:
        return value
    text = value.strip()
    for t in types:
        try:
            if t == "integer":
                return int(text)
            if t == "number":
                number = float(text)
                if not math.isfinite(number):
                    continue  # nan/inf are not JSON numbers: left as text, refused by validation
                return int(number) if number.is_integer() and "." not in text else number
            if t == "boolean":
                lowered = text.lower()
                if lowered in {"true", "yes", "on", "1"}:
                    return True
                if lowered in {"false", "no", "off", "0"}:
                    return False
            if t in {"array", "object"}:
                parsed = json.loads(text)
                if (t == "array") == isinstance(parsed, list) and isinstance(parsed, list | dict):
                    return parsed
            if t == "null" and text.lower() in {"", "null", "none"}:
                return None
        except (ValueError, RecursionError):
            continue
    return value


def _check_value(name: str, value: Any) -> None:
    """Refuse what cannot be passed on: NUL characters (PostgreSQL cannot store them in JSON
    text) and nesting deeper than :data:`MAX_DEPTH`. Iterative, so no input can exhaust the
    stack."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidParameters(f"parameter '{name}' is nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if "\x00" in item:
                raise InvalidParameters(
                    f"parameter '{name}' contains a NUL character, which cannot be passed on"
                )
        elif isinstance(item, Mapping):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _describe(error: SchemaValidationError, secrets: frozenset[str] = frozenset()) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    secret = bool(error.absolute_path) and str(error.absolute_path[0]) in secrets
    where = f"parameter '{path}'" if path else "parameters"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"missing required parameter '{missing}'"
    if error.validator == "additionalProperties":
        declared = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        given: Any = error.instance
        extras = sorted(set(given) - set(declared))
        names = ", ".join(f"'{e}'" for e in extras)
        return f"unknown parameter {names}" if len(extras) == 1 else f"unknown parameters {names}"
    if error.validator == "type":
        expected = error.validator_value
        shown = "a secret value" if secret else json.dumps(error.instance, default=str)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"{where} must be {_plural_type(expected)}, got {shown}"
    if error.validator == "enum":
        choices: Any = error.validator_value
        options = ", ".join(json.dumps(v) for v in choices)
        return f"{where} must be one of {options}"
    if secret:
        return f"{where} is not valid ({error.validator})"
    return f"{where}: {error.message}"


def _plural_type(expected: Any) -> str:
    if isinstance(expected, list):
        return " or ".join(_plural_type(e) for e in expected)
    article = "an" if str(expected)[:1] in "aeiou" else "a"
    return f"{article} {expected}"


#: Validators of the schemas seen lately, by the schema object's identity (an action's spec,
#: and so its schema, is shared while the catalog caches it). Past the bound the least recently
#: used goes.
_MAX_VALIDATORS = 512
_VALIDATORS: LRUCache[int, tuple[Mapping[str, Any], Draft202012Validator]] = LRUCache(
    maxsize=_MAX_VALIDATORS
)


def _validator(schema: Mapping[str, Any]) -> Draft202012Validator:
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    validator = Draft202012Validator(dict(schema))
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def validate_parameters(
    schema: Mapping[str, Any], params: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Coerce, apply defaults and validate; return the parameters the action will receive.

    Raises :class:`InvalidParameters` naming every offending parameter.
    """
    result = _with_defaults(schema, params)
    for name, value in result.items():
        _check_value(str(name), value)
    secrets = secret_names(schema)
    errors = sorted(
        _validator(schema).iter_errors(result),
        key=lambda e: (list(map(str, e.absolute_path)), str(e.validator)),
    )
    if errors:
        raise InvalidParameters("; ".join(dict.fromkeys(_describe(e, secrets) for e in errors)))
    return result


def _with_defaults(schema: Mapping[str, Any], params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` coerced by the schema, with the defaults of the parameters not given."""
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InvalidParameters("parameters must be a JSON object")
    props: Mapping[str, Any] = schema.get("properties") or {}
    result: dict[str, Any] = {}
    for name, value in params.items():
        prop = props.get(name)
        result[str(name)] = coerce_value(value, prop) if isinstance(prop, Mapping) else value
    for name, prop in props.items():
        if name not in result and isinstance(prop, Mapping) and "default" in prop:
            result[name] = copy.deepcopy(prop["default"])
    return result


def parameter_problems(schema: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, str]:
    """What :func:`validate_parameters` would refuse in ``params``, by top-level parameter
    name (``""``: the parameters as a whole, such as an unknown name), the first problem of
    each; empty when it would accept them. For forms that show a problem beside its field."""
    result = _with_defaults(schema, params)
    problems: dict[str, str] = {}
    for name, value in result.items():
        try:
            _check_value(str(name), value)
        except InvalidParameters as exc:
            problems[str(name)] = exc.message
    secrets = secret_names(schema)
    errors = sorted(
        _validator(schema).iter_errors(result),
        key=lambda e: (list(map(str, e.absolute_path)), str(e.validator)),
    )
    for error in errors:
        message = _describe(error, secrets)
        if error.absolute_path:
            name = str(error.absolute_path[0])
        elif error.validator == "required" and "'" in error.message:
            name = error.message.split("'")[1]
        else:
            name = ""
        problems.setdefault(name, message)
    return problems


def redact(params: Mapping[str, Any], secrets: frozenset[str]) -> dict[str, Any]:
    """Copy of ``params`` with every secret value replaced by a fixed marker."""
    return {k: (REDACTED if k in secrets else v) for k, v in params.items()}
