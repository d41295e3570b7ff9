"""Read a ``.qmd`` for the offline engine (:mod:`ssd_math.qmd_render`): its front matter and its
markdown / python cells (jupytext's R Markdown reader, no quarto binary) with the ``#|`` options
of each cell, and Quarto's cross-reference divs turned into their cell's label and caption.
:class:`RenderError` is the error of a render by either engine (:mod:`ssd_math.report` raises it
for Quarto too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = ["RenderError", "Cell", "parse_qmd"]

_XREF_OPEN = re.compile(r"^:{3,}\s*\{\s*#((?:fig|tbl)-[\w-]*\w)\s*\}\s*$")  # ::: {#fig-x}
_XREF_CLOSE = re.compile(r"^:{3,}\s*$")


class RenderError(RuntimeError):
    """A render failed. For a failing cell, ``label``/``line``/``traceback`` say where and why."""

    def __init__(
        self, message: str, *, label: str | None = None, line: int | None = None, traceback: str | None = None
    ) -> None:
        super().__init__(message)
        self.label, self.line, self.traceback = label, line, traceback


@dataclass
class Cell:
    kind: str  # "markdown" | "code"
    source: str  # markdown text, or code without its #| lines
    line: int  # 1-based line of the cell's first line in the .qmd
    options: dict[str, Any] = field(default_factory=dict)


def _yaml_mapping(text: str, what: str, line: int | None = None) -> dict[str, Any]:
    try:
        value = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RenderError(f"invalid {what}: {exc}", line=line) from exc
    if not isinstance(value, dict):
        raise RenderError(f"{what} is not a YAML mapping", line=line)
    return value


def parse_qmd(text: str) -> tuple[dict[str, Any], list[Cell]]:
    """The front matter and the markdown / python cells of a .qmd (jupytext's Rmd reader)."""
    import jupytext

    meta: dict[str, Any] = {}
    cells: list[Cell] = []
    cursor = 0
    for nbcell in jupytext.reads(text, fmt="Rmd").cells:
        src = nbcell.source
        pos = text.find(src.splitlines()[0] if src else "", cursor)
        line = text.count("\n", 0, max(pos, cursor)) + 1
        cursor = max(pos + 1, cursor)
        if nbcell.cell_type == "raw" and not cells and not meta and src.startswith("---"):
            meta = _yaml_mapping(src.strip().strip("-"), "YAML front matter")
        elif nbcell.cell_type == "code":
            lines = src.splitlines()
            n_opt = next((i for i, s in enumerate(lines) if not s.lstrip().startswith("#|")), len(lines))
            opts = _yaml_mapping(
                "\n".join(s.lstrip()[2:] for s in lines[:n_opt]), f"'#|' cell options at line {line}", line
            )
            cells.append(Cell("code", "\n".join(lines[n_opt:]), line - 1, opts))
        elif src.strip():
            cells.append(Cell("markdown", src, line))
    return meta, cells


def _crossref_divs(cells: list[Cell]) -> list[Cell]:
    """Quarto's cross-reference divs around one code cell, as that cell's label and caption::

        ::: {#fig-x}                  (or {#tbl-x})

        ```{python}
        display(Image(...))
        ```

        The caption, where `{python} level` may be inline code.

        :::

    becomes the code cell with ``label: fig-x`` and ``fig-cap: The caption, ...`` (Quarto takes
    the div's last paragraph as the float's caption: quarto-pre/parsefiguredivs.lua). Unlike a
    ``#|`` option, the caption is prose, so Quarto evaluates its inline code: the way to a
    computed caption with the Jupyter engine. Any other shape is a :class:`RenderError`."""
    for i, cell in enumerate(cells):
        lines = cell.source.rstrip("\n").split("\n") if cell.kind == "markdown" else []
        opens = [(k, m) for k, s in enumerate(lines) if (m := _XREF_OPEN.match(s.strip()))]
        if not opens:
            continue
        k, m = opens[0]
        label, line = m.group(1), cell.line + k
        if k != len(lines) - 1:  # the div closes before any cell
            raise RenderError(
                f"cross-reference div #{label} (line {line}): the offline engine takes one python "
                "cell, then its caption paragraph, then ':::'",
                label=label,
                line=line,
            )
        code, after = (cells[i + 1 : i + 3] + [None, None])[:2]
        close = (
            next((k for k, s in enumerate(after.source.split("\n")) if _XREF_CLOSE.match(s.strip())), None)
            if after is not None and after.kind == "markdown"
            else None
        )
        if code is None or code.kind != "code" or close is None:
            raise RenderError(
                f"cross-reference div #{label} (line {line}): the offline engine takes one python "
                "cell, then its caption paragraph, then ':::'",
                label=label,
                line=line,
            )
        after_lines = after.source.split("\n")
        paras = [p.strip() for p in re.split(r"\n\s*\n", "\n".join(after_lines[:close])) if p.strip()]
        if len(paras) != 1:
            raise RenderError(
                f"cross-reference div #{label} (line {line}): one caption paragraph after its cell, found {len(paras)}",
                label=label,
                line=line,
            )
        kind = label.split("-", 1)[0]
        if "label" in code.options or f"{kind}-cap" in code.options:
            raise RenderError(
                f"cross-reference div #{label} (line {line}): its cell has its own label or {kind}-cap",
                label=label,
                line=line,
            )
        code.options = {**code.options, "label": label, f"{kind}-cap": " ".join(paras[0].split())}
        cell.source = "\n".join(lines[:-1])
        after.source = "\n".join(after_lines[close + 1 :])
    return [c for c in cells if c.kind == "code" or c.source.strip()]
