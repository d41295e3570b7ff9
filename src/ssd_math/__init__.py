"""ssd-math: simple self-distillation (SSD) on competition math, as a Snakemake pipeline.

One job per module, each named in its docstring; the modules by pipeline stage, and which rule
calls which: docs/architecture.md (the layers are checked by tests/test_layers.py).
"""

__version__ = "0.1.0"
