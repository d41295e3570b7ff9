"""Cost planner: every GPU job of the DAG with its expected tokens and GPU-hours, before a run;
beside the measured times (Snakemake ``benchmark:`` files) after it.

    python scripts/plan_costs.py --configfile config/real.yaml             # print the plan
    python scripts/plan_costs.py --configfile config/real.yaml --csv plan.csv
    python scripts/plan_costs.py --configfile config/real.yaml --measured  # after a run

(or ``snakemake --configfile config/real.yaml plan`` -> <results>/plan/cost_plan.{csv,txt}, and
``... plan_measured`` -> <results>/tables/cost_plan.{csv,txt} once the GPU jobs have run).

The job list is ssd_math.layout's (the one the rules expand: sampling shards of every default
arm, SFT of every arm, the T grid of base + arms on every eval set, pass@k runs, every
checkpoint on the hard set, the baseline sweeps), with the rules' benchmark paths;
tests/test_real_pipeline.py checks it against ``snakemake -n``. Work per job (tokens) comes from the config and ``planner.expected``; the
arithmetic (tokens / (rate x gpus) + startup) is ssd_math.planner's. GPU counts are the rules'
``gpu`` resources (:func:`gpu_counts`, also used by rules/common.smk).

Token model. A sampling or eval job generates ``n_prompts x samples_per_prompt x mean`` tokens,
``mean = fraction x cap`` (``sample_gen_fraction`` of the arm's cap, ``eval_gen_fraction`` of
``eval.max_new_tokens``). SFT trains on the kept samples: with the length filter on, the
dropped ones are exactly the samples at the cap, so the kept mean is
``(mean_all - (1 - kept_fraction) x cap) / kept_fraction`` (floored at 5% of the cap).
"""

import argparse
import sys
from pathlib import Path

from ssd_math.config import load_config
from ssd_math.derive import serve_dtype
from ssd_math.planner import build_plan, describe, format_plan, merge_measured, plan_to_csv, plan_totals, reuse_summary


def disk_note(cfg) -> str:
    """How the disk column was computed (planner.sft_disk), or why it is absent."""
    if not cfg["planner"]["expected"].get("model_params"):
        return "# disk: set planner.expected.model_params for the disk column\n"
    return (
        f"# disk: model folders (checkpoints + final) in the served dtype "
        f"({serve_dtype(cfg) or 'float32'}), {cfg['planner']['expected']['model_params']:.4g} "
        f"parameters; resume_gb = fp32 weights + AdamW state of one training job, removed when "
        f"it finishes\n"
    )


def _write(rows: list[dict], csv_path, txt_path, cfg) -> str:
    text = describe(cfg) + format_plan(rows)
    plan_to_csv(rows, csv_path)
    if txt_path:
        from ssd_math.io import write_text

        write_text(txt_path, text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configfile", default="config.yaml", help="config YAML (default config.yaml)")
    ap.add_argument("--results", help="override the config's results folder")
    ap.add_argument("--csv", help="also write the plan as CSV here")
    ap.add_argument(
        "--measured",
        action="store_true",
        help="join <results>/benchmarks/**.tsv (after a run): measured hours beside expected",
    )
    args = ap.parse_args(argv)
    cfg = load_config(args.configfile)
    results = args.results or cfg["results"]
    rows = build_plan(cfg, results)
    if args.measured:
        rows = merge_measured(rows, [r["benchmark"] for r in rows if Path(r["benchmark"]).exists()])
    text = describe(cfg) + format_plan(rows)
    if not args.measured:
        text += "\n" + reuse_summary(cfg, results) + disk_note(cfg)
    if args.csv:
        plan_to_csv(rows, args.csv)
    sys.stdout.write(text)
    return 0


if "snakemake" in globals():
    from ssd_math.rulelog import rule_log

    sm = snakemake  # noqa: F821
    with rule_log(sm) as log:
        cfg = sm.params.cfg
        rows = build_plan(cfg, sm.params.results)
        if sm.rule == "plan_measured":
            rows = merge_measured(rows, list(sm.input.benchmarks))
        text = _write(rows, sm.output.csv, sm.output.txt, cfg)
        tot = plan_totals(rows)
        log.info("%d GPU jobs, %.1f GPU-hours expected\n%s", tot["jobs"], tot["gpu_hours"], text)
elif __name__ == "__main__":
    sys.exit(main())
