"""Regenerate openai-schemas.json from OpenAI's official OpenAPI description in shared/specs.

The tests read the full spec from ../shared when it is there; this subset (the schemas our answers
are validated against and everything they reference, unchanged) keeps them working in a clone
that has no shared/ folder beside it.

    .venv/bin/python tests/specs/extract.py ../shared/specs/openai-openapi.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOTS = [
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "ErrorResponse",
    "Model",
    "CreateCompletionResponse",
    "Response",
    "ResponseStreamEvent",
    "ResponseItemList",
]


def _refs(node: object):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/schemas/"):
                yield value.rsplit("/", 1)[-1]
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def extract(spec_path: Path) -> dict:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with spec_path.open() as fh:
        schemas = yaml.load(fh, Loader=loader)["components"]["schemas"]
    seen: set[str] = set()
    stack = list(ROOTS)
    while stack:
        name = stack.pop()
        if name not in seen:
            seen.add(name)
            stack.extend(_refs(schemas[name]))
    return {"components": {"schemas": {name: schemas[name] for name in sorted(seen)}}}


if __name__ == "__main__":
    source = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/specs/openai-openapi.yaml")
    out = Path(__file__).with_name("openai-schemas.json")
    out.write_text(json.dumps(extract(source), indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")
