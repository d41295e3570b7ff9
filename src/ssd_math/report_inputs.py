"""What ``report/report.qmd`` reads: the report rule's inputs by name (:func:`write_manifest`
writes the manifest, :class:`ReportInputs` reads it back with the strings of rule report_parts'
``parts`` file) and the page's provenance panel (:func:`provenance_panel`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from html import escape as _esc
from pathlib import Path
from typing import Any

__all__ = ["ReportInputs", "write_manifest", "provenance_panel"]


def write_manifest(path: Path | str, inputs: Mapping[str, Any]) -> Path:
    """The report rule's inputs as the page reads them: ``{"inputs": {name: file or [files]}}``,
    each file relative to the manifest's folder (the page resolves them from there, wherever it
    renders)."""
    path = Path(path).resolve()

    def rel(f: Any) -> Any:
        return [rel(x) for x in f] if isinstance(f, (list, tuple)) else os.path.relpath(Path(f).resolve(), path.parent)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"inputs": {k: rel(v) for k, v in inputs.items()}}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def provenance_panel(rows: Sequence[Sequence[str]], n_sidecars: Any, stamp: Mapping[str, str] | None) -> str:
    """The page's provenance panel (HTML): the rows of rule report_parts (their values already
    HTML) and the renderer's row from the render ``stamp``."""
    st = stamp or {}
    engine = st.get("engine", "unknown")
    rendered = (
        f"{_esc(st.get('started', 'unknown'))} by the "
        f"{'Quarto' if engine == 'quarto' else _esc(engine)} engine"
        + (f" ({_esc(st['version'])})" if st.get("version") else "")
    )
    return (
        '<div class="provenance"><strong>Provenance</strong> (from the sidecars of '
        f"{n_sidecars} inputs, git, and the renderer)<dl>"
        + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in [*rows, ("rendered", rendered)])
        + "</dl></div>"
    )


class ReportInputs:
    """What ``report/report.qmd`` reads, by name: the files of the report rule's manifest
    (:func:`write_manifest`) and the strings of its ``parts`` file (rule report_parts). A cell only
    places them: ``P.md("table1")``, ``print(P.text("findings"))``, ``P.image("figure_a")``."""

    def __init__(self, manifest: Path | str, stamp: str | Mapping[str, str] | None = None) -> None:
        if not manifest:
            raise ValueError(
                "the report needs its manifest (parameter 'manifest': the report rule's report_inputs.json)"
            )
        self.manifest = Path(manifest).resolve()
        doc = json.loads(self.manifest.read_text("utf-8"))
        self.inputs = doc["inputs"]
        self.stamp = json.loads(stamp) if isinstance(stamp, str) and stamp else (stamp or None)
        self.parts = json.loads(self.path("parts").read_text("utf-8"))

    def path(self, name: str) -> Path:
        if name not in self.inputs:
            raise KeyError(f"{self.manifest}: no input named {name!r} (has: {', '.join(self.inputs)})")
        return self.manifest.parent / self.inputs[name]

    def __getitem__(self, key: str) -> Any:
        if key not in self.parts:
            raise KeyError(f"{self.path('parts')}: no part named {key!r}")
        return self.parts[key]

    def md(self, key: str):
        from IPython.display import Markdown

        return Markdown(self[key])

    def show(self, *keys: str) -> None:
        """Display the parts one after another (one cell, several outputs)."""
        from IPython.display import display

        display(*(self.md(k) for k in keys))

    def text(self, name: str) -> str:
        return self.path(name).read_text("utf-8")

    def file_md(self, name: str):
        """A Markdown file of the manifest (a fragment another rule wrote), placed as markdown."""
        from IPython.display import Markdown

        return Markdown(self.text(name).strip())

    def image(self, name: str):
        from IPython.display import Image

        return Image(filename=str(self.path(name)))

    def provenance(self):
        """The provenance panel (raw HTML, placed as markdown)."""
        from IPython.display import Markdown

        return Markdown(provenance_panel(self["provenance_rows"], self["n_sidecars"], self.stamp))
