# ssd-math: simple self-distillation on competition math, from config to rendered report.
#
#   snakemake --cores 2                      # the embedded tiny CPU experiment -> results/report/report.html
#   snakemake --configfile config/real.yaml --workflow-profile profiles/slurm   # the real recipe on a cluster
#
# One .smk per stage; helpers (targets, input functions, wildcard constraints) in rules/common.smk.

import os

# The default experiment is config.yaml (of the working directory, else of this workflow).
# A --configfile on the command line REPLACES it (not merged key by key), so a config file is
# always the whole experiment: no default arm or sweep leaks into the real recipe.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml" if os.path.exists("config.yaml") else os.path.join(workflow.basedir, "config.yaml")


include: "rules/common.smk"
include: "rules/plan.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/sample.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
include: "rules/tables.smk"
include: "rules/probe.smk"
include: "rules/figures.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        rules.report.output.html,
