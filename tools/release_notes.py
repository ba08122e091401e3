#!/usr/bin/env python3
"""The CHANGELOG's section for one version, as the GitHub release's notes:

python3 tools/release_notes.py [v]X.Y.Z
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def section(changelog: str, version: str) -> str:
    headings = list(re.finditer(r"(?m)^## (\S+).*$", changelog))
    for index, heading in enumerate(headings):
        if heading.group(1) == version:
            end = headings[index + 1].start() if index + 1 < len(headings) else len(changelog)
            return changelog[heading.end() : end].strip() + "\n"
    raise SystemExit(f"release_notes: CHANGELOG.md has no '## {version}' section")


if __name__ == "__main__":
    print(section((ROOT / "CHANGELOG.md").read_text(), sys.argv[1].removeprefix("v")), end="")
