"""Rule report: the rule's inputs as a manifest (report_inputs.json) -> report/report.qmd -> HTML
(quarto render when on PATH, else the offline engine, ssd_math.qmd_render).

The page reads only the manifest (parameter ``manifest``) and the render's stamp (parameter
``rendered``: engine, version, start time). The configured title (config report.title) is the
page's title: it overrides the .qmd's front matter (Quarto's ``-M title:...``)."""

from ssd_math.io import write_meta
from ssd_math.report import render
from ssd_math.report_inputs import write_manifest
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    inputs = {k: v for k, v in sm.input.items() if k not in ("qmd", "css")}
    manifest = write_manifest(sm.output.manifest, inputs)
    write_meta(sm.output.manifest, rule="report", inputs=sorted(inputs))
    info = render(
        sm.input.qmd,
        sm.output.html,
        params={"manifest": str(manifest)},
        stamp_param="rendered",
        metadata={"title": sm.params.title},
        config_hash=sm.params.config_hash,
    )
    log.info("rendered with %s: %s", info.get("engine"), info)
