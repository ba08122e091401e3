"""Named sections of docs/benchmarks.md that separate benchmarks write (handover, real
control plane), kept when bench.run rewrites the rest of the file."""

import re

NAMES = ("handover", "realcp", "realcp-delete", "floor")


def _pattern(name: str) -> str:
    return re.escape(f"<!-- {name} -->") + ".*?" + re.escape(f"<!-- /{name} -->")


def wrap(name: str, body: str) -> str:
    return f"<!-- {name} -->\n{body}\n<!-- /{name} -->"


def section_of(text: str, name: str) -> str | None:
    found = re.search(_pattern(name), text, flags=re.S)
    return found.group(0) if found else None


def with_section(text: str, name: str, section: str) -> str:
    """``text`` with its section ``name`` replaced by ``section`` (or added before the
    notes)."""
    if section_of(text, name) is not None:
        return re.sub(_pattern(name), lambda _: section, text, flags=re.S)
    return text.replace("\n## Scenarios", f"\n{section}\n\n## Scenarios", 1)


def keeping_sections(new_text: str, old_text: str) -> str:
    """``new_text`` with every named section of ``old_text`` carried over."""
    for name in NAMES:
        kept = section_of(old_text, name)
        if kept is not None:
            new_text = with_section(new_text, name, kept)
    return new_text
