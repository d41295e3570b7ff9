"""Render the study's Quarto report (``report/report.qmd``) to one self-contained HTML file.

Two engines render the SAME ``.qmd``:

* ``quarto`` -- the real thing, used whenever a ``quarto`` executable is on ``PATH``
  (``quarto render QMD --to html --output NAME -M embed-resources:true -P key:value ...``).
* ``offline`` -- an honest, documented *subset* of Quarto's Jupyter engine, for machines and
  CI runners without Quarto: the ``.qmd`` is parsed here, its ``{python}`` cells are executed
  with nbclient on an ipykernel that runs *this* interpreter (``sys.executable``), the
  outputs are turned into pandoc markdown, and pandoc (bundled by ``pypandoc-binary``) writes a
  standalone HTML file with every resource embedded and math as MathML.

``render`` picks the engine and writes a sidecar ``<out_html>.meta.json`` recording which one
ran; nothing ever claims Quarto ran when it did not. The cells of either engine see which one runs
them and since when in ``$SSD_MATH_RENDER_ENGINE`` (``quarto`` | ``offline``),
``$SSD_MATH_RENDER_ENGINE_VERSION`` and ``$SSD_MATH_RENDER_STARTED`` (UTC, ISO 8601), so a
report can print its own provenance.

Quarto subset understood by the offline engine (anything else is passed to pandoc as-is or
reported in ``info["warnings"]``):

* front matter: ``title``, ``subtitle``, ``author``, ``date`` (``today``/``now`` expanded),
  ``abstract``, ``lang``, ``toc``, ``toc-depth``, ``toc-title``, ``number-sections`` (top level
  or under ``format: html:``), ``execute:`` defaults for the cell options below, ``fig-width``,
  ``fig-height``, ``fig-dpi`` (matplotlib defaults), ``params:`` (see below), ``css`` (a file
  or list of files, relative to the .qmd, inlined into the page's ``<style>``) and
  ``include-in-header`` (a file, a list of files, or ``{text: ...}`` entries, as Quarto takes
  them) -- both also at the top level or under ``format: html:``, as Quarto reads them;
* executable cells: fences ```` ```{python} ```` (3+ backticks); other ``{engine}`` fences are
  shown as plain code with a warning; ```` ```{{python}} ```` is shown literally;
* cell options as leading ``#|`` YAML lines: ``label``, ``echo`` (true/false), ``output``
  (true/false/``asis``), ``include``, ``eval``, ``warning`` (false drops the cell's stderr
  stream, where Python warnings are printed), ``error`` (true shows the traceback instead of
  failing the render), ``fig-cap`` (string, or list for several figures), ``fig-alt``,
  ``tbl-cap``, ``tags`` (``[parameters]`` marks the parameters cell);
* parameters (papermill semantics, like Quarto's Jupyter engine): the overrides passed in
  ``params`` are assigned in an injected cell placed right after the cell tagged
  ``parameters``; with no such cell, front-matter ``params:`` merged with the overrides are
  assigned in a cell at the top of the notebook;
* outputs, by priority: ``text/markdown`` (verbatim -- how tables are emitted, see
  :func:`pipe_table`), ``text/html`` (raw HTML), ``image/svg+xml``/``image/png``/``image/jpeg``
  (embedded as data URIs, captioned by ``fig-cap``), ``text/latex``, ``text/plain`` (code
  block); stdout/stderr streams as code blocks; an error fails the render naming the cell's
  label and line, with the traceback (Quarto's default);
* inline expressions `` `{python} expr` `` in prose, evaluated in document order;
* cross references: ``@fig-x``/``@tbl-x`` become "Figure N"/"Table N" links and the captions
  get the numbers; ``@sec-x`` becomes a link with the heading's text;
* shortcodes ``{{< meta key >}}`` and ``{{< pagebreak >}}`` (others are dropped, with a
  warning); callouts ``::: {.callout-note}`` etc. are styled divs.

Not supported offline (documented, not faked): other output formats, ``code-fold``/``code-tools``,
layout options (``layout-ncol``, columns, panels/tabsets), sub-figure captions, citations and
bibliographies, ``freeze``/caching, OJS/R/Julia cells, Quarto projects (``_quarto.yml``).
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

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
]

_KERNEL_NAME = "ssd-math-python3"
_INLINE_MIME = "application/x-ssd-math-inline+json"
_XREF_PLACEHOLDER = "\u27e6XREF:{}\u27e7"  # replaced by "Figure N: " / "Table N: "
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class RenderError(RuntimeError):
    """A render failed. For a failing cell, ``label``/``line``/``traceback`` say where and why."""

    def __init__(self, message: str, *, label: str | None = None, line: int | None = None,
                 traceback: str | None = None) -> None:
        super().__init__(message)
        self.label = label
        self.line = line
        self.traceback = traceback


# --------------------------------------------------------------------------------------------
# small public helpers
# --------------------------------------------------------------------------------------------


def have_quarto() -> bool:
    """True when a ``quarto`` executable is on ``PATH``."""
    return shutil.which("quarto") is not None


def pipe_table(data: Any, *, floatfmt: str = ".3f", columns: Sequence[str] | None = None) -> str:
    """A pandoc pipe table from a polars/pandas DataFrame, a list of dicts or a dict of lists.

    Meant for report cells: ``display(Markdown(pipe_table(df)))``. Numbers are right-aligned,
    floats formatted with ``floatfmt``, ``None``/NaN shown as an em dash, ``|`` escaped.
    """
    rows: list[dict[str, Any]]
    if hasattr(data, "to_dicts"):  # polars
        rows = data.to_dicts()
        cols = list(data.columns)
    elif hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas
        rows = data.to_dict(orient="records")
        cols = [str(c) for c in data.columns]
    elif isinstance(data, dict):
        cols = list(data)
        n = len(next(iter(data.values()))) if data else 0
        rows = [{c: data[c][i] for c in cols} for i in range(n)]
    else:
        rows = [dict(r) for r in data]
        cols = list(rows[0]) if rows else []
    if columns is not None:
        cols = list(columns)

    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "\u2014"
        if isinstance(v, bool):
            return str(v)
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    def numeric(c: str) -> bool:
        vals = [r.get(c) for r in rows if r.get(c) is not None]
        return bool(vals) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                  for v in vals)

    header = "| " + " | ".join(str(c).replace("|", "\\|") for c in cols) + " |"
    rule = "|" + "|".join("---:" if numeric(c) else ":---" for c in cols) + "|"
    body = ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join([header, rule, *body]) + "\n"


def parse_param_args(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``key=value`` (or Quarto's ``key:value``) strings; values are read as YAML,
    as Quarto does for ``-P`` (``n=5`` gives an int, ``flag=true`` a bool)."""
    out: dict[str, Any] = {}
    for item in items:
        sep = "=" if "=" in item else ":"
        key, found, value = item.partition(sep)
        key = key.strip()
        if not found or not key.isidentifier():
            raise ValueError(f"parameter must be key=value with a Python identifier key: {item!r}")
        out[key] = yaml.safe_load(value) if value.strip() else ""
    return out


