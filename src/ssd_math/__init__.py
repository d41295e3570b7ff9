"""ssd-math: simple self-distillation (SSD) on competition math, as a Snakemake pipeline.

One module per responsibility (see README "Where things are built"):
io (atomic files, provenance), config (schema validation, targets), synth (the embedded task),
tokenizer / modeling (the tiny base model), prompting (chat template), sampler (transformers and
vLLM backends), filtering, train (the SFT loop), noise (noise-trap instrumentation), grading
(one answer: extraction and math-verify) and grading_pool (math-verify in a process pool), stats,
tables, figures, report (offline .qmd renderer), probe_positions / probe_forward / probe_stats /
probe_analysis (the locks-and-forks probe); the real recipe: problem_sources (load and validate
problem sources), problem_sets (the training pool, the eval sets), decontam, prepare_real_data (the
data rule), hub (fetching the base model), planner (GPU-hour plan); schema (the config schema:
every default and limit).
"""

__version__ = "0.1.0"
