#!/usr/bin/env python3
"""Lists public items of the library whose rustdoc has no code example.

The project's rule is that every public item has one (rustdoc's own lint for this,
`missing_doc_code_examples`, is nightly-only). Exits 1 when any is missing.
"""
import glob
import re
import sys

ITEM = re.compile(r"\s*pub (?:unsafe )?(fn|struct|enum|trait|type|const|static) (\w+)")

MOD = re.compile(r"^(pub(?:\(crate\)|\(super\))? )?mod (\w+);", re.M)


def private_files():
    """Files of modules that are not public (`mod x;` or `pub(crate) mod x;`), and
    everything below them: their items are not public API, whatever they say."""
    private = set()
    for parent in sorted(glob.glob("src/**/*.rs", recursive=True)):
        base = parent[: -len("mod.rs")] if parent.endswith("mod.rs") else (
            "src/" if parent == "src/lib.rs" else parent[:-3] + "/")
        for m in MOD.finditer(open(parent, encoding="utf-8").read()):
            if m.group(1) != "pub ":
                private.add(base + m.group(2))
    return private


PRIVATE = private_files()
missing = []
for path in sorted(glob.glob("src/**/*.rs", recursive=True)):
    if path.startswith("src/cli") or path == "src/main.rs":
        continue
    if any(path == p + ".rs" or path.startswith(p + "/") for p in PRIVATE):
        continue
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        m = ITEM.match(line)
        if not m:
            continue
        j, doc = i - 1, []
        while j >= 0 and lines[j].strip().startswith(("///", "#[")):
            doc.append(lines[j])
            j -= 1
        if "```" not in "\n".join(doc):
            missing.append(f"{path}:{i + 1}: pub {m.group(1)} {m.group(2)} has no example")

print("\n".join(missing) if missing else "every public item has an example")
sys.exit(1 if missing else 0)
