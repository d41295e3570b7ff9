"""Render the study's Quarto report (``report/report.qmd``) to one self-contained HTML file.

:func:`render` runs ``quarto render`` when a ``quarto`` executable is on ``PATH`` (in a private
folder beside the output that mirrors the ``.qmd``'s, so from any working directory and leaving
nothing behind), else the offline engine (:mod:`ssd_math.qmd_render`), on the SAME ``.qmd``, and
writes ``<out_html>.meta.json`` naming the engine that ran, swapped in together with the page. The
cells of either engine see ``$SSD_MATH_RENDER_ENGINE`` (``quarto`` | ``offline``),
``$SSD_MATH_RENDER_ENGINE_VERSION`` and ``$SSD_MATH_RENDER_STARTED`` (UTC, ISO 8601); with
``stamp_param`` the same three values reach the document as one parameter instead (a JSON object:
``engine``, ``version``, ``started``), which is how ``report/report.qmd`` reads them.

``report/report.qmd`` reads its inputs through :class:`ssd_math.report_inputs.ReportInputs`: the
manifest the report rule writes (:func:`ssd_math.report_inputs.write_manifest`: each input's name
and file) and the parts those files hold.
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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .qmd_parse import RenderError
from .qmd_render import _offline_version, render_qmd

__all__ = [
    "have_quarto",
    "quarto_command",
    "render",
    "parse_param_args",
    "main",
]


def have_quarto() -> bool:
    """True when a ``quarto`` executable is on ``PATH``."""
    return shutil.which("quarto") is not None


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
