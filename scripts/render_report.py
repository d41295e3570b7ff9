"""Rule report: report/report.qmd -> HTML (quarto render when on PATH, else ssd_math.report offline).

The configured title (config report.title) is the page's title: it overrides the .qmd's front
matter (Quarto's ``-M title:...``), and the cells also get it as the ``title`` parameter."""

from pathlib import Path

from ssd_math.report import render
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    params = {"results": str(Path(sm.params.results).resolve()), "title": sm.params.title,
              "experiment": sm.params.experiment}
    info = render(sm.input.qmd, sm.output.html, params=params, metadata={"title": sm.params.title})
    log.info("rendered with %s: %s", info.get("engine"), info)
