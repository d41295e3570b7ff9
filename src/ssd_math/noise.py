"""The "noise trap" instrumentation (study §4): are the updates real, and is there signal?

Two measurements, logged at every optimizer step by :mod:`ssd_math.train` when
``spec["instrument"]["enabled"]``:

1. **Weights** (:class:`WeightChangeTracker`). The model is *stored* (shipped, evaluated) in a
   low-precision dtype, bf16 by default, while training keeps fp32 master weights. An update that
   is smaller than half a bf16 ulp of a weight never reaches the stored model. So before each
   optimizer step we keep the parameters rounded to ``store_dtype``; after the step we round
   again and count which stored values changed: overall, per parameter group, and a histogram of
   |Δw| of the *stored* values over log10-spaced bins (with a separate zero bin).

   Parameter groups, by name (:func:`param_group`, first match wins, case-insensitive):
     - ``norms``      names containing "norm" or "ln_" (RMSNorm/LayerNorm weights and biases,
                      including q_norm/k_norm inside attention)
     - ``embeddings`` "embed", "wte", "wpe", "lm_head" (input embeddings and the output head)
     - ``attention``  "attn" or "attention" (q/k/v/o projections and their biases)
     - ``mlp``        "mlp", "feed_forward", "ffn", "experts" (gate/up/down projections)
     - ``other``      everything else

   Implementation: one flat host-memory buffer of the stored dtype holds all parameters before
   the step (never a second copy on the accelerator), ordered so each group is one contiguous
   slice; after the step every parameter is streamed in chunks of ``CHUNK`` values: rounded to
   the stored dtype where it lives, |Δw| against the same chunk of the buffer, and one integer
   ``bincount`` of the top 16 bits of |Δw| added to its group's histogram. No temporary is
   larger than one chunk (docs/memory_plan.md).

2. **Gradient signal vs noise** (:class:`GradientNoiseEstimator`, McCandlish et al. 2018,
   "An Empirical Model of Large-Batch Training", appendix A). For a batch of B examples
   E|g_B|² = |G|² + tr(Σ)/B, with G the true gradient and Σ the per-example gradient covariance.
   Two batch sizes B_s < B_b with measured squared norms |g_s|², |g_b|² give unbiased estimates

       |G|²  ≈ (B_b |g_b|² − B_s |g_s|²) / (B_b − B_s)
       tr(Σ) ≈ (|g_s|² − |g_b|²) / (1/B_s − 1/B_b)

   Each single-step estimate is very noisy (|G|² can come out negative), so both are smoothed
   separately by an exponential moving average (bias-corrected like Adam's moments) before the
   ratio B_simple = tr(Σ)_ema / |G|²_ema, the "simple noise scale": the batch size at which
   noise and signal contribute equally to |g_B|². Raw and smoothed values are both returned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

GROUPS = ("embeddings", "attention", "mlp", "norms", "other")

# log10 edges of the |Δw| histogram: 1e-12 .. 1e0, one bin per decade. Bins reported are
# [zero, (0, 1e-12), [1e-12, 1e-11), ..., [1e-1, 1e0), >= 1e0]  -> len(edges) + 2 counts.
DEFAULT_DW_BINS: tuple[float, ...] = tuple(float(e) for e in range(-12, 1))

# Values per streamed piece of a parameter in the weight-change tracker: bounds its temporaries
# on the accelerator (a 2^24-value chunk: 32 MB store dtype + 2 x 64 MB fp32 + 128 MB int32 keys)
# whatever the largest parameter (Qwen3.5-4B's embedding has 636 M values).
CHUNK = 1 << 24

_DTYPES = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
}


def as_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        return name
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {sorted(_DTYPES)}") from None


def param_group(name: str) -> str:
    """The group of a parameter, from its name (see the module docstring for the rules)."""
    n = name.lower()
    if "norm" in n or "ln_" in n:
        return "norms"
    if any(k in n for k in ("embed", "wte", "wpe", "lm_head")):
        return "embeddings"
    if "attn" in n or "attention" in n:
        return "attention"
    if any(k in n for k in ("mlp", "feed_forward", "ffn", "experts")):
        return "mlp"
    return "other"


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (an FSDP2 parameter); a plain tensor as is."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


class WeightChangeTracker:
    """Fraction of *stored* parameter values changed by one optimizer step, and |Δw| histogram.

    Usage::

        tracker = WeightChangeTracker(model)            # layout fixed at construction
        tracker.before_step(model); optimizer.step(); row.update(tracker.after_step(model))

    ``after_step`` returns ``frac_changed``, ``frac_changed_<group>`` for every group present,
    ``n_changed``, ``n_params`` and ``dw_hist`` = {"edges_log10": [...], "counts": [...]} with
    counts laid out as [zero, below the first edge, one per consecutive edge pair, at/above the
    last edge]; bin i holds bf16(10**e_i) <= |Δw| < bf16(10**e_(i+1)) (edges rounded to bf16, so
    the binning is exact integer work on the top 16 bits of |Δw|; a changed value is one whose
    stored |Δw| is nonzero). Only trainable parameters (requires_grad) are tracked. Tied parameters count
    once (``named_parameters`` de-duplicates them).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        store_dtype: str | torch.dtype = "bfloat16",
        dw_bins: Sequence[float] = DEFAULT_DW_BINS,
        sum_over_processes=None,
    ):
        self.store_dtype = as_dtype(store_dtype)
        self.edges_log10 = [float(e) for e in dw_bins]
        if sorted(self.edges_log10) != self.edges_log10 or len(self.edges_log10) < 1:
            raise ValueError(f"dw_bins must be increasing log10 edges, got {dw_bins!r}")
        # bin edges 10**e rounded to bf16 (relative error < 0.4%): exact integer binning
        edges = torch.tensor([10.0**e for e in self.edges_log10], dtype=torch.float32)
        edge_bits = edges.to(torch.bfloat16).float().view(torch.int32) >> 16
        self._edge_keys = [max(1, int(k)) for k in edge_bits]
        # Sharded parameters (FSDP2 DTensors): each process tracks its local shard, and
        # ``sum_over_processes`` (a function summing an integer tensor over processes) turns the
        # per-shard counts into the model's; every process must call after_step.
        self._sum = sum_over_processes
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        # order by group so that each group is one contiguous slice of the flat buffer
        named.sort(key=lambda np_: GROUPS.index(param_group(np_[0])))
        self.names = [n for n, _ in named]
        self._numels = [_local(p).numel() for _, p in named]
        self.n_params = sum(self._numels)  # local (this process's shards)
        self.group_slices: dict[str, tuple[int, int]] = {}
        off = 0
        for (n, _), k in zip(named, self._numels):
            g = param_group(n)
            start, _end = self.group_slices.get(g, (off, off))
            self.group_slices[g] = (start, off + k)
            off += k
        self._params_device = named[0][1].device if named else torch.device("cpu")
        # The stored values before the step live in host memory, never on the accelerator: on a
        # 4B model a second copy of every parameter on the GPU is 8.4 GB (docs/memory_plan.md).
        # Pinned when the parameters are on CUDA, so the per-chunk copies are plain DMA.
        pin = self._params_device.type == "cuda"
        self._before = torch.empty(self.n_params, dtype=self.store_dtype, device="cpu", pin_memory=pin)
        self._have_before = False

    def before_step(self, model: torch.nn.Module) -> None:
        params = dict(model.named_parameters())
        off = 0
        with torch.no_grad():
            for name, k in zip(self.names, self._numels):
                flat = _local(params[name].detach()).reshape(-1)
                for a in range(0, k, CHUNK):  # rounded to the store dtype where the weights are
                    part = flat[a : a + CHUNK].to(self.store_dtype)
                    self._before[off + a : off + a + part.numel()].copy_(part)
                off += k
        self._have_before = True

    def _histograms(self, model: torch.nn.Module, present: list[str], n_keys: int) -> torch.Tensor:
        """Per group, the integer histogram of the top 16 bits of |Δw| (stored values), streamed
        one parameter chunk at a time: the only temporaries are one chunk's (``CHUNK`` values)."""
        params = dict(model.named_parameters())
        dev = self._params_device
        hists = torch.zeros((len(present), n_keys), dtype=torch.long, device=dev)
        row = {g: i for i, g in enumerate(present)}
        off = 0
        with torch.no_grad():
            for name, k in zip(self.names, self._numels):
                h = hists[row[param_group(name)]]
                flat = _local(params[name].detach()).reshape(-1)
                for a in range(0, k, CHUNK):
                    after = flat[a : a + CHUNK].to(self.store_dtype)
                    before = self._before[off + a : off + a + after.numel()].to(dev, non_blocking=True)
                    # |Δw| of the stored values, in fp32 (exact: both are values of the store
                    # dtype a few exponents apart)
                    dw = after.to(torch.float32).sub_(before.to(torch.float32)).abs_()
                    # For a non-negative float the int32 bit pattern is monotonic in the value,
                    # and its top 16 bits are the bf16 pattern. Edges are rounded to bf16, so
                    # "x >= edge" is exactly "top16(x) >= top16(edge)": one integer histogram
                    # over the 2^15 non-negative bf16 patterns, from which every bin (and the
                    # zero bin: pattern 0) is a cumsum lookup.
                    h += torch.bincount(dw.view(torch.int32) >> 16, minlength=n_keys)
                off += k
        return hists

    def after_step(self, model: torch.nn.Module) -> dict:
        if not self._have_before:
            raise RuntimeError("WeightChangeTracker.after_step called without before_step")
        self._have_before = False
        n_keys = 1 << 15
        present = [g for g in GROUPS if g in self.group_slices]
        hists = self._histograms(model, present, n_keys)
        sizes = torch.tensor(
            [b - a for a, b in (self.group_slices[g] for g in present)], dtype=torch.long, device=hists.device
        )
        if self._sum is not None:  # shards -> the whole model
            hists, sizes = self._sum(hists).to(hists.device), self._sum(sizes).to(hists.device)
        n_params = int(sizes.sum())
        out: dict = {"n_params": n_params}
        for g, h, size in zip(present, hists, sizes.tolist()):
            out[f"frac_changed_{g}"] = int(size - h[0]) / max(1, size)
        cum = hists.sum(0).cumsum(0).tolist()
        n_zero = cum[0]
        n_changed = n_params - n_zero
        at = [cum[k - 1] for k in self._edge_keys]  # count of |Δw| below each edge
        counts = [n_zero, at[0] - n_zero] + [b - a for a, b in zip(at, at[1:])] + [n_params - at[-1]]
        out.update(
            {
                "frac_changed": n_changed / max(1, n_params),
                "n_changed": n_changed,
                "dw_hist": {"edges_log10": self.edges_log10, "counts": counts},
            }
        )
        return {
            k: out[k]
            for k in (
                "frac_changed",
                "n_changed",
                "n_params",
                *(f"frac_changed_{g}" for g in GROUPS if g in self.group_slices),
                "dw_hist",
            )
        }


