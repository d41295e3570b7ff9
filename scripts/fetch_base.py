"""Rule fetch_base: the hub base model at its pinned revision -> <results>/models/base
(ssd_math.hub.fetch_base)."""

from ssd_math.hub import fetch_base
from ssd_math.rulelog import rule_log

sm = snakemake  # noqa: F821
with rule_log(sm) as log:
    info = fetch_base(sm.params.hub, sm.output.model, trust_remote_code=bool(sm.params.trust_remote_code))
    log.info(
        "%s@%s -> %s (%d files, %.2f GB)",
        info["hub_id"],
        info["revision"],
        sm.output.model,
        len(info["files"]),
        sum(info["files"].values()) / 1e9,
    )
