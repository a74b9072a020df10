"""Validate our answers against OpenAI's official OpenAPI description (../shared/specs)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_CANDIDATES = [
    Path(__file__).resolve().parents[2] / "shared" / "specs" / "openai-openapi.yaml",
    Path(__file__).resolve().parents[1] / "shared" / "specs" / "openai-openapi.yaml",
]


def _convert_nullable(node: Any) -> Any:
    """The spec still writes OpenAPI 3.0's `nullable: true`; turn it into JSON Schema's null type."""
    if isinstance(node, dict):
        node = {k: _convert_nullable(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node
    if isinstance(node, list):
        return [_convert_nullable(v) for v in node]
    return node


# The schemas we validate against, extracted unchanged from the same spec (tests/specs/extract.py),
# for clones that have no shared/ folder beside them.
SUBSET = Path(__file__).resolve().parent / "specs" / "openai-schemas.json"


@functools.cache
def _registry() -> tuple[Registry, str]:
    path = next((p for p in SPEC_CANDIDATES if p.exists()), None)
    if path is not None:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with path.open() as fh:
            spec = yaml.load(fh, Loader=loader)
    else:
        spec = json.loads(SUBSET.read_text())
    components = {"components": {"schemas": _convert_nullable(spec["components"]["schemas"])}}
    uri = "urn:openai-spec"
    resource = Resource(contents=components, specification=DRAFT202012)
    return Registry().with_resource(uri, resource), uri


def validate(instance: Any, schema_name: str) -> None:
    registry, uri = _registry()
    validator = Draft202012Validator({"$ref": f"{uri}#/components/schemas/{schema_name}"}, registry=registry)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{schema_name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