class GradientNoiseEstimator:
    """EMA-smoothed |G|², tr(Σ) and the simple noise scale B_simple (McCandlish et al. 2018)."""

    def __init__(self, ema: float = 0.9):
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        self.ema = ema
        self._g2 = 0.0
        self._trs = 0.0
        self._n = 0

    def update(self, g_small_sq: float, b_small: float, g_big_sq: float, b_big: float) -> dict:
        """One step's |g_s|² at batch b_small and |g_b|² at batch b_big (b_small < b_big)."""
        if not 0 < b_small < b_big:
            raise ValueError(f"need 0 < b_small < b_big, got {b_small}, {b_big}")
        g2_raw = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
        trs_raw = (g_small_sq - g_big_sq) / (1.0 / b_small - 1.0 / b_big)
        self._n += 1
        self._g2 = self.ema * self._g2 + (1 - self.ema) * g2_raw
        self._trs = self.ema * self._trs + (1 - self.ema) * trs_raw
        corr = 1.0 - self.ema**self._n  # Adam-style bias correction of the zero start
        g2_ema, trs_ema = self._g2 / corr, self._trs / corr
        return {
            "G2_raw": g2_raw,
            "trS_raw": trs_raw,
            "G2_ema": g2_ema,
            "trS_ema": trs_ema,
            "B_simple": trs_ema / g2_ema if g2_ema > 0 else None,
            "gB_norm": math.sqrt(max(0.0, g_big_sq)),
            "gs_norm": math.sqrt(max(0.0, g_small_sq)),
            "B_small": b_small,
            "B_big": b_big,
        }

    def state_dict(self) -> dict:
        return {"ema": self.ema, "g2": self._g2, "trs": self._trs, "n": self._n}

    def load_state_dict(self, state: dict) -> None:
        self.ema, self._g2, self._trs, self._n = state["ema"], state["g2"], state["trs"], state["n"]
