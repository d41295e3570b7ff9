"""Rule probe_forward: one model's next-token distributions at every position -> ssd_math.probe_forward.forward_model."""

from ssd_math.io import write_meta
from ssd_math.probe_forward import forward_model
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    p = sm.params
    n = forward_model(
        sm.input.positions,
        sm.input.model,
        sm.output.dists,
        model_name=sm.wildcards.model,
        views_=p.views,
        temperature=p.temperature,
        top_n=p.top_n,
        max_batch_tokens=p.max_batch_tokens,
        device=p.device,
        dtype=p.dtype,
        trust_remote_code=p.trust_remote_code,
        threads=sm.threads,
    )
    write_meta(
        sm.output.dists,
        rule=sm.rule,
        model=sm.wildcards.model,
        views=p.views,
        temperature=p.temperature,
        device=p.device,
        dtype=p.dtype,
        n_rows=n,
    )
    log.info("%d positions", n)
