"""Rule probe_positions: carriers (stratified) and positions -> ssd_math.probe_positions.build_positions."""

from ssd_math.io import write_meta
from ssd_math.probe_positions import build_positions
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    p = sm.params
    spans = None
    if p.probe["labeled"]:
        from ssd_math.synth import label_spans as spans
    summary = build_positions(
        dict(zip(p.generators, sm.input.evals)),
        sm.input.tokenizer,
        sm.output.positions,
        probe=p.probe,
        seed=p.seed,
        label_spans=spans,
        trust_remote_code=p.trust_remote_code,
    )
    write_meta(sm.output.positions, rule=sm.rule, probe=p.probe, seed=p.seed, **summary)
    log.info("%s", summary)
