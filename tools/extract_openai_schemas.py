#!/usr/bin/env python3
"""Extracts from OpenAI's OpenAPI specification the response schemas moe-server answers with,
and every schema they refer to, into one small JSON file the tests commit.

    /usr/bin/python3 tools/extract_openai_schemas.py --spec ../shared/openai/openapi.yaml \
        --out tests/data/openai/schemas.json

The spec is OpenAPI 3.1, whose schemas are JSON Schema 2020-12: the output keeps them as they
are, under "components.schemas", so "#/components/schemas/X" references still resolve.
"""
import argparse
import json

import yaml

# What moe-server's HTTP API returns (tools/openai_spec_check.py checks each against these).
ROOTS = ["ListModelsResponse", "Model", "CreateCompletionResponse", "CreateChatCompletionResponse",
         "CreateChatCompletionStreamResponse", "ErrorResponse"]


def refs(node, out):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            out.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            refs(value, out)
    elif isinstance(node, list):
        for value in node:
            refs(value, out)


def strip_docs(node, property_names=False):
    """Drops descriptions and examples (most of the size, none of the rules); the keys of a
    "properties" mapping are field names and stay, whatever they are called."""
    if isinstance(node, dict):
        return {k: strip_docs(v, k == "properties" and not property_names) for k, v in node.items()
                if property_names or k not in ("description", "example", "examples", "x-oaiMeta", "title")}
    if isinstance(node, list):
        return [strip_docs(v) for v in node]
    return node


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.spec) as f:
        spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    schemas = spec["components"]["schemas"]
    keep, todo = set(), list(ROOTS)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep.add(name)
        found = set()
        refs(schemas[name], found)
        todo.extend(found - keep)
    out = {"source": f"{spec['info']['title']} {spec['info']['version']} (openapi {spec['openapi']}), "
                     "MIT licence; extracted by tools/extract_openai_schemas.py",
           "roots": ROOTS,
           "components": {"schemas": {name: strip_docs(schemas[name]) for name in sorted(keep)}}}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(keep)} schemas -> {args.out}")


if __name__ == "__main__":
    main()
