"""ssd-math: simple self-distillation (SSD) on competition math, as a Snakemake pipeline.

One module per responsibility (see README "Where things are built"):
io (atomic files, provenance), config (schema validation, targets), synth (the embedded task),
tokenizer / modeling (the tiny base model), prompting (chat template), sampler (transformers and
vLLM backends), filtering, train (the SFT loop), noise (noise-trap instrumentation), grading
(math-verify in a process pool), stats, tables, figures, report (offline .qmd renderer);
the real recipe: data (sources, pools, eval sets), decontam, realdata (the data rule), hub
(fetching the base model), planner (GPU-hour plan).
"""

__version__ = "0.1.0"
