"""Tests for the report's renderers: the offline Quarto-subset engine (ssd_math.qmd_parse,
ssd_math.qmd_render) and the quarto command line and engine choice (ssd_math.report).

One real offline render of tests/data/report_min.qmd is shared by the module (kernel start is
the slow part); quarto itself is never run here -- only its command line is checked, plus the
copy-into-place plumbing against an explicit stub executable.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from pathlib import Path

import pytest

from ssd_math import report
from ssd_math.fmt import pipe_table
from ssd_math.qmd_parse import RenderError, parse_qmd
from ssd_math.qmd_render import render_qmd
from ssd_math.report import parse_param_args, quarto_command, render

QMD = Path(__file__).parent / "data" / "report_min.qmd"
CSV = "temperature,pass1\n0.5,0.4213\n1.0,0.5378\n1.5,0.3121\n"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    work = tmp_path_factory.mktemp("report_work")
    (work / "scores.csv").write_text(CSV)
    out = work / "out" / "report.html"
    t0 = time.monotonic()
    info = render(QMD, out, {"label": "override-xyz", "scale": 2}, work, engine="offline")
    info["wall_s"] = time.monotonic() - t0
    print(f"\noffline render of {QMD.name}: {info['wall_s']:.2f} s", file=sys.stderr)
    return out, out.read_text(encoding="utf-8"), info


def _visible(html: str) -> str:
    """The HTML without embedded data URIs (keeps the searches quick and meaningful)."""
    return re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "data:...", html)


def test_title_and_front_matter(rendered):
    _, html, _ = rendered
    assert '<h1 class="title">Minimal SSD report</h1>' in html
    assert "<title>Minimal SSD report</title>" in html
    assert "offline renderer test document" in html
    assert 'id="TOC"' in html  # toc: true


def test_table_numbers_and_caption(rendered):
    _, html, _ = rendered
    # pass1 is multiplied by the overridden scale=2: 0.4213*2, 0.5378*2, 0.3121*2
    for value in ("0.8426", "1.0756", "0.6242", "0.5000", "1.5000"):
        assert f">{value}</td>" in html
    assert '<table id="tbl-scores">' in html
    assert "<caption>Table 1: Pass@1 by temperature</caption>" in html
    assert '<a href="#tbl-scores">Table 1</a>' in html  # @tbl-scores resolved
    # numbered once each, in document order; an unlabelled tbl-cap takes no number
    assert "<caption>Table 2: Second table</caption>" in html
    assert '<a href="#tbl-second">Table 2</a>' in html


def test_figure_embedded_with_caption(rendered):
    _, html, _ = rendered
    assert '<img role="img"' in html and 'src="data:image/png;base64,' in html
    m = re.search(r'<figure id="fig-curve">.*?</figure>', html, re.S)
    assert m, "labelled figure missing"
    assert "Figure 1: Pass@1 against sampling" in re.sub(r"\s+", " ", m.group(0))
    assert '<a href="#fig-curve">Figure 1</a>' in html


def test_crossref_divs_take_computed_captions(rendered):
    """``::: {#tbl-x}`` / ``::: {#fig-x}`` around a cell: numbered in document order with the
    labelled cells, the caption the paragraph after the cell with its inline code evaluated."""
    _, html, _ = rendered
    vis = re.sub(r"\s+", " ", _visible(html))
    assert '<table id="tbl-computed">' in vis
    assert "<caption>Table 3: A caption computed at render time: scale 2, label override-xyz.</caption>" in vis
    assert '<a href="#tbl-computed">Table 3</a>' in vis
    m = re.search(r'<figure id="fig-computed">.*?</figure>', vis)
    assert m and "Figure 2: A figure caption computed at render time: 20% of it." in m.group(0)
    assert 'src="data:' in m.group(0) and '<a href="#fig-computed">Figure 2</a>' in vis
    assert "{python}" not in vis and ":::" not in vis  # no fence or inline code left in the prose


@pytest.mark.parametrize(
    "body, match",
    [
        ("::: {#fig-a}\n\ntext, no cell\n\n:::\n", r"#fig-a \(line 5\): .*one python cell"),
        (
            "::: {#tbl-b}\n\n```{python}\nx = 1\n```\n\nOne.\n\nTwo.\n\n:::\n",
            r"#tbl-b \(line 5\): one caption paragraph.*found 2",
        ),
        ("::: {#tbl-c}\n\n```{python}\nx = 1\n```\n\nNo closing fence.\n", r"#tbl-c \(line 5\).*':::'"),
        (
            "::: {#fig-d}\n\n```{python}\n#| fig-cap: twice\nx = 1\n```\n\nCap.\n\n:::\n",
            r"#fig-d .*own label or fig-cap",
        ),
    ],
)
def test_crossref_div_shapes_the_offline_engine_rejects(tmp_path, body, match):
    qmd = tmp_path / "x.qmd"
    qmd.write_text("---\ntitle: x\n---\n\n" + body)
    with pytest.raises(RenderError, match=match):
        render_qmd(qmd, tmp_path / "x.html")


def test_echo_warning_asis_options(rendered):
    _, html, _ = rendered
    assert "SECRET_HIDDEN_CODE" not in html  # echo: false hides code ...
    assert "param label is override-xyz" in html  # ... but keeps its output
    assert "UserWarning: suppressed-warning-text" not in html  # warning: false
    assert "UserWarning: shown-warning-text" in html  # execute: warning: true shows them
    assert "matplotlib.pyplot <span" in html  # echo defaults to true (highlighted code)
    assert "<strong>asis-bold-text</strong>" in html  # output: asis is raw markdown
    assert "<caption>An unlabelled table</caption>" in html  # tbl-cap without a tbl- label: no number


def test_params_override_and_inline_code(rendered):
    _, html, info = rendered
    assert "override-xyz" in html
    assert "The inline value of the scale is 2." in html  # `{python} scale` after override
    assert "# injected parameters" in html
    assert info["params"] == {"label": "override-xyz", "scale": 2}
    # the one stderr warning is also reported; nothing else (params known, refs resolved)
    assert len(info["warnings"]) == 1 and "shown-warning-text" in info["warnings"][0]


def test_self_contained_and_math(rendered):
    _, html, _ = rendered
    vis = _visible(html)
    external = re.findall(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//[^"'\s>]*""", vis, re.I)
    external += re.findall(r"""url\(\s*["']?\s*(?:https?:)?//[^)]*\)""", vis, re.I)
    external += re.findall(r"@import", vis)
    assert external == []
    assert "<script src=" not in vis and '<link rel="stylesheet"' not in vis
    assert "<math" in html  # MathML, no MathJax/KaTeX CDN
    assert "border-collapse" in html  # the built-in CSS is inlined