# --------------------------------------------------------------------------------------------
# the quarto engine: command construction is separate so it can be tested without quarto
# --------------------------------------------------------------------------------------------


def _quarto_param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float, str)):
        return str(value)
    return json.dumps(value)  # JSON is YAML flow syntax, which Quarto parses for -P values


def quarto_command(qmd: Path | str, out_name: str, params: dict[str, Any] | None = None,
                   workdir: Path | str | None = None, *, quarto: str = "quarto") -> list[str]:
    """The ``quarto render`` command line for one self-contained HTML file.

    ``out_name`` must be a bare file name: Quarto's ``--output`` takes a name and writes it
    next to the input (or into a project's output dir), never to an arbitrary path.
    """
    if not out_name or Path(out_name).name != out_name or out_name in {".", ".."}:
        raise ValueError(f"quarto --output takes a file name, not a path: {out_name!r}")
    cmd = [quarto, "render", str(qmd), "--to", "html", "--output", out_name,
           "-M", "embed-resources:true"]
    if workdir is not None:
        cmd += ["--execute-dir", str(Path(workdir).resolve())]
    for key, value in (params or {}).items():
        cmd += ["-P", f"{key}:{_quarto_param_value(value)}"]
    return cmd


def quarto_version(quarto: str = "quarto") -> str:
    return subprocess.run([quarto, "--version"], capture_output=True, text=True).stdout.strip()


def _render_quarto(qmd: Path, out_html: Path, params: dict[str, Any] | None,
                   workdir: Path | None, timeout_s: int, env: dict[str, str] | None = None) -> dict[str, Any]:
    t0 = time.monotonic()
    quarto = shutil.which("quarto")
    assert quarto is not None
    tmp_name = f".{out_html.stem}.quarto-{os.getpid()}.html"
    cmd = quarto_command(qmd, tmp_name, params, workdir, quarto=quarto)
    produced = qmd.parent / tmp_name
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            raise RenderError(f"quarto render failed (exit {proc.returncode}):\n"
                              f"{proc.stderr[-4000:]}")
        if not produced.exists():
            raise RenderError(f"quarto reported success but {produced} is missing (a Quarto "
                              "project with output-dir is not supported here)")
        out_html.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out_html.with_name(f".{out_html.name}.tmp-{os.getpid()}")
        shutil.copyfile(produced, tmp_out)
        os.replace(tmp_out, out_html)
    finally:
        produced.unlink(missing_ok=True)
        shutil.rmtree(qmd.parent / f"{Path(tmp_name).stem}_files", ignore_errors=True)
    version = quarto_version(quarto)
    return {"engine": "quarto", "engine_version": version, "command": cmd,
            "cells_executed": None, "warnings": [], "seconds": round(time.monotonic() - t0, 3)}


# --------------------------------------------------------------------------------------------
# parsing the .qmd
# --------------------------------------------------------------------------------------------


@dataclass
class Chunk:
    kind: str  # "markdown" | "code" (executable python) | "verbatim" (non-python engine)
    text: str  # markdown text, or cell source without the #| lines
    line: int  # 1-based line of the chunk's first line in the .qmd
    options: dict[str, Any] = field(default_factory=dict)
    lang: str = "python"


@dataclass
class QmdDoc:
    meta: dict[str, Any]
    chunks: list[Chunk]


