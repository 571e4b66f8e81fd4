#!/usr/bin/env python3
"""Trim Twilio's OpenAPI specs down to the operations smsgate calls.

Usage: python3 tests/contract/trim_spec.py [SRC_DIR]

SRC_DIR defaults to ../../../shared/twilio-oai relative to this file
(i.e. /work/shared/twilio-oai), which holds twilio_api_v2010.json and
twilio_messaging_v1.json from twilio/twilio-oai (MIT). Writes
<name>.trimmed.json next to this script. Output is deterministic.

One deliberate change besides trimming: array properties of form-urlencoded
request bodies (MediaUrl, PersistentAction, ...) get an explicit
`encoding: {style: form, explode: true}` entry (the OpenAPI default, spelled
out because Prism ignores the default); see add_form_array_encodings.
"""
import copy
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SRC = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "twilio-oai"))

# spec file -> {path: [methods]}
KEEP = {
    "twilio_api_v2010.json": {
        "/2010-04-01/Accounts/{AccountSid}/Messages.json": ["get", "post"],
        "/2010-04-01/Accounts/{Sid}.json": ["get"],
        "/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers.json": ["get"],
        "/2010-04-01/Accounts/{AccountSid}/IncomingPhoneNumbers/{Sid}.json": ["post"],
    },
    "twilio_messaging_v1.json": {
        "/v1/Services/{Sid}": ["get", "post"],
    },
}

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
TOP_LEVEL = ("openapi", "info", "servers", "security")


def iter_refs(node):
    """Yield every local $ref string inside node."""
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
    if not ref.startswith("#/"):
        raise SystemExit(f"external $ref not supported: {ref}")
    node = spec
    parts = [p.replace("~1", "/").replace("~0", "~") for p in ref[2:].split("/")]
    for p in parts:
        node = node[p]
    return parts, node


def add_form_array_encodings(spec, paths):
    """Declare style=form/explode=true for array properties of form bodies.

    This is the OpenAPI 3.0 default for application/x-www-form-urlencoded, so the
    meaning is unchanged, but Prism only turns a field into an array when an
    explicit `encoding` entry exists; without it a MediaUrl field is validated as
    a string and rejected with 422 "must be array". Mutates the (copied) paths.
    """
    for item in paths.values():
        for m, op in item.items():
            if m not in HTTP_METHODS:
                continue
            content = op.get("requestBody", {}).get("content", {})
            media = content.get("application/x-www-form-urlencoded")
            if not media:
                continue
            schema = media.get("schema", {})
            if "$ref" in schema:
                _, schema = resolve(spec, schema["$ref"])
            for name, prop in sorted(schema.get("properties", {}).items()):
                if "$ref" in prop:
                    _, prop = resolve(spec, prop["$ref"])
                if prop.get("type") == "array":
                    enc = media.setdefault("encoding", {})
                    enc.setdefault(name, {"style": "form", "explode": True})


def trim(spec, keep):
    spec = copy.deepcopy(spec)
    out = {k: spec[k] for k in TOP_LEVEL if k in spec}
    paths = {}
    for path, methods in keep.items():
        item = spec["paths"].get(path)
        if item is None:
            raise SystemExit(f"path not in spec: {path}")
        new_item = {k: v for k, v in item.items() if k not in HTTP_METHODS}
        for m in methods:
            if m not in item:
                raise SystemExit(f"{m.upper()} {path} not in spec")
            new_item[m] = item[m]
        paths[path] = new_item
    out["paths"] = paths
    add_form_array_encodings(spec, paths)

    # Transitive closure over components references.
    components = {}
    if "securitySchemes" in spec.get("components", {}):
        components["securitySchemes"] = spec["components"]["securitySchemes"]
    todo = list(iter_refs(paths))
    seen = set()
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        parts, node = resolve(spec, ref)
        if parts[0] != "components" or len(parts) != 3:
            raise SystemExit(f"unexpected $ref shape: {ref}")
        components.setdefault(parts[1], {})[parts[2]] = node
        todo.extend(iter_refs(node))
    out["components"] = {
        sect: dict(sorted(entries.items())) for sect, entries in sorted(components.items())
    }

    # Keep only the tags the kept operations use (optional metadata).
    used_tags = {t for item in paths.values() for m, op in item.items()
                 if m in HTTP_METHODS for t in op.get("tags", [])}
    if "tags" in spec:
        out["tags"] = [t for t in spec["tags"] if t.get("name") in used_tags]
    return out


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_SRC
    for name, keep in KEEP.items():
        with open(os.path.join(src, name), encoding="utf-8") as f:
            spec = json.load(f)
        trimmed = trim(spec, keep)
        dst = os.path.join(HERE, name.replace(".json", ".trimmed.json"))
        with open(dst, "w", encoding="utf-8") as f:
            json.dump(trimmed, f, indent=2, ensure_ascii=False)
            f.write("\n")
        n_ops = sum(len(m) for m in keep.values())
        n_comp = sum(len(v) for v in trimmed["components"].values())
        print(f"{os.path.relpath(dst)}: {n_ops} operations, {n_comp} components")


if __name__ == "__main__":
    main()