def test_sidecar_records_offline_engine(rendered):
    out, _, info = rendered
    meta = json.loads(Path(str(out) + ".meta.json").read_text())
    assert meta["engine"] == "offline"
    assert "pandoc" in meta["engine_version"]
    assert meta["kernel_python"] == sys.executable
    assert meta["cells_executed"] == info["cells_executed"] == 13
    # no temp files left next to the output (atomic write)
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html", "report.html.meta.json"]


def test_css_header_and_engine_env(rendered):
    """Front-matter ``css:`` files are inlined into <head> (as Quarto does); the cells see the
    engine and the render's start time."""
    _, html, info = rendered
    head = html.split("</head>", 1)[0]
    assert ".ssd-test-css-marker { color: #123456; }" in head
    m = re.search(r"engine seen by cells: (\w+) since ([\w:+-]+)", html)
    assert m and m.group(1) == "offline"
    assert m.group(2) == info["render_started"]


def test_missing_css_file_is_an_error(tmp_path):
    qmd = tmp_path / "c.qmd"
    qmd.write_text("---\ntitle: c\ncss: nowhere.css\n---\n\ntext\n")
    with pytest.raises(RenderError, match="css file not found: .*nowhere.css"):
        render_qmd(qmd, tmp_path / "c.html")


def test_failing_cell_names_label(tmp_path):
    qmd = tmp_path / "bad.qmd"
    qmd.write_text(
        "---\ntitle: bad\n---\n\n"
        "```{python}\nx = 1\n```\n\n"
        "```{python}\n#| label: boom-cell\nraise ValueError('kaputt-42')\n```\n"
    )
    out = tmp_path / "bad.html"
    with pytest.raises(RenderError) as ei:
        render_qmd(qmd, out)
    assert "boom-cell" in str(ei.value) and "kaputt-42" in str(ei.value)
    assert ei.value.label == "boom-cell" and ei.value.line == 9
    assert not out.exists()


# ---- no kernel needed below ------------------------------------------------------------------


def test_parse_qmd_cells_and_options():
    text = (
        "---\ntitle: T\ntoc: true\n---\n\nprose with `{python} x`\n\n"
        '```{python}\n#| label: fig-x\n#| fig-cap: "one"\n#| echo: false\nplot()\n```\n\n'
        "more prose\n\n```{python}\nx = 1\n```\n"
    )
    meta, cells = parse_qmd(text)
    assert meta == {"title": "T", "toc": True}
    assert [c.kind for c in cells] == ["markdown", "code", "markdown", "code"]
    assert cells[0].source == "prose with `{python} x`" and cells[0].line == 6
    code = cells[1]
    assert code.options == {"label": "fig-x", "fig-cap": "one", "echo": False}
    assert code.source == "plot()" and code.line == 8  # the line of the opening fence
    assert cells[3].options == {} and cells[3].source == "x = 1" and cells[3].line == 17


