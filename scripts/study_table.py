"""Rule study_table: the study's claims beside this run's -> tables/study_vs_run.{csv,md}
(ssd_math.study.write_study_table)."""

from ssd_math.io import write_meta
from ssd_math.rulelog import rule_log
from ssd_math.study import write_study_table

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    i, p = sm.input, sm.params
    df = write_study_table(
        i.claims,
        sm.output.csv,
        sm.output.md,
        findings_json=i.findings,
        noise_summary=i.noise,
        metrics=i.metrics,
        arms=dict(p.arms),
        ssd_arm=p.ssd_arm,
        main_set=p.main_set,
        absolute_comparable=bool(p.absolute_comparable),
    )
    write_meta(
        sm.output.csv,
        rule="study_table",
        claims=str(i.claims),
        n_claims=df.height,
        agrees={k: int((df["agrees"] == k).sum()) for k in ("yes", "no", "cannot decide")},
    )
    log.info("study vs run:\n%s", df.select("key", "run_verdict", "agrees"))
