#!/usr/bin/env python3
"""Trim OpenAI's OpenAPI spec down to the one operation `agent openai` calls.

Usage: python3 tests/contract/trim_openai_spec.py [SRC_YAML]

SRC_YAML defaults to ../../../shared/openai-oai/openapi.yaml relative to this file
(i.e. /work/shared/openai-oai/openapi.yaml, from openai/openai-openapi, MIT). Writes
openai_chat.trimmed.json next to this script: `POST /chat/completions` plus every
`components` entry it references (transitively), `securitySchemes`, `security`,
`servers`, `info`, `openapi` and the used tags. Output is deterministic. Needs PyYAML.

One deliberate edit: `nullable` is dropped where a schema has no `type` (three
places). Prism's validator (Ajv) refuses to compile a schema with `nullable` and no
`type`, and Prism then lets every request through unvalidated; see drop_bare_nullable.
"""
import json
import os
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SRC = os.path.normpath(
    os.path.join(HERE, "..", "..", "..", "shared", "openai-oai", "openapi.yaml"))
KEEP = {"/chat/completions": ["post"]}
TOP_LEVEL = ("openapi", "info", "servers", "security")


def iter_refs(node):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for v in node.values():
            yield from iter_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from iter_refs(v)


def resolve(spec, ref):
    assert ref.startswith("#/"), ref
    node = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def drop_bare_nullable(node):
    """Remove `nullable` where there is no sibling `type`; returns how many."""
    n = 0
    if isinstance(node, dict):
        if "nullable" in node and "type" not in node:
            del node["nullable"]
            n += 1
        for v in node.values():
            n += drop_bare_nullable(v)
    elif isinstance(node, list):
        for v in node:
            n += drop_bare_nullable(v)
    return n


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SRC
    with open(src) as f:
        spec = yaml.safe_load(f)
    out = {k: spec[k] for k in TOP_LEVEL if k in spec}
    out["paths"] = {}
    tags = set()
    for path, methods in KEEP.items():
        item = spec["paths"][path]
        out["paths"][path] = {m: item[m] for m in methods}
        for m in methods:
            tags.update(item[m].get("tags", []))
    seen = set()
    todo = list(iter_refs(out["paths"]))
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        todo.extend(iter_refs(resolve(spec, ref)))
    comps = {}
    for ref in sorted(seen):
        _, _, section, name = ref.split("/", 3)
        comps.setdefault(section, {})[name] = spec["components"][section][name]
    comps["securitySchemes"] = spec["components"]["securitySchemes"]
    out["components"] = comps
    out["tags"] = [t for t in spec.get("tags", []) if t["name"] in tags]
    dropped = drop_bare_nullable(out)
    dest = os.path.join(HERE, "openai_chat.trimmed.json")
    with open(dest, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {dest}: {len(seen)} components, {dropped} bare nullable dropped", file=sys.stderr)


if __name__ == "__main__":
    main()