def test_parse_qmd_errors():
    with pytest.raises(RenderError, match="line 2"):
        parse_qmd("```{python}\n#| echo: [unclosed\nx=1\n```\n")
    with pytest.raises(RenderError, match="front matter"):
        parse_qmd("---\n- a list\n---\n\ntext\n")


def test_quarto_command_line(tmp_path):
    cmd = quarto_command(
        tmp_path / "report.qmd",
        "report.html",
        {"n": 5, "flag": True, "name": "abc", "temps": [0.5, 1.0], "t": "1.0"},
        tmp_path,
        metadata={"title": "A: b — c"},
    )
    assert cmd[:8] == [
        "quarto",
        "render",
        str(tmp_path / "report.qmd"),
        "--to",
        "html",
        "--output",
        "report.html",
        "-M",
    ]
    assert cmd[8] == "embed-resources:true"
    assert cmd[cmd.index("--execute-dir") + 1] == str(tmp_path.resolve())
    p = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-P"]
    # Quarto reads each value as YAML: strings quoted, so "1.0" stays a string, not a float
    assert p == ["n:5", "flag:true", 'name:"abc"', "temps:[0.5, 1.0]", 't:"1.0"']
    m = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-M"]
    assert m == ["embed-resources:true", "title:A: b — c"]  # pandoc reads it literally
    assert "--execute-dir" not in quarto_command("r.qmd", "r.html")
    with pytest.raises(ValueError, match="file name"):
        quarto_command("r.qmd", "out/r.html")  # --output takes a name, not a path


def _stub_quarto(tmp_path: Path, monkeypatch, *, fail: bool = False) -> Path:
    """A stub named quarto that logs its argv and cwd (NOT a real quarto: plumbing only). Like
    the real one it writes ``--output NAME`` relative to its working directory, and leaves a
    ``<stem>_files`` folder next to the input."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "argv.json"
    stub = bindir / "quarto"
    stub.write_text(
        f"#!{sys.executable}\nimport json, os, sys, pathlib\n"
        "a = sys.argv[1:]\n"
        "if a == ['--version']:\n    print('0.0-stub'); sys.exit(0)\n"
        f"pathlib.Path({str(log)!r}).write_text(json.dumps({{'argv': a, 'cwd': os.getcwd(), 'ls': sorted(os.listdir()), "
        "'engine': os.environ.get('SSD_MATH_RENDER_ENGINE'), 'python': os.environ.get('QUARTO_PYTHON'), "
        "'version': os.environ.get('SSD_MATH_RENDER_ENGINE_VERSION')}))\n"
        "qmd = pathlib.Path(a[1]); name = a[a.index('--output') + 1]\n"
        "(qmd.parent / (qmd.stem + '_files')).mkdir(exist_ok=True)\n"
        f"{'sys.exit(3)' if fail else 'pass'}\n"
        "pathlib.Path(name).write_text('<html>stub output</html>')\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("QUARTO_PYTHON", raising=False)
    return log


def test_render_uses_quarto_when_present(tmp_path, monkeypatch):
    log = _stub_quarto(tmp_path, monkeypatch)
    assert report.have_quarto()
    src = tmp_path / "doc"
    src.mkdir()
    qmd = src / "r.qmd"
    qmd.write_text("---\ntitle: x\n---\n")
    (src / "r.css").write_text("p {}")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the rule's Quarto path must not depend on the caller's cwd
    out = tmp_path / "results" / "r.html"
    info = render(qmd, out, {"n": 3}, metadata={"title": "Configured"})
    logged = json.loads(log.read_text())
    argv = logged["argv"]
    assert logged["engine"] == "quarto" and logged["version"] == "Quarto 0.0-stub"  # what the cells see
    assert logged["python"] == sys.executable  # the kernel / papermill run on this interpreter
    assert argv[0] == "render" and "-P" in argv and "n:3" in argv and "title:Configured" in argv
    assert argv[argv.index("--output") + 1] == "r.html"
    # Quarto runs in a mirror of the qmd's folder (css beside it), the cells in the original folder
    assert Path(logged["cwd"]) == Path(argv[1]).parent and logged["ls"] == ["r.css", "r.qmd"]
    assert argv[argv.index("--execute-dir") + 1] == str(src)
    assert out.read_text() == "<html>stub output</html>"
    assert sorted(p.name for p in src.iterdir()) == ["r.css", "r.qmd"]  # nothing left by the source
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.html", "r.html.meta.json"]  # nor beside the page
    assert list(elsewhere.iterdir()) == []  # nor in the caller's cwd
    meta = json.loads(Path(str(out) + ".meta.json").read_text())
    assert meta["engine"] == info["engine"] == "quarto"
    assert meta["engine_version"] == "0.0-stub" and meta["output"] == str(out)
    assert meta["metadata"] == {"title": "Configured"}


def test_failed_render_leaves_no_stale_sidecar(tmp_path, monkeypatch):
    _stub_quarto(tmp_path, monkeypatch, fail=True)
    qmd = tmp_path / "r.qmd"
    qmd.write_text("---\ntitle: x\n---\n")
    out = tmp_path / "results" / "r.html"
    sidecar = Path(str(out) + ".meta.json")
    out.parent.mkdir()
    # a sidecar whose page a build system deleted (Snakemake removes outputs before a job): gone
    sidecar.write_text(json.dumps({"engine": "offline"}))
    with pytest.raises(RenderError, match="exit 3"):
        render(qmd, out)
    assert sorted(p.name for p in out.parent.iterdir()) == []
    # a complete previous pair survives a failed render as it was (still describing each other)
    out.write_text("<html>old</html>")
    sidecar.write_text(json.dumps({"engine": "offline"}))
    with pytest.raises(RenderError):
        render(qmd, out)
    assert out.read_text() == "<html>old</html>" and json.loads(sidecar.read_text())["engine"] == "offline"
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.html", "r.html.meta.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["argv.json", "bin", "r.qmd", "results"]


def test_engine_quarto_without_quarto(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "have_quarto", lambda: False)
    with pytest.raises(RenderError, match="no quarto"):
        render(QMD, tmp_path / "x.html", engine="quarto")


def test_parse_param_args():
    assert parse_param_args(["n=5", "t:0.7", "flag=true", "name=a:b", "xs=[1, 2]"]) == {
        "n": 5,
        "t": 0.7,
        "flag": True,
        "name": "a:b",
        "xs": [1, 2],
    }
    with pytest.raises(ValueError):
        parse_param_args(["no-separator"])


def test_pipe_table():
    md = pipe_table(
        [{"model": "a|b", "acc": 0.12345, "n": 3, "g": "7"}, {"model": "c", "acc": None, "n": 4, "g": "8"}],
        floatfmt=".2f",
    )
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in md.strip().splitlines()]
    assert rows[0] == ["model", "acc", "n", "g"]
    # numbers right-aligned, strings left-aligned even when they look like numbers
    assert re.fullmatch(r"\|:-+\|-+:\|-+:\|:-+\|", md.splitlines()[1])
    assert rows[2] == ["a\\|b", "0.12", "3", "7"] and md.splitlines()[3].startswith("| c ")
    assert rows[3] == ["c", "\u2014", "4", "8"]
    assert pipe_table({"x": [1.5, 2.0]}).splitlines()[2:] == ["| 1.500 |", "| 2.000 |"]
    # a text cell is text: no TeX math, emphasis or column break from what it contains
    assert "| a \\$5 \\*and\\* \\$6 |" in pipe_table([{"t": "a $5 *and* $6"}])


NOTE_QMD = """---
title: "Front-matter title"
execute:
  echo: false
