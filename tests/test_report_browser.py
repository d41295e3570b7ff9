"""The smoke run's report as a reader meets it: opened in headless Chromium at 1280 px (and the
tables a reader must see whole at 800 px too).

Reuses the session's smoke DAG run (conftest.smoke_run; no second DAG run) and drives the system
Chromium (Debian's ``chromium``) through playwright's DevTools-protocol client, never a browser
download of playwright's own. Checks: every image decodes, no console error or page error, no
request leaves the file (it is self-contained), intervals never wrap, the page never scrolls
sideways, the findings and the provenance panel lead the page, captions are numbered once, and
the main flow (up to the appendix) fits in about eight screen heights; at 1280 and at 800 px
every column of the study table and of Tables 1 and 2 lies inside the viewport's width with no
cell's text cut; and an extra arm's folder on disk that the config does not name changes nothing
in the page (the report's inputs come from the config, never from the folders found). Saves a
full-page screenshot (``results/browser/report_screenshot.png``) and one of the study table at
1280 px (``results/browser/study_table.png``) and, when ``$SSD_MATH_ARTIFACTS`` names a folder,
copies there (CI artifacts); prints the page height.

Without Chromium or playwright the test skips with the reason, except under CI (``CI=true``),
where it fails: .ci/run installs both.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

WIDTH, SCREEN = 1280, 800  # a 1280 x 800 window: one "screen height" is 800 CSS px
NARROW = 800  # the narrow window the whole-table check also runs at
# the main flow's budget besides the study table that opens it: about 8 screen heights (the earlier
# budget, 10 screens with the study table at one line a row, about 0.75 of a screen, left 9.25)
MAX_SCREENS = 9.25
STUDY_SCREENS = 2  # the study table's own: every claim, wrapped to keep every column on screen
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return os.environ.get("SSD_MATH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs chromium and the test extra)")
    pytest.skip(reason)


# the page's own measurements, in one script (returns a JSON-able dict)
MEASURE = r"""
() => {
  const imgs = [...document.images].map(i => ({w: i.naturalWidth, h: i.naturalHeight,
      shown: i.getBoundingClientRect().width, complete: i.complete}));
  // every "[lo, hi]" interval in the text: the line boxes it occupies (1 = not wrapped)
  const wrapped = [];
  let n_intervals = 0;
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const re = /\[[−\-+]?\d[\d.]*%?,\s*[−\-+]?\d[\d.]*%?\]/g;
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest('pre, code, details:not([open])')) continue;
    for (const m of node.textContent.matchAll(re)) {
      const r = document.createRange();
      r.setStart(node, m.index); r.setEnd(node, m.index + m[0].length);
      const tops = new Set([...r.getClientRects()].filter(b => b.width > 0).map(b => Math.round(b.top)));
      n_intervals += 1;
      if (tops.size > 1) wrapped.push(m[0]);
    }
  }
  const app = document.getElementById('sec-appendix');
  const fnd = document.getElementById('sec-findings');
  const h1s = [...document.querySelectorAll('h1')].map(h => h.textContent.trim());
  const caps = [...document.querySelectorAll('figcaption, caption, .figure-caption')].map(c => c.textContent.trim());
  return {
    imgs, n_intervals, wrapped, h1s, caps,
    appendix_top: app ? app.getBoundingClientRect().top + window.scrollY : null,
    study_height: document.querySelector('.study-table') ? document.querySelector('.study-table').getBoundingClientRect().height : null,
    page_height: document.documentElement.scrollHeight,
    scroll_width: document.documentElement.scrollWidth,
    findings_items: fnd ? (fnd.closest('section') || document.body).querySelectorAll('.findings li').length : 0,
    findings_text: [...document.querySelectorAll('.findings li')].map(li => li.textContent),
    provenance: (document.querySelector('.provenance') || {}).textContent || null,
    provenance_top: document.querySelector('.provenance') ? document.querySelector('.provenance').getBoundingClientRect().top + window.scrollY : null,
  };
}
"""


# the study table and Tables 1-2: every header and cell inside the viewport, none with its text cut
# (a cell wider inside than its box), the table not scrolling inside itself
TABLES = r"""
() => {
  const vw = document.documentElement.clientWidth;
  const found = {study: document.querySelector('.study-table table'),
                 table1: document.querySelector('#tbl-one table, table#tbl-one'),
                 table2: document.querySelector('#tbl-two table, table#tbl-two')};
  const out = {vw, tables: {}};
  for (const [name, t] of Object.entries(found)) {
    if (!t) { out.tables[name] = null; continue; }
    const outside = [], cut = [];
    const cells = [...t.querySelectorAll('th, td')];
    for (const c of cells) {
      const r = c.getBoundingClientRect();
      const label = c.textContent.trim().slice(0, 40);
      if (r.width <= 0 || r.left < -0.5 || r.right > vw + 0.5) outside.push(`${label} [${Math.round(r.left)}, ${Math.round(r.right)}]`);
      if (c.scrollWidth > c.clientWidth + 1) cut.push(`${label} (${c.scrollWidth} > ${c.clientWidth})`);
    }
    out.tables[name] = {columns: [...t.querySelectorAll('thead th')].map(h => h.textContent.trim()),
                        rows: t.querySelectorAll('tbody tr').length, n_cells: cells.length, outside, cut,
                        scroll: t.scrollWidth, client: t.clientWidth};
  }
  return out;
}
"""

# what the page says, without the provenance panel (its "rendered" row is the render's time)
PAGE_TEXT = r"""
() => { const b = document.body.cloneNode(true); b.querySelectorAll('.provenance').forEach(e => e.remove());
        b.querySelectorAll('details').forEach(d => d.setAttribute('open', ''));
        return b.textContent.replace(/\s+/g, ' ').trim(); }
