"""Rule filter_samples: drop length-stopped samples -> ssd_math.filtering.filter_samples, then
ssd_math.filtering.check_reach (enough kept for the arms' checkpoint steps)."""

from ssd_math.filtering import check_reach, filter_samples
from ssd_math.io import read_jsonl, write_json, write_jsonl, write_meta
from ssd_math.rulelog import rule_log

with rule_log(snakemake) as log:  # noqa: F821 (snakemake is injected)
    rows = read_jsonl(snakemake.input.samples)
    kept, dropped, summary = filter_samples(rows, filter_length_stop=bool(snakemake.params.filter_length_stop))
    write_jsonl(snakemake.output.kept, kept)
    write_jsonl(snakemake.output.dropped, dropped)
    summary["arm"] = snakemake.wildcards.arm
    write_json(snakemake.output.summary, summary)
    write_meta(snakemake.output.kept, rule="filter_samples", summary=summary)
    log.info(
        "kept %d of %d samples (dropped %d length-stopped)",
        summary["n_kept"],
        summary["n_samples"],
        summary["n_dropped"],
    )
    check_reach(
        snakemake.wildcards.arm,
        summary,
        dict(snakemake.params.sft_reach),  # noqa: F821
        samples_path=str(snakemake.input.samples),  # noqa: F821
        min_kept_fraction=snakemake.params.min_kept_fraction,
    )  # noqa: F821
