"""Real Quarto on the report of a finished run, and the offline engine held to Quarto's output.

The finished run is the default experiment's (``results/`` of this checkout, what the README's
first Quick start line builds and .ci/run runs before the tests) when it is complete, else the
session's smoke run (conftest.smoke_run: no second DAG run). Both engines render the same
``report/report.qmd`` on it with the report rule's parameters and title, from a working
directory that is neither the repository nor ``report/``.

- test_quarto_renders_the_report: Quarto's page has a table for every ``tbl-`` cell and a PNG
  for every ``fig-`` cell, numbered once and in order, every ``@tbl-``/``@fig-`` reference a link
  named by its target's number, the configured title, no Quarto warning, a sidecar naming Quarto
  and its version, and nothing written beside the .qmd or in the working directory.
- test_offline_engine_matches_quarto: the numbers in the text (in order), the tables cell by
  cell, the figures (decoded PNG bytes), the numbered captions and the cross-references are
  the same in both pages.
- test_the_runs_own_report_shows_its_title_and_engine: the page the report rule wrote shows
  the configured title and names the engine its sidecar names (needs no Quarto).

Without Quarto on PATH the first two skip, except under CI (``CI=true``), where they fail: .ci/run puts
Quarto on PATH.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from ssd_math.report import render

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
QMD = ROOT / "report" / "report.qmd"


def _need_quarto() -> None:
    if shutil.which("quarto") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("quarto is not on PATH (CI=true: .ci/run sets Quarto up)")
        pytest.skip("quarto is not on PATH")


def _norm(text: str) -> str:
    return " ".join(text.replace("\xa0", " ").split())


class Page(HTMLParser):
    """What the comparison reads from a rendered page: the body's visible text (no script,
    style or TOC), the tables (rows of cell texts), the captions, the images (sha256 of the
    decoded PNG) and the ``#tbl-``/``#fig-`` links, each in document order. The provenance
    panel's "rendered" entry (when, by which engine) is kept apart in ``rendered``: it is the
    one text that must differ between engines."""

    SKIP = {"script", "style", "noscript", "template"}

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.captions: list[str] = []
        self.images: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.title = ""
        self.rendered = ""
        self._dt: list[str] | None = None
        self._rendered_dd = False  # inside the <dd> after <dt>rendered</dt>
        self._stack: list[tuple[str, dict]] = []
        self._skip = 0  # depth inside script/style/TOC
        self._cell: list[str] | None = None
        self._cap: list[str] | None = None
        self._link: tuple[str, list[str]] | None = None
        self._in_title = False
        self._body = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in {"img", "br", "hr", "meta", "link", "input", "col", "source", "wbr"}:
            if tag == "img" and not self._skip and (a.get("src") or "").startswith("data:image/png;base64,"):
                raw = base64.b64decode(a["src"].split(",", 1)[1])
                self.images.append(hashlib.sha256(raw).hexdigest())
            return
        toc = tag == "nav" and (a.get("id") == "TOC" or "toc-active" in (a.get("class") or ""))
        self._stack.append((tag, {"skip": tag in self.SKIP or toc}))
        if tag in self.SKIP or toc:
            self._skip += 1
        if tag == "body":
            self._body = True
        elif tag == "title":
            self._in_title = True
        elif tag == "table" and not self._skip:
            self.tables.append([])
        elif tag == "tr" and not self._skip and self.tables:
            self.tables[-1].append([])
        elif tag in {"td", "th"} and not self._skip:
            self._cell = []
        elif tag in {"caption", "figcaption"} and not self._skip:
            self._cap = []
        elif tag == "a" and not self._skip and re.match(r"#(tbl|fig)-", a.get("href") or ""):
            self._link = (a["href"][1:], [])
        elif tag == "dt":
            self._dt = []
        elif tag == "dd" and self._dt is not None:
            self._rendered_dd = _norm("".join(self._dt)) == "rendered"
            self._dt = None

    def handle_endtag(self, tag):
        while self._stack:  # tolerate unclosed elements (p, li)
            open_tag, info = self._stack.pop()
            if info["skip"]:
                self._skip -= 1
            if open_tag == tag:
                break
        if tag == "title":
            self._in_title = False
        elif tag == "dd":
            self._rendered_dd = False
        elif tag in {"td", "th"} and self._cell is not None:
            if self.tables and self.tables[-1]:
                self.tables[-1][-1].append(_norm("".join(self._cell)))
            self._cell = None
        elif tag in {"caption", "figcaption"} and self._cap is not None:
            self.captions.append(_norm("".join(self._cap)))
            self._cap = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link[0], _norm("".join(self._link[1]))))
            self._link = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._skip or not self._body:
            return
        if self._dt is not None:
            self._dt.append(data)
        if self._rendered_dd:
            self.rendered += data
            return
        self.text.append(data)
        for buf in (self._cell, self._cap, self._link[1] if self._link else None):
            if buf is not None:
                buf.append(data)

    @property
    def numbers(self) -> list[str]:
        return re.findall(r"[−-]?\d+(?:[.,]\d+)*%?", _norm(" ".join(self.text)))

    def numbered(self, kind: str) -> list[tuple[int, str]]:
        """(N, caption) of every caption reading "<kind> N: ...", in document order."""
        return [(int(m.group(1)), c) for c in self.captions if (m := re.match(rf"{kind} (\d+):", c))]


def _labels(prefix: str) -> list[str]:
    """The .qmd's captioned figures or tables of this kind, in document order: cells with a label
    and a caption option, and cross-reference divs (``::: {#tbl-x}``: a computed caption)."""
    text = QMD.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(r"```\{python\}\n((?:#\|.*\n)+)|^:{3,}\s*\{#([\w-]+)\}\s*$", text, flags=re.M):
        if m.group(2):
            label = m.group(2)
        else:
            o = yaml.safe_load("".join(line[3:] + "\n" for line in m.group(1).splitlines())) or {}
            label = str(o.get("label", "")) if o.get(f"{prefix}-cap") else ""
        if label.startswith(f"{prefix}-"):
            out.append(label)
    return out


@pytest.fixture(scope="module")
def finished(request):
    """(results dir, config) of a finished run: the default's when complete, else the smoke run."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    results = ROOT / cfg["results"]
    if not ((results / "report" / "report.html").is_file() and (results / "report" / "report_inputs.json").is_file()):
        wd, _ = request.getfixturevalue("smoke_run")
        cfg = yaml.safe_load((ROOT / "tests" / "data" / "smoke_config.yaml").read_text())
        results = wd / cfg["results"]
    return results.resolve(), cfg


@pytest.fixture(scope="module")
def pages(request, tmp_path_factory):
    """Both engines' pages of the finished run, rendered as the report rule does."""
    _need_quarto()  # before the finished run: under CI=true, fail before any DAG runs
    results, cfg = request.getfixturevalue("finished")
    params = {"manifest": str(results / "report" / "report_inputs.json")}  # the report rule's manifest
    out = tmp_path_factory.mktemp("engines")
    cwd = tmp_path_factory.mktemp("elsewhere")
    report_dir_before = sorted(p.name for p in QMD.parent.iterdir())
    old = os.getcwd()
    os.chdir(cwd)  # neither the repository nor report/: the render must not depend on it
    try:
        got = {}
        for engine in ("quarto", "offline"):
            t0 = time.monotonic()
            info = render(
                QMD,
                out / engine / "report.html",
                params,
                engine=engine,
                stamp_param="rendered",
                metadata={"title": cfg["report"]["title"]},
            )
            html = (out / engine / "report.html").read_text(encoding="utf-8")
            got[engine] = {
                "page": Page(html),
                "info": info,
                "html": html,
                "dir": out / engine,
                "seconds": time.monotonic() - t0,
            }
            print(f"\n{engine} render of {results}: {got[engine]['seconds']:.1f} s")
    finally:
        os.chdir(old)
    got["left"] = {
        "cwd": sorted(p.name for p in cwd.iterdir()),
        "report_dir": (report_dir_before, sorted(p.name for p in QMD.parent.iterdir())),
    }
    got["cfg"] = cfg
    return got


def test_quarto_renders_the_report(pages):
    q, cfg = pages["quarto"], pages["cfg"]
    page, info = q["page"], q["info"]
    tbls, figs = _labels("tbl"), _labels("fig")
    assert tbls and figs
    # every captioned table and figure numbered once, 1..n in document order (no gap, no repeat)
    assert [n for n, _ in page.numbered("Table")] == list(range(1, len(tbls) + 1))
    assert [n for n, _ in page.numbered("Figure")] == list(range(1, len(figs) + 1))
    assert "tbl-probe-controls" in tbls  # the cell whose table is followed by a method note
    assert any(c.startswith(f"Table {tbls.index('tbl-probe-controls') + 1}: Compare arm") for c in page.captions)
    assert len(page.tables) >= len(tbls) and all(t and all(t) for t in page.tables)
    assert len(page.images) == len(figs)  # every figure an embedded PNG
    # every reference in the prose resolved to a link named by its target's number
    numbers = {
        **{lab: f"Table {i + 1}" for i, lab in enumerate(tbls)},
        **{lab: f"Figure {i + 1}" for i, lab in enumerate(figs)},
    }
    refs = re.findall(r"(?<![\w@\\])@((?:fig|tbl)-[\w-]*\w)", QMD.read_text(encoding="utf-8"))
    assert refs and {t for t, _ in page.links} >= set(refs)
    assert all(text == numbers[target] for target, text in page.links), page.links
    assert "?@" not in _norm(" ".join(page.text)) and "quarto-unresolved-ref" not in q["html"]
    # the configured title, not the .qmd's
    assert _norm(page.title).startswith(cfg["report"]["title"]) and f">{cfg['report']['title']}</h1>" in q["html"]
    assert info["warnings"] == []
    # the page's provenance names the engine that rendered it, as its sidecar does
    assert re.search(r"by the Quarto engine \(Quarto \d+\.\d+\.\d+\)", _norm(page.rendered)), page.rendered
    assert not re.search(r'(src|href)="https?://', q["html"])  # self-contained
    meta = json.loads((q["dir"] / "report.html.meta.json").read_text())
    assert meta["engine"] == "quarto" and re.fullmatch(r"\d+\.\d+\.\d+", meta["engine_version"])
    # nothing left in the working directory, beside the .qmd, or beside the page
    assert pages["left"]["cwd"] == []
    assert pages["left"]["report_dir"][0] == pages["left"]["report_dir"][1]
    assert sorted(p.name for p in q["dir"].iterdir()) == ["report.html", "report.html.meta.json"]


def test_offline_engine_matches_quarto(pages):
    q, o = pages["quarto"]["page"], pages["offline"]["page"]
    assert json.loads((pages["offline"]["dir"] / "report.html.meta.json").read_text())["engine"] == "offline"
    assert o.numbered("Table") == q.numbered("Table") and o.numbered("Figure") == q.numbered("Figure")
    assert o.tables == q.tables
    assert o.images == q.images
    assert o.links == q.links
    assert _norm(o.title) == _norm(q.title)
    assert "by the offline engine" in _norm(o.rendered) and "by the Quarto engine" in _norm(q.rendered)
    assert len(q.numbers) > 100 and o.numbers == q.numbers


def test_the_runs_own_report_shows_its_title_and_engine(finished):
    """The report rule's page (whichever engine the run had) shows the configured title, and
    its provenance and its sidecar name the same engine."""
    results, cfg = finished
    html = (results / "report" / "report.html").read_text(encoding="utf-8")
    page = Page(html)
    meta = json.loads((results / "report" / "report.html.meta.json").read_text())
    assert _norm(page.title) == cfg["report"]["title"]
    assert meta["engine"] in {"quarto", "offline"} and meta["output"] == str(results / "report" / "report.html")
    assert f"by the {'Quarto' if meta['engine'] == 'quarto' else 'offline'} engine" in _norm(page.rendered)
    assert not list((results / "report").glob(".*"))  # no staging folder or temporary file left
