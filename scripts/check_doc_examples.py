#!/usr/bin/env python3
"""Lists public items of the library whose rustdoc has no code example.

The project's rule is that every public item has one (rustdoc's own lint for this,
`missing_doc_code_examples`, is nightly-only). Exits 1 when any is missing.
"""
import glob
import re
import sys

ITEM = re.compile(r"\s*pub (?:unsafe )?(fn|struct|enum|trait|type|const|static) (\w+)")

missing = []
for path in sorted(glob.glob("src/**/*.rs", recursive=True)):
    if path.startswith("src/cli") or path == "src/main.rs":
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
