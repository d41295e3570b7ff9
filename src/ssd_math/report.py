"""Render the study's Quarto report (``report/report.qmd``) to one self-contained HTML file.

:func:`render` runs ``quarto render`` when a ``quarto`` executable is on ``PATH`` (in a private
folder beside the output that mirrors the ``.qmd``'s, so from any working directory and leaving
nothing behind), else the offline engine below, on the SAME ``.qmd``, and writes
``<out_html>.meta.json`` naming the engine that ran, swapped in together with the page. The
cells of either engine see ``$SSD_MATH_RENDER_ENGINE`` (``quarto`` | ``offline``),
``$SSD_MATH_RENDER_ENGINE_VERSION`` and ``$SSD_MATH_RENDER_STARTED`` (UTC, ISO 8601); with
``stamp_param`` the same three values reach the document as one parameter instead (a JSON object:
``engine``, ``version``, ``started``), which is how ``report/report.qmd`` reads them.

``report/report.qmd`` reads its inputs through :class:`ReportInputs`: the manifest the report rule
writes (:func:`write_manifest`: each input's name and file) and the parts those files hold.

The offline engine: jupytext's R Markdown reader splits the ``.qmd`` into cells (it parses
```` ```{python} ```` chunks without the quarto binary), nbclient runs them on an ipykernel of
this interpreter, their outputs become pandoc markdown, and pandoc (``pypandoc-binary``) writes a
standalone page with every resource embedded and math as MathML. It implements what
``report.qmd`` uses, as Quarto renders it: front matter ``title``/``subtitle``/``author``/
``date`` (``today``, shown as Quarto's HTML shows it), ``toc``, ``toc-depth``, ``number-sections``,
``css`` (inlined) and ``execute:`` defaults (top level or under ``format: html:``); ``#|`` cell
options ``label``,
``echo``, ``warning``, ``output: asis``, ``fig-cap``, ``tbl-cap``, ``tags: [parameters]``;
parameters with papermill's semantics (the overrides in a cell injected after the one tagged
``parameters``); ``text/markdown``, ``image/png``, ``text/plain`` and stream outputs; inline
`` `{python} expr` ``; cross-reference divs (``::: {#fig-x}`` / ``::: {#tbl-x}`` around one
cell, the caption the paragraph after it: a caption with inline code, which ``#|`` options cannot
have under Jupyter); figures and tables labelled ``fig-``/``tbl-`` numbered once, in document
order ("Figure N: caption", a table's caption kept with the table even when the cell prints
more after it), and ``@fig-x``/``@tbl-x`` linked; ``metadata`` overrides (``-M``, e.g. title). A failing cell fails the render
naming its label and line. Anything else of Quarto (other formats, layouts, callouts, shortcodes,
per-cell ``eval``/``include``, citations) needs Quarto itself.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape as _esc
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "RenderError",
    "have_quarto",
    "quarto_command",
    "render",
    "render_qmd",
    "parse_qmd",
    "pipe_table",
    "parse_param_args",
    "main",
    "ReportInputs",
    "write_manifest",
    "provenance_panel",
]

_KERNEL_NAME = "ssd-math-python3"
_INLINE_MIME = "application/x-ssd-math-inline+json"
_INLINE_RE = re.compile(r"`\{python\}\s+([^`]+?)`")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_XREF_OPEN = re.compile(r"^:{3,}\s*\{\s*#((?:fig|tbl)-[\w-]*\w)\s*\}\s*$")  # ::: {#fig-x}
_XREF_CLOSE = re.compile(r"^:{3,}\s*$")
_PIPE_TABLE_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*\|", re.M)  # a pipe table's header separator line
_MD_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")  # ASCII punctuation: backslash-escaped, read literally


class RenderError(RuntimeError):
    """A render failed. For a failing cell, ``label``/``line``/``traceback`` say where and why."""

    def __init__(
        self, message: str, *, label: str | None = None, line: int | None = None, traceback: str | None = None
    ) -> None:
        super().__init__(message)
        self.label, self.line, self.traceback = label, line, traceback


def have_quarto() -> bool:
    """True when a ``quarto`` executable is on ``PATH``."""
    return shutil.which("quarto") is not None


def pipe_table(data: Any, *, floatfmt: str = ".3f", columns: Sequence[str] | None = None) -> str:
    """A pandoc pipe table (``tabulate(tablefmt="pipe")``) from a polars DataFrame, a list of
    dicts or a dict of lists, for report cells: ``display(Markdown(pipe_table(df)))``.

    Numeric columns (every value an int or float) are right-aligned, floats formatted with
    ``floatfmt``, ``None``/NaN shown as an em dash; a text cell is text, never markdown (its ASCII
    punctuation is backslash-escaped: no TeX math from ``$``, emphasis from ``*``, column break
    from ``|``); strings are never re-parsed as numbers.
    """
    from tabulate import tabulate

    if hasattr(data, "to_dicts"):  # polars
        rows, cols = data.to_dicts(), list(data.columns)
    elif isinstance(data, dict):
        cols = list(data)
        rows = [dict(zip(cols, vals)) for vals in zip(*data.values())]
    else:
        rows = [dict(r) for r in data]
        cols = list(rows[0]) if rows else []
    cols = list(columns) if columns is not None else cols

    def cell(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "\u2014"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v) if isinstance(v, (int, bool)) else _MD_PUNCT.sub(r"\\\1", str(v).replace("\n", " "))

    def numeric(c: str) -> bool:
        vals = [r.get(c) for r in rows if r.get(c) is not None]
        return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals)

    return (
        tabulate(
            [[cell(r.get(c)) for c in cols] for r in rows],
            headers=[str(c).replace("|", "\\|") for c in cols],
            tablefmt="pipe",
            colalign=["right" if numeric(c) else "left" for c in cols],
            disable_numparse=True,
        )
        + "\n"
    )


def parse_param_args(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` (or Quarto's ``key:value``) strings; values are read as YAML,
    as Quarto does for ``-P`` (``n=5`` gives an int, ``flag=true`` a bool)."""
    out: dict[str, Any] = {}
    for item in items:
        key, found, value = item.partition("=" if "=" in item else ":")
        key = key.strip()
        if not found or not key.isidentifier():
            raise ValueError(f"parameter must be key=value with a Python identifier key: {item!r}")
        out[key] = yaml.safe_load(value) if value.strip() else ""
    return out