"""


def _browse(report: Path, visit):
    """Open ``report`` in Chromium at WIDTH x SCREEN; ``visit(page)`` returns what to keep. Returns
    (kept, console errors, external requests)."""
    from playwright.sync_api import sync_playwright

    errors, external = [], []
    with sync_playwright() as p, tempfile.TemporaryDirectory(prefix="ssd-chromium-") as profile:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=chromium_path(),
            headless=True,
            args=FLAGS,
            viewport={"width": WIDTH, "height": SCREEN},
            device_scale_factor=1,
        )
        try:
            page = ctx.new_page()
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))

            def route(r):
                url = r.request.url
                if url.startswith(("file:", "data:", "blob:", "about:")):
                    return r.continue_()
                external.append(url)
                return r.abort()

            ctx.route("**/*", route)
            page.goto(report.as_uri(), wait_until="load")
            page.wait_for_function("[...document.images].every(i => i.complete)")
            kept = visit(page)
        finally:
            ctx.close()
    return kept, errors, external


@pytest.fixture(scope="module")
def page_report(request):
    """Open the smoke report in Chromium; returns (measurements, console errors, external
    requests, screenshot path, report path). ``$SSD_MATH_BROWSER_REPORT`` (a report.html) opens
    that report instead of the smoke run's, to iterate on the report without the DAG."""
    chromium = chromium_path()
    if chromium is None:
        _unavailable("no chromium executable on PATH (Debian: apt-get install -y chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if os.environ.get("SSD_MATH_BROWSER_REPORT"):
        report = Path(os.environ["SSD_MATH_BROWSER_REPORT"]).resolve()
    else:
        wd, _ = request.getfixturevalue("smoke_run")
        report = wd / "results" / "report" / "report.html"
    # not beside the report: results/report/ holds only DAG artifacts (each with a sidecar, which
    # tests/test_e2e.py checks); the screenshot is the test's, so it goes to results/browser/
    shot = report.parent.parent / "browser" / "report_screenshot.png"
    study_shot = shot.with_name("study_table.png")
    shot.parent.mkdir(parents=True, exist_ok=True)

    def visit(page):
        m = page.evaluate(MEASURE)
        m["tables"] = {WIDTH: page.evaluate(TABLES)}
        page.screenshot(path=str(shot), full_page=True)
        page.locator(".study-table").first.screenshot(path=str(study_shot))
        page.set_viewport_size({"width": NARROW, "height": SCREEN})
        page.wait_for_timeout(200)  # the relayout
        m["tables"][NARROW] = page.evaluate(TABLES)
        return m

    m, errors, external = _browse(report, visit)
    art = os.environ.get("SSD_MATH_ARTIFACTS")
    if art:
        Path(art).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(art) / "report_screenshot.png")
        shutil.copyfile(study_shot, Path(art) / "study_table.png")
    main = m["appendix_top"]
    print(
        f"\nreport at {WIDTH} px: page {m['page_height']} px, main flow (up to the appendix) {main} px "
        f"= {main / SCREEN:.2f} screens of {SCREEN} px, the study table {m['study_height']:.0f} px; {len(m['imgs'])} images, {m['n_intervals']} intervals; "
        f"screenshot {shot}"
    )
    return m, errors, external, shot, report


@pytest.mark.parametrize("width", [WIDTH, NARROW])
def test_study_table_and_tables_1_2_whole_on_screen(page_report, width):
    """Every column of the study table and of Tables 1-2 inside the viewport's width, no text cut."""
    m, *_ = page_report
    got = m["tables"][width]
    assert got["vw"] <= width
    for name in ("study", "table1", "table2"):
        t = got["tables"][name]
        assert t is not None, f"no {name} table in the page"
        assert t["n_cells"] > len(t["columns"]) >= 2, (name, t)
        assert not t["outside"], (
            f"{name} at {width} px: cells outside the viewport ({got['vw']} px): {t['outside'][:5]}"
        )
        assert not t["cut"], f"{name} at {width} px: cells with their text cut: {t['cut'][:5]}"
        assert t["scroll"] <= t["client"] + 1, f"{name} at {width} px scrolls inside itself: {t}"
    study = got["tables"]["study"]
    assert len(study["columns"]) == 5 and study["columns"][-1] == "agrees", study["columns"]
    assert study["rows"] >= 16