_OPEN_EXEC = re.compile(r"^(?P<fence>`{3,})\s*\{(?P<lang>[A-Za-z][\w-]*)(?P<rest>[^}]*)\}\s*$")
_OPEN_ANY = re.compile(r"^\s{0,3}(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def _parse_cell_options(lines: list[str], start_line: int) -> tuple[dict[str, Any], list[str]]:
    opt_lines: list[str] = []
    i = 0
    while i < len(lines) and lines[i].lstrip().startswith("#|"):
        s = lines[i].lstrip()[2:]
        opt_lines.append(s[1:] if s.startswith(" ") else s)
        i += 1
    body = lines[i:]
    if not opt_lines:
        return {}, body
    try:
        opts = yaml.safe_load("\n".join(opt_lines)) or {}
    except yaml.YAMLError as exc:
        raise RenderError(f"invalid '#|' cell options at line {start_line}: {exc}",
                          line=start_line) from exc
    if not isinstance(opts, dict):
        raise RenderError(f"'#|' cell options at line {start_line} are not a YAML mapping",
                          line=start_line)
    return opts, body


def parse_qmd(text: str) -> QmdDoc:
    """Split a .qmd into front matter and markdown / executable-cell chunks."""
    lines = text.splitlines()
    meta: dict[str, Any] = {}
    i = 0
    if lines and lines[0].strip() == "---":
        for j in range(1, len(lines)):
            if lines[j].strip() in {"---", "..."}:
                try:
                    meta = yaml.safe_load("\n".join(lines[1:j])) or {}
                except yaml.YAMLError as exc:
                    raise RenderError(f"invalid YAML front matter: {exc}") from exc
                if not isinstance(meta, dict):
                    raise RenderError("YAML front matter is not a mapping")
                i = j + 1
                break
    chunks: list[Chunk] = []
    md: list[str] = []
    md_start = i + 1

    def flush_md() -> None:
        nonlocal md
        if md and any(s.strip() for s in md):
            chunks.append(Chunk("markdown", "\n".join(md), md_start))
        md = []

    while i < len(lines):
        line = lines[i]
        m = _OPEN_EXEC.match(line)
        if m:
            fence, lang = m.group("fence"), m.group("lang")
            j = i + 1
            while j < len(lines) and not re.match(rf"^`{{{len(fence)},}}\s*$", lines[j]):
                j += 1
            if j >= len(lines):
                raise RenderError(f"unclosed code cell starting at line {i + 1}", line=i + 1)
            flush_md()
            body = lines[i + 1:j]
            if lang == "python":
                opts, body = _parse_cell_options(body, i + 2)
                chunks.append(Chunk("code", "\n".join(body), i + 1, opts))
            else:
                opts, body = _parse_cell_options(body, i + 2)
                chunks.append(Chunk("verbatim", "\n".join(body), i + 1, opts, lang=lang))
            i = j + 1
            md_start = i + 1
            continue
        m = _OPEN_ANY.match(line)
        if m:  # a plain fenced block: copy through untouched (``{{python}}`` shown literally)
            ch, n = m.group("fence")[0], len(m.group("fence"))
            md.append(re.sub(r"\{\{([A-Za-z][\w-]*)\}\}", r"{\1}", line, count=1))
            j = i + 1
            while j < len(lines) and not re.match(rf"^\s{{0,3}}{re.escape(ch)}{{{n},}}\s*$",
                                                  lines[j]):
                md.append(lines[j])
                j += 1
            if j < len(lines):
                md.append(lines[j])
            i = j + 1
            continue
        md.append(line)
        i += 1
    flush_md()
    return QmdDoc(meta, chunks)


# --------------------------------------------------------------------------------------------
# the offline engine
# --------------------------------------------------------------------------------------------


def _html_opts(meta: dict[str, Any]) -> dict[str, Any]:
    fmt = meta.get("format")
    html = fmt.get("html") if isinstance(fmt, dict) else None
    merged = dict(meta)
    if isinstance(html, dict):
        merged.update(html)
    return merged


def _truthy_opt(opts: dict[str, Any], key: str, default: Any) -> Any:
    v = opts.get(key, default)
    return default if v is None else v


def _cell_label(chunk: Chunk, index: int) -> str:
    return str(chunk.options.get("label") or f"unlabeled-cell-{index}")


def _kernel_spec_dir(tmp: Path, env: dict[str, str] | None = None) -> Path:
    """Write a kernel spec whose argv runs this very interpreter (the venv's python)."""
    kdir = tmp / "kernels" / _KERNEL_NAME
    kdir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-Xfrozen_modules=off", "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": f"Python ({sys.executable})",
        "language": "python",
        "env": {
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "SSD_MATH_RENDER_ENGINE": "offline",
            **(env or {}),
        },
        "metadata": {"debugger": False},
    }
    (kdir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return kdir.parent


def _setup_source(meta: dict[str, Any]) -> str:
    h = _html_opts(meta)
    w, hgt, dpi = h.get("fig-width", 7), h.get("fig-height", 5), h.get("fig-dpi", 96)
    return (
        "try:\n"
        "    import matplotlib as _m\n"
        "    _ip = get_ipython()\n"
        "    _ip.run_line_magic('matplotlib', 'inline')\n"
        "    _ip.run_line_magic('config', \"InlineBackend.figure_formats = ['png']\")\n"
        f"    _m.rcParams['figure.figsize'] = ({float(w)!r}, {float(hgt)!r})\n"
        f"    _m.rcParams['figure.dpi'] = {float(dpi)!r}\n"
        "    del _m, _ip\n"
        "except ImportError:\n"
        "    pass\n"
    )


def _inline_source(exprs: list[str]) -> str:
    return (
        "def __ssd_inline(__vals):\n"
        "    from IPython.display import display\n"
        "    out = []\n"
        "    for v in __vals:\n"
        "        md = getattr(v, '_repr_markdown_', None)\n"
        "        r = md() if callable(md) else None\n"
        "        out.append(r if isinstance(r, str) else str(v))\n"
        f"    display({{{_INLINE_MIME!r}: out}}, raw=True)\n"
        f"__ssd_inline([{', '.join('(' + e + ')' for e in exprs)}])\n"
        "del __ssd_inline\n"
    )


_INLINE_RE = re.compile(r"`\{python\}\s+([^`]+?)`")


def _assignments(params: dict[str, Any]) -> str:
    return "\n".join(f"{k} = {v!r}" for k, v in params.items())


def _assigned_names(source: str) -> set[str]:
    import ast
    names: set[str] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return names
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else [])
        for t in targets:
            if isinstance(t, ast.Name):
                names.add(t.id)
    return names


