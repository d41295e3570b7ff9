"""The offline engine: render a ``.qmd`` to one self-contained HTML page without Quarto
(:func:`render_qmd`; :mod:`ssd_math.report` chooses it when no ``quarto`` is on ``PATH``).

jupytext's R Markdown reader splits the ``.qmd`` into cells (:mod:`ssd_math.qmd_parse`: it parses
```` ```{python} ```` chunks without the quarto binary), nbclient runs them on an ipykernel of
this interpreter, their outputs become pandoc markdown, and pandoc (``pypandoc-binary``) writes a
standalone page with every resource embedded and math as MathML. It implements what
``report.qmd`` uses, as Quarto renders it: front matter ``title``/``subtitle``/``author``/
``date`` (``today``, shown as Quarto's HTML shows it), ``toc``, ``toc-depth``, ``number-sections``,
``css`` (inlined) and ``execute:`` defaults (top level or under ``format: html:``); ``#|`` cell
options ``label``, ``echo``, ``warning``, ``output: asis``, ``fig-cap``, ``tbl-cap``,
``tags: [parameters]``; parameters with papermill's semantics (the overrides in a cell injected after the one tagged
``parameters``); ``text/markdown``, ``image/png``, ``text/plain`` and stream outputs; inline
`` `{python} expr` ``; cross-reference divs (``::: {#fig-x}`` / ``::: {#tbl-x}`` around one
cell, the caption the paragraph after it: a caption with inline code, which ``#|`` options cannot
have under Jupyter); figures and tables labelled ``fig-``/``tbl-`` numbered once, in document
order ("Figure N: caption", a table's caption kept with the table even when the cell prints
more after it), and ``@fig-x``/``@tbl-x`` linked; ``metadata`` overrides (``-M``, e.g. title).
A failing cell fails the render naming its label and line. Anything else of Quarto (other
formats, layouts, callouts, shortcodes, per-cell ``eval``/``include``, citations) needs Quarto
itself.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from .qmd_parse import Cell, RenderError, _crossref_divs, parse_qmd

__all__ = ["render_qmd"]

_KERNEL_NAME = "ssd-math-python3"
_INLINE_MIME = "application/x-ssd-math-inline+json"
_INLINE_RE = re.compile(r"`\{python\}\s+([^`]+?)`")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_PIPE_TABLE_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*\|", re.M)  # a pipe table's header separator line


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