def test_the_study_table_has_the_studys_numbers(page_report):
    """The study column holds the study's published estimate and interval (docs/study.md §5) in
    the rows it gives numbers for: Table 1's four differences, Table 2's and the harder-problems
    contrast."""
    *_, report = page_report
    html = report.read_text(encoding="utf-8")
    for est in ("+2.40", "+4.35", "+1.90", "+3.01", "−0.67"):
        assert f"Δ {est} pp" in html or f"Δ&nbsp;{est}&nbsp;pp" in html, est


def test_study_table_screenshot_saved(page_report):
    *_, shot, _ = page_report
    data = shot.with_name("study_table.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") <= WIDTH


def test_an_extra_arm_folder_on_disk_changes_nothing(request, page_report, tmp_path):
    """An arm built earlier (its samples and training log on disk) that the config does not name
    is no input of the report: the DAG has nothing to do, and the page rebuilt from scratch reads
    the same, word for word, without naming it."""
    if os.environ.get("SSD_MATH_BROWSER_REPORT"):
        pytest.skip("needs the smoke run's working directory ($SSD_MATH_BROWSER_REPORT opens another report)")
    from conftest import snakemake

    wd, _ = request.getfixturevalue("smoke_run")
    report = wd / "results" / "report" / "report.html"
    before, *_ = _browse(report, lambda page: page.evaluate(PAGE_TEXT))
    extra = "zz-stale-arm"
    made = [wd / "results" / "samples" / extra, wd / "results" / "train" / extra]
    try:
        for d in made:
            d.mkdir(parents=True)
        src = next((wd / "results" / "samples").glob("*/filter_summary.json"))
        (made[0] / "filter_summary.json").write_text(src.read_text().replace('"n_kept": ', '"n_kept": 9'))
        log = next((wd / "results" / "train").glob("*/log.jsonl"))
        shutil.copyfile(log, made[1] / "log.jsonl")
        dry = snakemake(wd, "-n")
        assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]
        snakemake(wd, "--forcerun", "report_parts")
        after, *_ = _browse(report, lambda page: page.evaluate(PAGE_TEXT))
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)
    assert extra not in after
    assert after == before


def test_images_decode_and_no_errors_or_requests(page_report):
    m, errors, external, _, _ = page_report
    assert len(m["imgs"]) >= 8
    bad = [i for i in m["imgs"] if not (i["complete"] and i["w"] > 0 and i["h"] > 0)]
    assert not bad, f"images that did not decode: {bad}"
    assert not errors, errors
    assert not external, f"the report requested outside resources: {external}"


def test_layout_legible_at_1280(page_report):
    m, *_ = page_report
    assert m["scroll_width"] <= WIDTH, f"the page scrolls sideways: {m['scroll_width']} px"
    assert all(i["shown"] <= WIDTH for i in m["imgs"])
    assert m["n_intervals"] >= 10
    assert not m["wrapped"], f"intervals wrapped across lines: {m['wrapped'][:5]}"
    assert m["appendix_top"] is not None, "no #sec-appendix heading"
    assert m["study_height"] is not None and m["study_height"] <= STUDY_SCREENS * SCREEN, m["study_height"]
    main = m["appendix_top"] - m["study_height"]
    assert main <= MAX_SCREENS * SCREEN, (
        f"main flow besides the study table is {main / SCREEN:.1f} screens of {SCREEN} px (budget {MAX_SCREENS})"
    )


def test_study_table_findings_and_provenance_lead(page_report):
    m, *_ = page_report
    h1s = [re.sub(r"^\d+\s*", "", h) for h in m["h1s"] if not h.startswith("Simple")]
    assert h1s[:2] == ["The study beside this run", "Findings"], m["h1s"]
    assert m["findings_items"] >= 6
    assert any("matched baseline" in t for t in m["findings_text"])
    # a finding with a verdict quotes its n; one the run cannot decide says so instead
    assert all(re.search(r"n\s=\s\d+", t) or "cannot decide" in t for t in m["findings_text"]), m["findings_text"]
    pv = m["provenance"]
    assert pv and "commit" in pv and "config hash" in pv and "rendered" in pv
    assert re.search(r"by the (offline|Quarto) engine", pv)
    assert m["provenance_top"] < 2 * SCREEN  # seen without scrolling far


def test_captions_numbered_once(page_report):
    m, *_ = page_report
    caps = [" ".join(c.split()) for c in m["caps"]]
    assert caps
    double = [c for c in caps if re.match(r"(Figure|Table) \d+: (Figure [A-Z]\.|The study's)", c)]
    assert not double, double
    assert any("(study Figure A)" in c for c in caps) and any("(study Table 1)" in c for c in caps)


def test_screenshot_saved(page_report):
    *_, shot, _ = page_report
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(data[16:20], "big")
    assert width == WIDTH


@pytest.mark.parametrize("ci,outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_missing_browser_fails_under_ci(monkeypatch, ci, outcome):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(BaseException, match="no chromium") as ei:  # a skip must not pass for a failure
        _unavailable("no chromium executable on PATH")
    assert type(ei.value) is outcome