@dataclass
class _Cell:
    role: str  # "setup" | "code" | "params" | "inline"
    source: str
    chunk: Chunk | None = None
    index: int = 0  # 1-based index among the document's python cells
    exprs: list[str] = field(default_factory=list)


def _strip_ansi(s: str) -> str:
    return _ANSI_RE.sub("", s)


def _fence(text: str, info: str = "") -> str:
    n = 3
    for m in re.finditer(r"`{3,}", text):
        n = max(n, len(m.group()) + 1)
    tick = "`" * n
    return f"{tick}{info}\n{text.rstrip(chr(10))}\n{tick}"


def _join_text(v: Any) -> str:
    return "".join(v) if isinstance(v, list) else str(v)


def _outputs_to_md(outputs: list[dict[str, Any]], opts: dict[str, Any], label: str,
                   warnings: list[str]) -> list[str]:
    """Markdown blocks for one cell's outputs, following the cell's options."""
    show_warn = bool(_truthy_opt(opts, "warning", True))
    asis = opts.get("output") == "asis"
    blocks: list[str] = []
    images: list[tuple[str, str]] = []  # (mime, b64)
    stream_buf: dict[str, list[str]] = {}

    def flush_streams() -> None:
        for name, parts in list(stream_buf.items()):
            text = "".join(parts)
            if text.strip():
                blocks.append(text if (asis and name == "stdout") else
                              _fence(_strip_ansi(text), f" {{.{name} .cell-output}}"))
        stream_buf.clear()

    for out in outputs:
        otype = out.get("output_type")
        if otype == "stream":
            if out.get("name") == "stderr":
                if not show_warn:
                    continue
                warnings.append(f"{label}: stderr: {_strip_ansi(_join_text(out.get('text', ''))).strip()[:300]}")
            stream_buf.setdefault(out.get("name", "stdout"), []).append(_join_text(out.get("text", "")))
            continue
        flush_streams()
        if otype == "error":
            tb = _strip_ansi("\n".join(out.get("traceback", [])))
            blocks.append(_fence(tb, " {.error .cell-output}"))
            continue
        data = out.get("data", {})
        if otype not in {"display_data", "execute_result"} or not data:
            continue
        if "text/markdown" in data:
            blocks.append(_join_text(data["text/markdown"]).strip("\n"))
        elif "text/html" in data:
            blocks.append(_fence(_join_text(data["text/html"]), "{=html}"))
        elif "image/svg+xml" in data:
            svg = _join_text(data["image/svg+xml"]).encode()
            images.append(("image/svg+xml", base64.b64encode(svg).decode()))
            blocks.append(f"\x00IMG{len(images) - 1}\x00")
        elif "image/png" in data or "image/jpeg" in data:
            mime = "image/png" if "image/png" in data else "image/jpeg"
            images.append((mime, _join_text(data[mime]).replace("\n", "")))
            blocks.append(f"\x00IMG{len(images) - 1}\x00")
        elif "text/latex" in data:
            blocks.append(_join_text(data["text/latex"]))
        elif "text/plain" in data:
            text = _join_text(data["text/plain"])
            blocks.append(text if asis else _fence(_strip_ansi(text), " {.cell-output}"))
    flush_streams()

    # figures: caption(s) and label from the cell options
    caps = opts.get("fig-cap")
    alt = opts.get("fig-alt")
    fig_label = label if label.startswith("fig-") else None
    n_img = len(images)
    result: list[str] = []
    for b in blocks:
        m = re.fullmatch(r"\x00IMG(\d+)\x00", b)
        if not m:
            result.append(b)
            continue
        k = int(m.group(1))
        mime, b64 = images[k]
        if isinstance(caps, list):
            cap = str(caps[k]) if k < len(caps) else ""
            ident = f"{fig_label}-{k + 1}" if fig_label else None
        else:
            cap = str(caps) if (caps and n_img == 1) else ""
            ident = fig_label if n_img == 1 else None
        attrs = []
        if ident:
            attrs.append(f"#{ident}")
        if alt:
            attrs.append(f'fig-alt="{str(alt)}"')
        if ident and cap:
            cap = _XREF_PLACEHOLDER.format(ident) + cap
        cap_md = cap.replace("[", "\\[").replace("]", "\\]") if cap else ""
        img = f"![{cap_md}](data:{mime};base64,{b64})"
        if attrs:
            img += "{" + " ".join(attrs) + "}"
        result.append(img)
    if n_img > 1 and caps and not isinstance(caps, list):
        cap = str(caps)
        if fig_label:
            cap = _XREF_PLACEHOLDER.format(fig_label) + cap
        inner = "\n\n".join(result)
        result = [f"::::: {{#{fig_label} .figure}}" if fig_label else "::::: {.figure}",
                  inner, f"::: {{.figure-caption}}\n{cap}\n:::", ":::::"]
    # tables: tbl-cap goes right after the (last) markdown table
    tcap = opts.get("tbl-cap")
    if tcap and not isinstance(tcap, list):
        ident = f" {{#{label}}}" if label.startswith("tbl-") else ""
        prefix = _XREF_PLACEHOLDER.format(label) if ident else ""
        result.append(f": {prefix}{tcap}{ident}")
    return result


