"""Rule findings: the report's findings (one sentence per finding, from the tables) and its
provenance panel -> ssd_math.findings.write_findings."""

from ssd_math.findings import write_findings
from ssd_math.io import write_meta
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    i = sm.input
    tables = {
        "table1": i.table1,
        "table2": i.table2,
        "table1_breakdown": i.table1_breakdown,
        "noise_summary": i.noise,
        "checkpoints": i.checkpoints,
        "probe_deltas": i.probe_deltas[0] if i.probe_deltas else None,
    }
    obj = write_findings(
        tables,
        sm.output.md,
        sm.output.json,
        ssd_arm=sm.params.ssd_arm,
        arms=list(sm.params.arms),
        experiment=sm.params.experiment,
        workdir=sm.params.workflow_dir,
        provenance_inputs=list(i.provenance),
        base_model_dir=i.base,
    )
    write_meta(sm.output.md, rule="findings", n_findings=len(obj["findings"]), git=obj["provenance"]["git"])
    log.info("findings:\n%s", "\n".join(f["text"] for f in obj["findings"]))
    log.info("provenance: %s", obj["provenance"])
