"""The report reads, never computes: report/report.qmd holds prose and places the files the DAG
wrote (rule report_parts: ssd_math.report_parts; the report rule's manifest: ssd_math.report_inputs).

- report.qmd itself: at most 350 lines, cells of at most 5 lines, no function, no path literal,
  no glob, no environment variable;
- the manifest: the report rule's inputs by name, relative to the manifest, read back by
  ReportInputs with errors that name the missing input or part;
- the render stamp and the config hash reach the page and the sidecar as values (a parameter, an
  argument), not through the environment; an inline ``Markdown`` object is placed as markdown by
  the offline engine, as Quarto places it;
- the parts: which runs are arms and which are noise runs is the config's (passed in), so a
  run on disk that the config does not name changes no part.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from ssd_math import fmt
from ssd_math.report import render
from ssd_math.report_inputs import ReportInputs, provenance_panel, write_manifest
from ssd_math.report_parts import _noise as noise_parts
from ssd_math.report_parts import build_parts, provenance_rows

ROOT = Path(__file__).resolve().parents[1]
QMD = ROOT / "report" / "report.qmd"


def _cells(text: str) -> list[list[str]]:
    return [c.split("\n") for c in re.findall(r"^```\{python\}\n(.*?)^```", text, flags=re.S | re.M)]


def test_the_report_source_holds_prose_and_places_files():
    text = QMD.read_text(encoding="utf-8")
    lines = text.split("\n")
    assert len(lines) - (lines[-1] == "") <= 350
    cells = _cells(text)
    assert cells and max(len([x for x in c if x]) for c in cells) <= 5, [c for c in cells if len(c) > 6]
    code = "\n".join("\n".join(c) for c in cells) + "\n".join(re.findall(r"`\{python\}\s+([^`]+)`", text))
    assert not re.search(r"^\s*def |lambda", code, flags=re.M)
    assert "os.environ" not in text and "glob" not in code and "Path(" not in code
    # no path literal: every string a cell or inline expression quotes is a name, not a file
    literals = re.findall(r"""["']([^"'\n]*)["']""", code)
    assert literals and not [s for s in literals if re.search(r"/|\.(csv|json|png|md|txt)$", s)], literals
    assert "import polars" not in code and "read_csv" not in code


def test_manifest_round_trip_and_errors(tmp_path):
    d = tmp_path / "results"
    (d / "tables").mkdir(parents=True)
    (d / "tables" / "report_parts.json").write_text(
        json.dumps(
            {
                "level": "95%",
                "table1": "| a |\n|---|\n| 1 |\n",
                "provenance_rows": [["commit", "<code>abc</code>"]],
                "n_sidecars": 3,
            }
        )
    )
    (d / "tables" / "findings.md").write_text("- one finding\n")
    m = write_manifest(
        d / "report" / "report_inputs.json",
        {"parts": d / "tables" / "report_parts.json", "findings": str(d / "tables" / "findings.md")},
    )
    doc = json.loads(m.read_text())
    assert doc["inputs"] == {"parts": "../tables/report_parts.json", "findings": "../tables/findings.md"}
    moved = tmp_path / "elsewhere"
    (d).rename(moved)  # the manifest is relative to itself: the folder can move
    p = ReportInputs(
        moved / "report" / "report_inputs.json",
        json.dumps({"engine": "quarto", "version": "Quarto 1.2.3", "started": "2026-01-01T00:00:00+00:00"}),
    )
    assert p["level"] == "95%"
    assert p.md("table1").data.startswith("| a |")
    assert p.file_md("findings").data == "- one finding"
    panel = p.provenance().data
    assert "<dt>commit</dt><dd><code>abc</code></dd>" in panel and "3 inputs" in panel
    assert "<dt>rendered</dt><dd>2026-01-01T00:00:00+00:00 by the Quarto engine (Quarto 1.2.3)</dd>" in panel
    with pytest.raises(KeyError, match="no part named 'table9'"):
        p["table9"]
    with pytest.raises(KeyError, match=r"no input named 'figure_z' \(has: parts, findings\)"):
        p.image("figure_z")
    with pytest.raises(ValueError, match="needs its manifest"):
        ReportInputs("")


def test_provenance_panel_without_a_stamp_says_unknown():
    assert "<dd>unknown by the unknown engine</dd>" in provenance_panel([], 0, None)


def test_stamp_and_config_hash_are_values_not_environment(tmp_path, monkeypatch):
    """The page gets the engine and start time as a parameter, the sidecar the config hash as an
    argument: a variable left in the environment reaches neither. An inline Markdown object is
    placed as markdown."""
    monkeypatch.setenv("SSD_MATH_CONFIG_HASH", "from-the-environment")
    qmd = tmp_path / "s.qmd"
    qmd.write_text(
        '---\ntitle: s\n---\n\n```{python}\n#| tags: [parameters]\nstamp = ""\n```\n\n'
        "```{python}\nimport json\nfrom IPython.display import Markdown\ns = json.loads(stamp)\n```\n\n"
        "Engine `{python} s['engine']` since `{python} s['started']`.\n\n`{python} Markdown('*placed*')`\n"
    )
    out = tmp_path / "o" / "s.html"
    info = render(qmd, out, engine="offline", stamp_param="stamp", config_hash="from-the-param")
    html = out.read_text()
    assert f"Engine offline since {info['render_started']}." in html
    assert "<em>placed</em>" in html
    assert json.loads(out.with_name("s.html.meta.json").read_text())["config_hash"] == "from-the-param"


def _noise(runs):
    return pl.DataFrame(
        [
            {
                "run": r,
                "optimizer_state": st,
                "peak_lr": 1e-4,
                "steps": 8,
                "frac_changed_mean": f,
                "frac_changed_at_peak_lr": f,
                "frac_changed_mean_last_third": f,
                "ppl_first": 2.0,
                "ppl_last": 1.5,
                "grad_norm_median": 1.0,
                "signal_norm_last": 0.1,
                "B_simple_last": 10.0,
            }
            for r, st, f in runs
        ]
    )


def test_arms_and_noise_runs_are_the_configs():
    """The bf16-vs-fp32 sentence names only runs the config names; a stale run in the summary
    (here one that would pair with the noise run) changes nothing."""
    base = [("ssd", "fp32", 0.4), ("bf16-state", "bf16", 0.01)]
    got = noise_parts(_noise(base), ["ssd"], ["bf16-state"])
    assert got["noise_contrast"] == (
        "\nAt the same peak lr 0.0001 on the same samples, the bf16-only optimizer state "
        f"changes {fmt.pct(0.01)} of the stored weights per step on average, the fp32 "
        f"state (ssd) {fmt.pct(0.4)}.\n"
    )
    stale = noise_parts(_noise([*base, ("zz-stale", "fp32", 0.9)]), ["ssd"], ["bf16-state"])
    assert stale["noise_contrast"] == got["noise_contrast"]
    assert "configured" in noise_parts(_noise(base), ["ssd"], [])["noise_contrast"]  # no noise run named: say how


def test_build_parts_names_a_missing_input(tmp_path):
    with pytest.raises(ValueError, match="no input file named .*table2"):
        build_parts(
            {"numbers": tmp_path / "n.json", "findings_json": tmp_path / "f.json", "table1": "t1.csv"},
            {},
            arms=[],
            noise_runs=[],
            experiment="x",
        )


def test_provenance_rows_escape_html():
    prov = {
        "git": {"commit": "0123456789abcdef", "dirty": True},
        "machines": [],
        "packages": {"torch": ["2.0"]},
        "experiment": "<x>",
        "config_hash": ["h1"],
        "python": ["3.11"],
    }
    rows = dict(provenance_rows(prov))
    assert rows["experiment"] == "<code>&lt;x&gt;</code>, config hash <code>h1</code>"
    assert rows["commit"] == "<code>0123456789ab</code> (uncommitted changes)"
    assert rows["machine"] == "not recorded" and rows["packages"] == "torch 2.0; Python 3.11"