def _apply_crossrefs(parts: list[tuple[str, bool]], warnings: list[str]) -> str:
    """Number fig-/tbl- labels in document order, put the numbers into captions and turn
    ``@fig-x``/``@tbl-x``/``@sec-x`` in prose parts (flag True) into links."""
    md = "\n\n".join(text for text, _ in parts) + "\n"
    numbers: dict[str, str] = {}
    counters = {"fig": 0, "tbl": 0}
    names = {"fig": "Figure", "tbl": "Table"}
    for m in re.finditer(r"\{#((fig|tbl)-[\w-]+)[^}]*\}|"
                         + re.escape(_XREF_PLACEHOLDER.split("{")[0])
                         + r"((fig|tbl)-[\w-]+)", md):
        ident = m.group(1) or m.group(3)
        kind = m.group(2) or m.group(4)
        if ident not in numbers:
            counters[kind] += 1
            numbers[ident] = f"{names[kind]} {counters[kind]}"
    sections = {m.group(2): m.group(1).strip()
                for m in re.finditer(r"^#{1,6}\s+(.*?)\s*\{#(sec-[\w-]+)[^}]*\}\s*$", md, re.M)}

    def prose_fig(m: re.Match[str]) -> str:
        cap, ident = m.group(1), m.group(3)
        if cap.startswith(numbers.get(ident, "\x00")):
            return m.group(0)
        return f"![{numbers[ident]}: {cap}]({m.group(2)}){{#{ident}{m.group(4)}}}"

    def ref(m: re.Match[str]) -> str:
        ident = m.group(1)
        if ident in numbers:
            return f"[{numbers[ident]}](#{ident})"
        if f"{ident}-1" in numbers:  # a cell whose fig-cap is a list: link its first figure
            return f"[{numbers[ident + '-1']}](#{ident}-1)"
        if ident in sections:
            return f"[{sections[ident]}](#{ident})"
        warnings.append(f"unresolved cross reference @{ident}")
        return f"**?{ident}**"

    out: list[str] = []
    for text, prose in parts:
        for ident, num in numbers.items():  # captions of generated figures / tables
            text = text.replace(_XREF_PLACEHOLDER.format(ident), f"{num}: ")
        if prose:  # hand-written ![cap](path){#fig-x} and @refs, never inside cell code
            text = re.sub(r"!\[([^\]]*)\]\(([^)\s]*)\)\{#(fig-[\w-]+)([^}]*)\}", prose_fig, text)
            text = re.sub(r"(?<![\w@\\])@((?:fig|tbl|sec)-[\w-]*\w)", ref, text)
        out.append(text)
    return "\n\n".join(out) + "\n"


def _shortcodes(md: str, meta: dict[str, Any], warnings: list[str]) -> str:
    def repl(m: re.Match[str]) -> str:
        parts = m.group(1).split()
        if parts and parts[0] == "pagebreak":
            return ""
        if len(parts) == 2 and parts[0] == "meta":
            v: Any = meta
            for key in parts[1].split("."):
                v = v.get(key) if isinstance(v, dict) else None
            if v is None:
                warnings.append(f"shortcode meta {parts[1]}: no such metadata")
                return ""
            return str(v)
        warnings.append(f"unsupported shortcode dropped: {m.group(0)}")
        return ""

    return re.sub(r"(?<!\{)\{\{<\s*(.*?)\s*>\}\}(?!\})", repl, md)


def _expand_date(value: Any) -> Any:
    if isinstance(value, str) and value.strip() in {"today", "now", "last-modified"}:
        now = _dt.datetime.now()
        return now.strftime("%Y-%m-%d %H:%M") if value.strip() == "now" else now.strftime("%Y-%m-%d")
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    return value


