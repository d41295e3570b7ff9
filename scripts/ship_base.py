"""Rule ship_base: the pretrained tiny base -> model.ship_dir with provenance.json
(ssd_math.hub.ship_base)."""

from ssd_math.hub import ship_base
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    prov = ship_base(
        sm.input.model, sm.output.model, cfg=sm.params.cfg, train_log=sm.input.log, workdir=sm.params.workflow_dir
    )
    log.info(
        "%s -> %s: weights sha256 %s, data recipe %s, base recipe %s",
        sm.input.model,
        sm.output.model,
        prov["weights_sha256"],
        prov["data_recipe_hash"],
        prov["config_recipe_hash"],
    )