# ---- the quarto engine (the command line is separate so it is testable without quarto) -------


def _quarto_value(value: Any) -> str:
    """A ``-P``/``-M`` value: Quarto reads the text after ``key:`` as YAML, so a string goes
    quoted (JSON is YAML): ``true``, ``1.0`` or ``a: b`` stay the strings they are."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value) if isinstance(value, (int, float)) else json.dumps(value, ensure_ascii=False)


def quarto_command(
    qmd: Path | str,
    out_name: str,
    params: dict[str, Any] | None = None,
    workdir: Path | str | None = None,
    *,
    quarto: str = "quarto",
    metadata: dict[str, Any] | None = None,
) -> list[str]:
    """The ``quarto render`` command line for one self-contained HTML file.

    ``out_name`` must be a bare file name, and the command must run with the ``.qmd``'s folder
    as its working directory: Quarto resolves a relative ``--output`` against the current
    directory and then writes it relative to the input's folder (src/command/render/output.ts),
    so from anywhere else the page and its ``<stem>_files/`` resources part ways.
    ``metadata`` become ``-M`` options (they override the front matter, e.g. ``title``).
    """
    if not out_name or Path(out_name).name != out_name or out_name in {".", ".."}:
        raise ValueError(f"quarto --output takes a file name, not a path: {out_name!r}")
    cmd = [quarto, "render", str(qmd), "--to", "html", "--output", out_name, "-M", "embed-resources:true"]
    for key, value in (metadata or {}).items():
        # a key Quarto does not read itself (title) goes to pandoc as is, and pandoc takes the
        # text after "key:" literally (quotes included): a string goes unquoted
        cmd += ["-M", f"{key}:{value if isinstance(value, str) else _quarto_value(value)}"]
    if workdir is not None:
        cmd += ["--execute-dir", str(Path(workdir).resolve())]
    for key, value in (params or {}).items():
        cmd += ["-P", f"{key}:{_quarto_value(value)}"]
    return cmd


def quarto_version(quarto: str = "quarto") -> str:
    return subprocess.run([quarto, "--version"], capture_output=True, text=True).stdout.strip()


def _render_quarto(
    qmd: Path,
    out_html: Path,
    params: dict[str, Any] | None,
    workdir: Path | None,
    timeout_s: int,
    env: dict[str, str],
    metadata: dict[str, Any] | None,
    out_name: str | None = None,
) -> dict[str, Any]:
    """``quarto render`` in a private folder beside ``out_html`` that mirrors the qmd's folder
    (nothing is written next to the source .qmd, concurrent renders cannot collide), cells run
    in ``workdir`` (default: the source qmd's folder, as without the copy); the page is then
    moved into place in one rename."""
    t0 = time.monotonic()
    quarto = shutil.which("quarto")
    assert quarto is not None
    out_html.parent.mkdir(parents=True, exist_ok=True)
    name = out_name or out_html.name
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.quarto-", dir=out_html.parent))
    try:
        # the stage holds a copy of the qmd and a symlink to every other entry of its folder
        # (css, images): relative paths resolve as in the source, Quarto's own files (the
        # output, <stem>_files/, the intermediate notebook) land in the stage
        src = stage / "src"
        src.mkdir()
        shutil.copy2(qmd, src / qmd.name)
        for entry in qmd.parent.iterdir():
            if entry.name not in {qmd.name, f"{qmd.stem}_files", ".quarto"}:
                (src / entry.name).symlink_to(entry)
        cmd = quarto_command(src / qmd.name, name, params, workdir or qmd.parent, quarto=quarto, metadata=metadata)
        # the kernel and papermill run on this interpreter (the venv with the report's packages),
        # not on whichever python3 PATH finds first
        run_env = {**os.environ, "QUARTO_PYTHON": os.environ.get("QUARTO_PYTHON") or sys.executable, **env}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=run_env, cwd=src)
        except subprocess.TimeoutExpired as exc:
            raise RenderError(f"quarto render took longer than {timeout_s} s") from exc
        produced = src / name
        if proc.returncode != 0:
            raise RenderError(f"quarto render failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        if not produced.is_file():
            raise RenderError(
                f"quarto reported success but wrote no {name} (a Quarto project with "
                f"output-dir is not supported here):\n{proc.stderr[-2000:]}"
            )
        os.replace(produced, out_html)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    warnings = [ln.strip() for ln in proc.stderr.splitlines() if re.match(r"\s*(WARN|WARNING)\b", ln)]
    return {
        "engine": "quarto",
        "engine_version": quarto_version(quarto),
        "command": cmd,
        "cells_executed": None,
        "warnings": warnings,
        "seconds": round(time.monotonic() - t0, 3),
    }


# ---- the offline engine ----------------------------------------------------------------------


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


def _html_opts(meta: dict[str, Any]) -> dict[str, Any]:
    """The front matter with ``format: html:`` merged over the top level, as Quarto reads it."""
    fmt = meta.get("format")
    html = fmt.get("html") if isinstance(fmt, dict) else None
    return {**meta, **html} if isinstance(html, dict) else dict(meta)


def _kernel_spec_dir(tmp: Path, env: dict[str, str]) -> Path:
    """A kernel spec whose argv runs this very interpreter (the venv's python)."""
    kdir = tmp / "kernels" / _KERNEL_NAME
    kdir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
        "env": {
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            **env,
        },
        "metadata": {"debugger": False},
    }
    (kdir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return kdir.parent


def _inline_source(exprs: list[str]) -> str:
    """A cell displaying each inline expression (under one private mime type): its markdown when it
    has one (``IPython.display.Markdown``: placed as markdown, as Quarto does), else its str()."""
    return (
        f"from IPython.display import display as __d\n"
        f"__d({{{_INLINE_MIME!r}: [__v._repr_markdown_() if hasattr(__v, '_repr_markdown_') else str(__v) "
        f"for __v in [{', '.join(f'({e})' for e in exprs)}]]}}, raw=True)\n"
        "del __d\n"
    )


def _fence(text: str, info: str) -> str:
    return f"````{info}\n{_ANSI_RE.sub('', text).rstrip(chr(10))}\n````"


def _text(v: Any) -> str:
    return "".join(v) if isinstance(v, list) else str(v)


def _cell_markdown(cell: Cell, outputs: list[dict[str, Any]], number: str | None, warnings: list[str]) -> list[str]:
    """The markdown blocks of one executed code cell: its code (``echo``), then its outputs."""
    opts, label = cell.options, str(cell.options.get("label", f"line-{cell.line}"))
    asis = opts.get("output") == "asis"
    blocks = [_fence(cell.source, " {.python .cell-code}")] if opts.get("echo", True) else []
    prefix = f"{number}: " if number else ""
    table_at: int | None = None  # index of the block holding the cell's table
    merged: list[dict[str, Any]] = []  # consecutive stream outputs of one name joined
    for out in outputs:
        if out["output_type"] == "stream" and merged and merged[-1].get("name") == out["name"]:
            merged[-1] = {**merged[-1], "text": _text(merged[-1]["text"]) + _text(out["text"])}
        else:
            merged.append(out)
    for out in merged:
        if out["output_type"] == "stream":
            text = _text(out["text"])
            if out["name"] == "stderr":
                if not opts.get("warning", True):
                    continue
                warnings.append(f"{label}: stderr: {_ANSI_RE.sub('', text).strip()[:300]}")
            blocks.append(
                text if asis and out["name"] == "stdout" else _fence(text, f" {{.{out['name']} .cell-output}}")
            )
            continue
        data = out.get("data", {})
        if "text/markdown" in data:
            text = _text(data["text/markdown"]).strip("\n")
            if table_at is None and (
                _PIPE_TABLE_RE.search(text)
                or not any(
                    "text/markdown" in o.get("data", {}) and _PIPE_TABLE_RE.search(_text(o["data"]["text/markdown"]))
                    for o in merged
                )
            ):
                table_at = len(blocks)  # the caption belongs to this block, not to what follows it
            blocks.append(text)
        elif "image/png" in data:
            cap = (prefix + str(opts.get("fig-cap", ""))).replace("[", "\\[").replace("]", "\\]")
            ident = f"{{#{label}}}" if label.startswith("fig-") else ""
            blocks.append(f"![{cap}](data:image/png;base64,{_text(data['image/png']).strip()}){ident}")
        elif "text/plain" in data:
            text = _text(data["text/plain"])
            blocks.append(text if asis else _fence(text, " {.cell-output}"))
    if opts.get("tbl-cap") and table_at is not None:
        # pandoc takes a ": caption" paragraph right after a table as its caption; anything
        # else between them (a note the cell prints after the table) would orphan it
        ident = f" {{#{label}}}" if label.startswith("tbl-") else ""
        blocks.insert(table_at + 1, f": {prefix}{opts['tbl-cap']}{ident}")
    return blocks


def _resolve_refs(md: str, numbers: dict[str, str], warnings: list[str]) -> str:
    """``@fig-x`` / ``@tbl-x`` in prose -> a link named by the figure's / table's number."""

    def ref(m: re.Match[str]) -> str:
        if m.group(1) in numbers:
            return f"[{numbers[m.group(1)]}](#{m.group(1)})"
        warnings.append(f"unresolved cross reference @{m.group(1)}")
        return f"**?{m.group(1)}**"

    return re.sub(r"(?<![\w@\\])@((?:fig|tbl)-[\w-]*\w)", ref, md)


def _expand_date(value: Any, date_format: Any = None) -> Any:
    """A front-matter date as Quarto's HTML title block shows it: ``today`` and dates in its
    default ``date-format: long`` (en-US, "December 6, 2026"), or ISO with ``date-format: iso``."""
    if isinstance(value, str) and value.strip() == "now":
        return _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    if isinstance(value, str):
        try:
            value = _dt.date.fromisoformat(value.strip()) if value.strip() != "today" else _dt.date.today()
        except ValueError:
            return value
    if isinstance(value, _dt.datetime):
        value = value.date()
    if not isinstance(value, _dt.date):
        return value
    return value.isoformat() if date_format == "iso" else f"{value:%B} {value.day}, {value.year}"


_CSS = """
body { max-width: 60em; }
table { border-collapse: collapse; margin: 1em auto; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; }
thead th { border-bottom: 2px solid #444; }
tbody tr:nth-child(even) { background: #f7f7f7; }
table caption, figcaption { color: #444; font-size: 0.92em; margin: 0.4em 0; }
figure { margin: 1.2em auto; text-align: center; }
figure img { max-width: 100%; height: auto; }
pre.cell-output, div.cell-output pre { background: #fafafa; border-left: 3px solid #ccc; }
pre.stderr, div.stderr pre { border-left-color: #d9a400; }
"""


def _offline_version() -> str:
    import nbclient
    import pypandoc

    return f"ssd_math.report offline (nbclient {nbclient.__version__}, pandoc {pypandoc.get_pandoc_version()})"


def render_qmd(
    qmd: Path,
    out_html: Path,
    *,
    params: dict | None = None,
    workdir: Path | None = None,
    timeout_s: int = 600,
    env: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict:
    """Render ``qmd`` to a self-contained ``out_html`` with the offline engine.

    Cells run on a fresh ipykernel of this interpreter, in ``workdir`` (default: the qmd's
    folder). ``params`` override the parameters cell (papermill semantics). ``timeout_s`` is
    the per-cell execution limit (nbclient's); ``env`` is added to the kernel's environment;
    ``metadata`` override the front matter (as Quarto's ``-M``).
    Returns an info dict (engine, cells executed, warnings, timings). Raises
    :class:`RenderError` on a failing cell, leaving no output.
    """
    import nbformat
    import pypandoc
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    t0 = time.monotonic()
    qmd, out_html = Path(qmd).resolve(), Path(out_html).resolve()
    workdir = Path(workdir).resolve() if workdir is not None else qmd.parent
    if not workdir.is_dir():
        raise RenderError(f"workdir does not exist: {workdir}")
    meta, cells = parse_qmd(qmd.read_text(encoding="utf-8"))
    cells = _crossref_divs(cells)
    h = {**_html_opts(meta), **(metadata or {})}
    defaults = h.get("execute") if isinstance(h.get("execute"), dict) else {}
    overrides, warnings = dict(params or {}), []

    # the notebook: every code cell, the injected parameters (a code cell of the document, as
    # in Quarto's), one cell per prose chunk's inline expressions
    injected = Cell("code", "# injected parameters\n" + "\n".join(f"{k} = {v!r}" for k, v in overrides.items()), 1)
    params_cell = next((c for c in cells if "parameters" in (c.options.get("tags") or [])), None)
    if params_cell is not None:
        injected.line, injected.options = params_cell.line, {**params_cell.options, "tags": ["injected-parameters"]}
    if overrides:
        cells.insert(next((i + 1 for i, c in enumerate(cells) if c is params_cell), 0), injected)
    runs: list[tuple[Cell, str]] = []
    captions: dict[int, Cell] = {}  # id(code cell) -> the run evaluating its caption's inline code
    for cell in cells:
        if cell.kind == "code":
            cell.options = {**defaults, **cell.options}
            runs.append((cell, cell.source))
            caps = " ".join(str(cell.options.get(k, "")) for k in ("fig-cap", "tbl-cap"))
            if exprs := [m.group(1).strip() for m in _INLINE_RE.finditer(caps)]:
                captions[id(cell)] = Cell("caption", "", cell.line)
                runs.append((captions[id(cell)], _inline_source(exprs)))
        elif exprs := [m.group(1).strip() for m in _INLINE_RE.finditer(cell.source)]:
            runs.append((cell, _inline_source(exprs)))
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": _KERNEL_NAME, "display_name": "Python", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(src) for _, src in runs]

    t_exec = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ssd-report-") as tmp_s:
        tmp = Path(tmp_s)
        ksm = KernelSpecManager(
            kernel_dirs=[str(_kernel_spec_dir(tmp, {"SSD_MATH_RENDER_ENGINE": "offline", **(env or {})}))]
        )
        km = AsyncKernelManager(kernel_name=_KERNEL_NAME, kernel_spec_manager=ksm)
        if os.name == "posix":  # local unix sockets in our temp dir instead of TCP ports
            km.transport, km.ip = "ipc", str(tmp / "kernel")
        client = NotebookClient(
            nb,
            km=km,
            timeout=timeout_s,
            startup_timeout=120,
            allow_errors=False,
            record_timing=False,
            resources={"metadata": {"path": str(workdir)}},
        )
        with client.setup_kernel(cwd=str(workdir), cleanup_kc=True):  # shuts the kernel down
            for idx, ((cell, _), nbcell) in enumerate(zip(runs, nb.cells)):
                try:
                    client.execute_cell(nbcell, idx)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                    label = (
                        str(cell.options.get("label", "unlabeled")) if cell.kind == "code" else "inline expression(s)"
                    )
                    tb = _ANSI_RE.sub("", str(exc))
                    raise RenderError(
                        f"{qmd.name}: cell '{label}' (line {cell.line}) failed:\n{tb}",
                        label=label,
                        line=cell.line,
                        traceback=tb,
                    ) from None
    t_exec = time.monotonic() - t_exec

    # markdown: figures and tables numbered in document order, inline values substituted
    outputs = {id(cell): nbcell.get("outputs", []) for (cell, _), nbcell in zip(runs, nb.cells)}

    def inline_values(cell: Cell) -> Iterator[str]:
        return iter(
            next((o["data"][_INLINE_MIME] for o in outputs.get(id(cell), []) if _INLINE_MIME in o.get("data", {})), [])
        )

    for cell in cells:  # a caption's inline code (a cross-reference div's caption), substituted
        if id(cell) in captions:
            values = inline_values(captions[id(cell)])
            for k in ("fig-cap", "tbl-cap"):
                if k in cell.options:
                    cell.options[k] = _INLINE_RE.sub(lambda m, values=values: next(values, "??"), str(cell.options[k]))
    numbers: dict[str, str] = {}
    for cell in cells:
        label = str(cell.options.get("label", ""))
        for kind, name in (("fig", "Figure"), ("tbl", "Table")):
            if label.startswith(f"{kind}-") and cell.options.get(f"{kind}-cap"):
                numbers[label] = f"{name} {sum(n.startswith(name) for n in numbers.values()) + 1}"
    parts: list[str] = []
    for cell in cells:
        if cell.kind == "markdown":
            values = inline_values(cell)
            parts.append(
                _resolve_refs(
                    _INLINE_RE.sub(lambda m, values=values: next(values, "??"), cell.source), numbers, warnings
                )
            )
            continue
        blocks = _cell_markdown(cell, outputs[id(cell)], numbers.get(str(cell.options.get("label"))), warnings)
        if blocks:
            parts += ["::::::: {.cell}", *blocks, ":::::::"]
    unknown = sorted(set(overrides) - set(re.findall(r"^(\w+)\s*=", params_cell.source, re.M))) if params_cell else []
    if unknown:
        warnings.append(f"parameters not defined in the parameters cell: {unknown}")

    t_pd = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ssd-report-pd-") as tmp_s:
        tmp = Path(tmp_s)
        pmeta = {k: h[k] for k in ("title", "subtitle", "author") if h.get(k) is not None}
        if h.get("date") is not None:
            pmeta["date"] = _expand_date(h["date"], h.get("date-format"))
        if "title" not in pmeta:
            pmeta["pagetitle"] = qmd.stem
        (tmp / "meta.yaml").write_text(yaml.safe_dump(pmeta, allow_unicode=True))
        css = [_CSS]
        for name in h.get("css") if isinstance(h.get("css"), list) else [h["css"]] if h.get("css") else []:
            if not (qmd.parent / name).is_file():
                raise RenderError(f"{qmd.name}: css file not found: {qmd.parent / name}")
            css.append((qmd.parent / name).read_text(encoding="utf-8"))
        (tmp / "style.html").write_text(f"<style>{''.join(css)}</style>\n")
        args = [
            "--standalone",
            "--embed-resources",
            "--mathml",
            f"--metadata-file={tmp / 'meta.yaml'}",
            f"--include-in-header={tmp / 'style.html'}",
            f"--resource-path={os.pathsep.join(dict.fromkeys([str(qmd.parent), str(workdir)]))}",
        ]
        if h.get("toc"):
            args += ["--toc", *([f"--toc-depth={int(h['toc-depth'])}"] if h.get("toc-depth") else [])]
        if h.get("number-sections"):
            args.append("--number-sections")
        out_html.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out_html.with_name(f".{out_html.name}.tmp-{os.getpid()}")
        try:
            pypandoc.convert_text(
                "\n\n".join(parts) + "\n",
                "html5",
                format="markdown",
                extra_args=args,
                outputfile=str(tmp_out),
                cworkdir=str(qmd.parent),
            )
            os.replace(tmp_out, out_html)
        except RuntimeError as exc:
            raise RenderError(f"pandoc failed: {exc}") from exc
        finally:
            tmp_out.unlink(missing_ok=True)
    return {
        "engine": "offline",
        "engine_version": _offline_version(),
        "kernel_python": sys.executable,
        "qmd": str(qmd),
        "output": str(out_html),
        "workdir": str(workdir),
        "params": overrides,
        "cells_executed": sum(c.kind == "code" for c in cells),
        "warnings": warnings,
        "seconds": round(time.monotonic() - t0, 3),
        "seconds_execute": round(t_exec, 3),
        "seconds_pandoc": round(time.monotonic() - t_pd, 3),
    }


# ---- engine choice + sidecar -----------------------------------------------------------------


def render(
    qmd: Path | str,
    out_html: Path | str,
    params: dict | None = None,
    workdir: Path | str | None = None,
    *,
    engine: str = "auto",
    timeout_s: int = 600,
    metadata: dict[str, Any] | None = None,
    stamp_param: str | None = None,
    config_hash: str | None = None,
) -> dict:
    """Render with Quarto when it is installed (``engine="auto"``), else offline.

    Writes ``<out_html>.meta.json`` recording the engine that actually ran. ``engine`` may
    force ``"quarto"`` (error if missing) or ``"offline"``. ``metadata`` override the front
    matter (Quarto's ``-M``; e.g. ``{"title": ...}``). The page is rendered to a temporary file
    beside ``out_html`` and the pair is swapped in only after a successful render: the old
    sidecar goes first, then the page, then the new sidecar, so a sidecar present always
    describes the page present; a failed render leaves the previous pair as it was, and a
    sidecar whose page is gone (a build system deleted it) is removed before anything runs.
    ``stamp_param`` names a parameter that receives the engine, its version and the start time
    (a JSON object as a string); ``config_hash`` is recorded in the sidecar.
    """
    qmd, out_html = Path(qmd).resolve(), Path(out_html).resolve()
    wd = Path(workdir).resolve() if workdir is not None else None
    if engine not in {"auto", "quarto", "offline"}:
        raise ValueError(f"engine must be auto, quarto or offline, not {engine!r}")
    use_quarto = engine == "quarto" or (engine == "auto" and have_quarto())
    meta_path = out_html.with_name(out_html.name + ".meta.json")
    if not out_html.exists():
        meta_path.unlink(missing_ok=True)  # stale: describes a page that is not there
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    out_html.parent.mkdir(parents=True, exist_ok=True)
    tmp_html = out_html.with_name(f".{out_html.name}.rendering-{os.getpid()}")
    try:
        if use_quarto:
            if not have_quarto():
                raise RenderError("engine='quarto' requested but no quarto executable on PATH")
            env = {
                "SSD_MATH_RENDER_ENGINE": "quarto",
                "SSD_MATH_RENDER_STARTED": started,
                "SSD_MATH_RENDER_ENGINE_VERSION": f"Quarto {quarto_version(shutil.which('quarto'))}",
            }
            params = _stamped(params, stamp_param, env)
            info = _render_quarto(qmd, tmp_html, params, wd, timeout_s, env, metadata, out_name=out_html.name)
            info.update({"qmd": str(qmd), "workdir": str(wd or qmd.parent), "params": dict(params or {})})
        else:
            env = {
                "SSD_MATH_RENDER_ENGINE": "offline",
                "SSD_MATH_RENDER_STARTED": started,
                "SSD_MATH_RENDER_ENGINE_VERSION": _offline_version(),
            }
            params = _stamped(params, stamp_param, env)
            info = render_qmd(qmd, tmp_html, params=params, workdir=wd, timeout_s=timeout_s, env=env, metadata=metadata)
        info["output"] = str(out_html)
        info["metadata"] = dict(metadata or {})
        info["render_started"] = started
        info["rendered_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        info["config_hash"] = config_hash
        tmp_meta = meta_path.with_name(f".{meta_path.name}.tmp-{os.getpid()}")
        tmp_meta.write_text(json.dumps(info, indent=2, default=str) + "\n")
        meta_path.unlink(missing_ok=True)
        os.replace(tmp_html, out_html)
        os.replace(tmp_meta, meta_path)
    finally:
        tmp_html.unlink(missing_ok=True)
    return info


def _stamped(params: dict | None, name: str | None, env: Mapping[str, str]) -> dict | None:
    if name is None:
        return params
    stamp = {
        "engine": env["SSD_MATH_RENDER_ENGINE"],
        "version": env["SSD_MATH_RENDER_ENGINE_VERSION"],
        "started": env["SSD_MATH_RENDER_STARTED"],
    }
    return {**(params or {}), name: json.dumps(stamp, ensure_ascii=False)}


# ---- what report.qmd reads ---------------------------------------------------------------------


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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssd_math.report QMD OUT.html [-P key=value ...] [--workdir D] [--engine E]``."""
    ap = argparse.ArgumentParser(prog="python -m ssd_math.report", description=__doc__.split("\n")[0])
    ap.add_argument("qmd", type=Path)
    ap.add_argument("out_html", type=Path)
    ap.add_argument(
        "-P",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="parameter override (value read as YAML); repeatable",
    )
    ap.add_argument(
        "-M",
        "--metadata",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="front-matter override, e.g. title=... (value read as YAML); repeatable",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="the cells' working directory (default: the qmd's)")
    ap.add_argument("--engine", choices=["auto", "quarto", "offline"], default="auto")
    ns = ap.parse_args(argv)
    try:
        info = render(
            ns.qmd,
            ns.out_html,
            parse_param_args(ns.param),
            ns.workdir,
            engine=ns.engine,
            metadata=parse_param_args(ns.metadata),
        )
    except (RenderError, ValueError) as exc:
        print(f"render failed: {exc}", file=sys.stderr)
        return 1
    for w in info.get("warnings") or []:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{info['engine']}: wrote {info['output']} ({info.get('cells_executed')} cells, {info['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