_CSS = """
body { max-width: 60em; }
table { border-collapse: collapse; margin: 1em auto; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #ddd; }
thead th { border-bottom: 2px solid #444; }
tbody tr:nth-child(even) { background: #f7f7f7; }
table caption, figcaption, .figure-caption { color: #444; font-size: 0.92em; margin: 0.4em 0; }
figure { margin: 1.2em auto; text-align: center; }
figure img, .figure img { max-width: 100%; height: auto; }
pre.cell-output, div.cell-output pre { background: #fafafa; border-left: 3px solid #ccc; }
pre.stderr, div.stderr pre { border-left-color: #d9a400; }
pre.error, div.error pre { border-left-color: #c00; }
div[class^="callout"], div[class*=" callout"] { border-left: 4px solid #0d6efd;
  background: #f3f7ff; padding: 0.3em 1em; margin: 1em 0; }
div.callout-warning, div.callout-caution { border-left-color: #d9a400; background: #fffaf0; }
div.callout-important { border-left-color: #c00; background: #fff4f4; }
div.callout-tip { border-left-color: #198754; background: #f3fbf6; }
"""


def _read_listed(qmd: Path, value: Any, key: str, warnings: list[str]) -> list[str]:
    """The texts of a ``css``/``include-in-header`` option: a path or a list of paths (relative to
    the .qmd) and, for include-in-header, ``{text: ...}`` / ``{file: ...}`` entries."""
    if value is None:
        return []
    out: list[str] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and "text" in item:
            out.append(str(item["text"]))
            continue
        name = item.get("file") if isinstance(item, dict) else item
        path = qmd.parent / str(name)
        if not path.is_file():
            raise RenderError(f"{qmd.name}: {key} file not found: {path}")
        out.append(path.read_text(encoding="utf-8"))
    return out


def _pandoc_meta(meta: dict[str, Any], qmd: Path) -> dict[str, Any]:
    h = _html_opts(meta)
    out: dict[str, Any] = {}
    for key in ("title", "subtitle", "author", "date", "abstract", "lang", "toc-title",
                "description", "keywords"):
        if h.get(key) is not None:
            out[key] = _expand_date(h[key]) if key == "date" else h[key]
    if "title" not in out:
        out["pagetitle"] = qmd.stem
    out["generator-note"] = "rendered offline by ssd_math.report (not Quarto)"
    return out


def _offline_version() -> str:
    import nbclient
    import pypandoc

    return (f"ssd_math.report offline (nbclient {nbclient.__version__}, "
            f"pandoc {pypandoc.get_pandoc_version()})")


