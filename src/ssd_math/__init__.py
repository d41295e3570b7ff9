"""ssd-math: simple self-distillation (SSD) on competition math, as a Snakemake pipeline.

One module per responsibility (see README "Where things are built"):
io (atomic files, provenance), config (schema validation, targets), synth (the embedded task),
tokenizer / modeling (the tiny base model), prompting (chat template), sampler (transformers and
vLLM backends), filtering, train (the SFT loop) with train_data / train_model / train_parallel / train_state, noise (noise-trap instrumentation), grading
(one answer: extraction and math-verify) and grading_pool (math-verify in a process pool), stats,
tables, figures / figures_training / figures_probe, report_parts / report_probe / report_appendix
(the page's text), report (render: Quarto, else the offline engine qmd_parse / qmd_render),
report_inputs (what the page reads), probe_positions / probe_forward / probe_analysis
(the locks-and-forks probe); the real recipe: problem_sources (load and validate problem sources,
the training pool, the eval sets), decontam, prepare_real_data (the data rule), hub (fetching the
base model), planner (GPU-hour plan); schema (the config schema: every default and limit).
"""

__version__ = "0.1.0"
