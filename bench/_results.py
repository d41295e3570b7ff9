"""One writer for the heading-delimited sections of bench/RESULTS.md (benches without markers).

A section runs from its ``## <name>`` heading to the next ``## `` heading or the next
``<!-- `` marker line (the start of a marker-delimited section another bench owns), so replacing
one never eats a neighbour's markers. Missing sections are appended."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(name: str, text: str, path: Path = RESULTS) -> None:
    old = path.read_text() if path.exists() else "# Benchmark results\n\n"
    pat = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |^<!-- |\Z)", re.S | re.M)
    new = pat.sub(lambda _: text.rstrip() + "\n\n", old, count=1) if pat.search(old) else old.rstrip() + "\n\n" + text
    path.write_text(new.rstrip() + "\n")