def render_qmd(qmd: Path, out_html: Path, *, params: dict | None = None,
               workdir: Path | None = None, timeout_s: int = 600,
               env: dict[str, str] | None = None) -> dict:
    """Render ``qmd`` to a self-contained ``out_html`` with the offline engine.

    Cells run on a fresh ipykernel of this interpreter, in ``workdir`` (default: the qmd's
    folder). ``params`` override the parameters cell (papermill semantics). ``timeout_s`` is
    the per-cell execution limit (nbclient's); ``env`` is added to the kernel's environment.
    Returns an info dict (engine, cells executed,
    warnings, timings). Raises :class:`RenderError` on a failing cell.
    """
    import nbformat
    import pypandoc
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    t0 = time.monotonic()
    qmd = Path(qmd).resolve()
    out_html = Path(out_html).resolve()
    workdir = Path(workdir).resolve() if workdir is not None else qmd.parent
    if not workdir.is_dir():
        raise RenderError(f"workdir does not exist: {workdir}")
    doc = parse_qmd(qmd.read_text(encoding="utf-8"))
    meta = doc.meta
    warnings: list[str] = []
    overrides = dict(params or {})
    exec_defaults = meta.get("execute") if isinstance(meta.get("execute"), dict) else {}

    # ---- build the notebook plan -----------------------------------------------------------
    cells: list[_Cell] = [_Cell("setup", _setup_source(meta))]
    md_inline: dict[int, _Cell] = {}  # chunk position -> its inline-expression cell
    front_params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    params_cell_seen = False
    n_code = 0
    known_param_names: set[str] = set(front_params)
    for pos, chunk in enumerate(doc.chunks):
        if chunk.kind == "markdown":
            exprs = [m.group(1).strip() for m in _INLINE_RE.finditer(chunk.text)]
            if exprs:
                c = _Cell("inline", _inline_source(exprs), chunk, exprs=exprs)
                md_inline[pos] = c
                cells.append(c)
            continue
        if chunk.kind != "code":
            warnings.append(f"line {chunk.line}: {{{chunk.lang}}} cell not executed "
                            "(offline engine runs python only)")
            continue
        n_code += 1
        opts = {**exec_defaults, **chunk.options}
        chunk.options = opts
        if not _truthy_opt(opts, "eval", True):
            continue
        cells.append(_Cell("code", chunk.text, chunk, n_code))
        tags = opts.get("tags") or []
        if isinstance(tags, str):
            tags = [tags]
        if "parameters" in tags and not params_cell_seen:
            params_cell_seen = True
            known_param_names |= _assigned_names(chunk.text)
            if overrides:
                cells.append(_Cell("params", "# injected parameters\n" + _assignments(overrides),
                                   chunk, n_code))
    if not params_cell_seen and (front_params or overrides):
        cells.insert(1, _Cell("params", "# parameters (front matter + overrides)\n"
                              + _assignments({**front_params, **overrides})))
    unknown = sorted(set(overrides) - known_param_names)
    if unknown and params_cell_seen:
        warnings.append(f"parameters not defined in the parameters cell or front matter: {unknown}")

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": _KERNEL_NAME, "display_name": "Python",
                                 "language": "python"}
    for c in cells:
        md = {}
        if c.role == "code" and c.chunk is not None and c.chunk.options.get("error"):
            md["tags"] = ["raises-exception"]
        nb.cells.append(nbformat.v4.new_code_cell(c.source, metadata=md))

    # ---- execute ---------------------------------------------------------------------------
    t_exec = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ssd-report-") as tmp_s:
        tmp = Path(tmp_s)
        ksm = KernelSpecManager(kernel_dirs=[str(_kernel_spec_dir(tmp, env))])
        km = AsyncKernelManager(kernel_name=_KERNEL_NAME, kernel_spec_manager=ksm)
        if os.name == "posix":  # local unix sockets in our temp dir instead of TCP ports
            km.transport = "ipc"
            km.ip = str(tmp / "kernel")
        client = NotebookClient(nb, km=km, timeout=timeout_s, startup_timeout=120,
                                allow_errors=False, record_timing=False,
                                resources={"metadata": {"path": str(workdir)}})
        # cleanup_kc=True: the client shuts the kernel down even though we made the manager
        with client.setup_kernel(cwd=str(workdir), cleanup_kc=True):
            for idx, (c, nbcell) in enumerate(zip(cells, nb.cells)):
                try:
                    client.execute_cell(nbcell, idx)
                except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
                    if c.chunk is None:
                        raise RenderError(f"internal {c.role} cell failed: {exc}") from exc
                    label = (_cell_label(c.chunk, c.index) if c.role != "inline"
                             else f"inline expression(s) {c.exprs}")
                    tb = _strip_ansi(str(exc))
                    raise RenderError(
                        f"{qmd.name}: cell '{label}' (line {c.chunk.line}) failed:\n{tb}",
                        label=label, line=c.chunk.line, traceback=tb) from None
    t_exec = time.monotonic() - t_exec

    # ---- assemble markdown -----------------------------------------------------------------
    by_chunk: dict[int, list[tuple[_Cell, Any]]] = {}
    for c, nbcell in zip(cells, nb.cells):
        if c.chunk is not None:
            by_chunk.setdefault(id(c.chunk), []).append((c, nbcell))
    parts: list[tuple[str, bool]] = []  # (markdown, is_prose)
    executed = 0
    for pos, chunk in enumerate(doc.chunks):
        if chunk.kind == "markdown":
            text = chunk.text
            c = md_inline.get(pos)
            if c is not None:
                nbcell = nb.cells[cells.index(c)]
                values: list[str] = []
                for out in nbcell.get("outputs", []):
                    if _INLINE_MIME in out.get("data", {}):
                        values = list(out["data"][_INLINE_MIME])
                it = iter(values)
                text = _INLINE_RE.sub(lambda m: next(it, "??"), text)
            parts.append((_shortcodes(text, meta, warnings), True))
            continue
        if chunk.kind == "verbatim":
            parts.append((_fence(chunk.text, f" {{.{chunk.lang}}}"), False))
            continue
        opts = chunk.options
        if not _truthy_opt(opts, "eval", True):
            if _truthy_opt(opts, "echo", True) and _truthy_opt(opts, "include", True):
                parts.append((_fence(chunk.text, " {.python .cell-code}"), False))
            continue
        for c, nbcell in by_chunk.get(id(chunk), []):
            executed += 1 if c.role == "code" else 0
            label = _cell_label(chunk, c.index)
            if not _truthy_opt(opts, "include", True):
                continue
            blocks: list[tuple[str, bool]] = []
            if _truthy_opt(opts, "echo", True):
                blocks.append((_fence(c.source, " {.python .cell-code}"), False))
            if opts.get("output", True) not in (False, "false"):
                # markdown emitted by a cell is prose (its @refs resolve); code blocks are not
                blocks += [(b, not b.startswith("`"))
                           for b in _outputs_to_md(nbcell.get("outputs", []), opts, label,
                                                   warnings)]
            if not blocks:
                continue
            ident = f"#{label} " if ("label" in opts and c.role == "code"
                                     and not label.startswith(("fig-", "tbl-"))) else ""
            parts += [(f"::::::: {{{ident}.cell}}", False), *blocks, (":::::::", False)]
    md_text = _apply_crossrefs(parts, warnings)

    # ---- pandoc ----------------------------------------------------------------------------
    t_pd = time.monotonic()
    h = _html_opts(meta)
    with tempfile.TemporaryDirectory(prefix="ssd-report-pd-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "meta.yaml").write_text(yaml.safe_dump(_pandoc_meta(meta, qmd), allow_unicode=True))
        css = _CSS + "".join(_read_listed(qmd, h.get("css"), "css", warnings))
        (tmp / "style.html").write_text(f"<style>{css}</style>\n")
        headers = [tmp / "style.html"]
        for k, text in enumerate(_read_listed(qmd, h.get("include-in-header"), "include-in-header",
                                              warnings)):
            headers.append(tmp / f"header-{k}.html")
            headers[-1].write_text(text)
        args = ["--standalone", "--embed-resources", "--mathml",
                f"--metadata-file={tmp / 'meta.yaml'}",
                *(f"--include-in-header={p}" for p in headers),
                f"--resource-path={os.pathsep.join(dict.fromkeys([str(qmd.parent), str(workdir)]))}"]
        if h.get("toc"):
            args.append("--toc")
            if h.get("toc-depth"):
                args.append(f"--toc-depth={int(h['toc-depth'])}")
        if h.get("number-sections"):
            args.append("--number-sections")
        out_html.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out_html.with_name(f".{out_html.name}.tmp-{os.getpid()}")
        try:
            pypandoc.convert_text(md_text, "html5", format="markdown", extra_args=args,
                                  outputfile=str(tmp_out), cworkdir=str(qmd.parent))
            os.replace(tmp_out, out_html)
        except RuntimeError as exc:
            raise RenderError(f"pandoc failed: {exc}") from exc
        finally:
            tmp_out.unlink(missing_ok=True)
    t_pd = time.monotonic() - t_pd

    return {
        "engine": "offline",
        "engine_version": _offline_version(),
        "kernel_python": sys.executable,
        "qmd": str(qmd),
        "output": str(out_html),
        "workdir": str(workdir),
        "params": overrides,
        "cells_executed": executed,
        "warnings": warnings,
        "seconds": round(time.monotonic() - t0, 3),
        "seconds_execute": round(t_exec, 3),
        "seconds_pandoc": round(t_pd, 3),
    }


# --------------------------------------------------------------------------------------------
# engine choice + sidecar
# --------------------------------------------------------------------------------------------


def render(qmd: Path | str, out_html: Path | str, params: dict | None = None,
           workdir: Path | str | None = None, *, engine: str = "auto",
           timeout_s: int = 600) -> dict:
    """Render with Quarto when it is installed (``engine="auto"``), else offline.

    Writes ``<out_html>.meta.json`` recording the engine that actually ran. ``engine`` may
    force ``"quarto"`` (error if missing) or ``"offline"``.
    """
    qmd = Path(qmd).resolve()
    out_html = Path(out_html).resolve()
    wd = Path(workdir).resolve() if workdir is not None else None
    if engine not in {"auto", "quarto", "offline"}:
        raise ValueError(f"engine must be auto, quarto or offline, not {engine!r}")
    use_quarto = engine == "quarto" or (engine == "auto" and have_quarto())
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    if use_quarto:
        if not have_quarto():
            raise RenderError("engine='quarto' requested but no quarto executable on PATH")
        env = {"SSD_MATH_RENDER_ENGINE": "quarto", "SSD_MATH_RENDER_STARTED": started,
               "SSD_MATH_RENDER_ENGINE_VERSION": f"Quarto {quarto_version(shutil.which('quarto'))}"}
        info = _render_quarto(qmd, out_html, params, wd, timeout_s, env)
        info.update({"qmd": str(qmd), "output": str(out_html),
                     "workdir": str(wd or qmd.parent), "params": dict(params or {})})
    else:
        env = {"SSD_MATH_RENDER_ENGINE": "offline", "SSD_MATH_RENDER_STARTED": started,
               "SSD_MATH_RENDER_ENGINE_VERSION": _offline_version()}
        info = render_qmd(qmd, out_html, params=params, workdir=wd, timeout_s=timeout_s, env=env)
    info["render_started"] = started
    info["rendered_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    info["config_hash"] = os.environ.get("SSD_MATH_CONFIG_HASH") or None  # as ssd_math.io.write_meta
    meta_path = out_html.with_name(out_html.name + ".meta.json")
    tmp = meta_path.with_name(f".{meta_path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=2, default=str) + "\n")
    os.replace(tmp, meta_path)
    return info


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m ssd_math.report",
        description="Render a Quarto .qmd to self-contained HTML (Quarto if installed, "
                    "else the offline nbclient+pandoc subset).")
    ap.add_argument("qmd", type=Path)
    ap.add_argument("out_html", type=Path)
    ap.add_argument("-P", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="parameter override (value read as YAML); repeatable")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="working directory for the cells (default: the qmd's folder)")
    ap.add_argument("--engine", choices=["auto", "quarto", "offline"], default="auto")
    ap.add_argument("--timeout", type=int, default=600, help="per-cell timeout, seconds")
    ns = ap.parse_args(argv)
    try:
        params = parse_param_args(ns.param)
    except ValueError as exc:
        ap.error(str(exc))
    try:
        info = render(ns.qmd, ns.out_html, params, ns.workdir, engine=ns.engine,
                      timeout_s=ns.timeout)
    except RenderError as exc:
        print(f"render failed: {exc}", file=sys.stderr)
        return 1
    for w in info.get("warnings") or []:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{info['engine']}: wrote {info['output']} "
          f"({info.get('cells_executed')} cells, {info['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