---

```{python}
#| label: tbl-first
#| tbl-cap: "First"
from IPython.display import Markdown, display
display(Markdown("| a |\\n|--:|\\n| 1 |\\n"))
```

```{python}
#| label: tbl-noted
#| tbl-cap: "Noted"
display(Markdown("| b |\\n|--:|\\n| 2 |\\n"))
display(Markdown("*Method.* a note the cell prints after its table."))
```

```{python}
#| label: tbl-last
#| tbl-cap: "Last"
display(Markdown("| c |\\n|--:|\\n| 3 |\\n"))
```

See @tbl-noted and @tbl-last.
"""


def test_caption_stays_with_its_table_and_title_override(tmp_path):
    """A cell that prints a note after its table keeps its numbered caption (Quarto numbers it;
    a caption orphaned after the note became a definition list and the numbering skipped), and
    ``metadata={"title": ...}`` (the configured title) replaces the front matter's."""
    qmd = tmp_path / "noted.qmd"
    qmd.write_text(NOTE_QMD)
    out = tmp_path / "noted.html"
    render(qmd, out, engine="offline", metadata={"title": "Configured title"})
    html = out.read_text(encoding="utf-8")
    caps = re.findall(r"<caption>(.*?)</caption>", html, re.S)
    assert caps == ["Table 1: First", "Table 2: Noted", "Table 3: Last"]
    assert '<table id="tbl-noted">' in html and "{#tbl-noted}" not in html and "<dl>" not in html
    assert html.index("Table 2: Noted") < html.index("a note the cell prints") < html.index("Table 3: Last")
    links = [(h, " ".join(t.split())) for h, t in re.findall(r'<a href="#(tbl-[\w-]+)">(.*?)</a>', html, re.S)]
    assert links == [("tbl-noted", "Table 2"), ("tbl-last", "Table 3")]
    assert "<title>Configured title</title>" in html and '<h1 class="title">Configured title</h1>' in html
    assert "Front-matter title" not in html
