"""Heap by caller from a massif.out file: for one detailed snapshot (default: the
peak, or `last`), the bytes of each allocation tree attributed to the first frame
that matches PATTERN (default `smsgate::`) on the way from the allocator to main.
Usage: python3 bench/lib/massif_by_caller.py massif.out.PID [peak|last|N] [PATTERN]"""
import re
import sys
from collections import Counter

path = sys.argv[1]
which = sys.argv[2] if len(sys.argv) > 2 else "peak"
pattern = sys.argv[3] if len(sys.argv) > 3 else "smsgate::"
lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
snaps = []  # (index, kind, start line, total)
i = 0
cur = None
while i < len(lines):
    line = lines[i]
    if line.startswith("snapshot="):
        cur = {"n": int(line.split("=")[1]), "heap": 0, "tree": None, "kind": None}
        snaps.append(cur)
    elif line.startswith("mem_heap_B=") and cur is not None:
        cur["heap"] = int(line.split("=")[1])
    elif line.startswith("heap_tree=") and cur is not None:
        cur["kind"] = line.split("=")[1]
        if cur["kind"] in ("detailed", "peak"):
            cur["tree"] = i + 1
    i += 1
detailed = [s for s in snaps if s["tree"] is not None]
if which == "peak":
    snap = next((s for s in detailed if s["kind"] == "peak"), detailed[-1])
elif which == "last":
    snap = detailed[-1]
else:
    snap = next(s for s in detailed if s["n"] == int(which))
node_re = re.compile(r"^(\s*)n(\d+): (\d+) (.*)$")


def parse(at):
    m = node_re.match(lines[at])
    kids = int(m.group(2))
    node = {"bytes": int(m.group(3)), "fn": m.group(4), "kids": []}
    at += 1
    for _ in range(kids):
        child, at = parse(at)
        node["kids"].append(child)
    return node, at


root, _ = parse(snap["tree"])
out = Counter()


def walk(node, inherited=None):
    if inherited is None and pattern in node["fn"]:
        name = re.sub(r"^0x[0-9A-F]+: ", "", node["fn"])
        name = re.sub(r" \(.*\)$", "", name)
        out[name] += node["bytes"]
        return
    if not node["kids"]:
        out["(no " + pattern + " frame: " + re.sub(r"^0x[0-9A-F]+: ", "", node["fn"])[:90] + ")"] += node["bytes"]
        return
    for k in node["kids"]:
        walk(k)


for k in root["kids"]:
    walk(k)
print(f"snapshot {snap['n']} ({snap['kind']}): heap {snap['heap'] / 2**20:.1f} MiB")
for name, b in out.most_common(25):
    print(f"{b / 2**20:8.2f} MiB  {name[:150]}")
