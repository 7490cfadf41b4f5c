"""The shipped JSON Schema (draft 2020-12) and its errors as Problems with fixes."""
from __future__ import annotations

import functools
import json
from importlib import resources

import jsonschema

from conf.problems import Problem, json_path

SCHEMA_FILE = "conflist.schema.json"


@functools.cache
def load_schema() -> dict:
    text = resources.files("conf").joinpath("schema", SCHEMA_FILE).read_text()
    return json.loads(text)


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _leaf_errors(error: jsonschema.ValidationError):
    """The most specific errors: if/then and $ref wrap nothing, anyOf/oneOf do."""
    if error.validator in ("anyOf", "oneOf") and error.context:
        # Report the alternative that got furthest; all of them failing is noise.
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) > len(error.absolute_path):
            yield from _leaf_errors(deepest)
            return
    yield error


def _explain(error: jsonschema.ValidationError) -> str:
    v, value = error.validator, error.instance
    if v == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"required field {missing!r} is missing: add it"
    if v == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{json.dumps(value)} has the wrong type: it must be {want}"
    if v == "enum":
        allowed = ", ".join(json.dumps(a) for a in error.validator_value)
        return f"{json.dumps(value)} is not allowed: use one of {allowed}"
    if v in ("minimum", "maximum"):
        return f"{value} is out of range ({error.message})"
    if v == "not" and error.validator_value == {"required": ["markMasqBit", "externalSetMarkChain"]}:
        return "markMasqBit and externalSetMarkChain exclude each other: keep only one"
    if v == "anyOf" and error.validator_value == [{"required": ["ranges"]}, {"required": ["subnet"]}]:
        return ('host-local has no address range: add "ranges": [[{"subnet": "<pod CIDR>"}]] '
                "or run `kube-router-cni update` to add this node's pod CIDRs")
    if v == "anyOf" and error.schema_path and "mtu" in error.schema_path:
        return f"mtu {value} is out of range: use 0 (kernel default) or 68..65535"
    if v == "pattern" and error.validator_value.startswith("^[a-zA-Z0-9]"):
        return (f"{json.dumps(value)} is not a valid network name: use letters, digits, "
                "'_', '.' and '-', starting with a letter or digit")
    if v == "pattern" and error.validator_value.startswith("^[^/"):
        return f"{json.dumps(value)} is not a plugin name: it must not contain a path"
    if v == "pattern":
        return f"{json.dumps(value)} does not match {error.validator_value}"
    if v == "minItems":
        return "the list is empty: give at least one entry"
    if v in ("minLength", "maxLength"):
        return f"{json.dumps(value)} has the wrong length ({error.message})"
    return error.message


def schema_problems(doc: object) -> list[Problem]:
    problems = set()
    for error in _validator().iter_errors(doc):
        for leaf in _leaf_errors(error):
            problems.add(Problem(json_path(leaf.absolute_path), _explain(leaf)))
    return sorted(problems)
