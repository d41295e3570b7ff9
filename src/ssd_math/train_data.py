"""The rows a training run reads: each row encoded and padded, and the rows of each optimizer step
(:mod:`ssd_math.train`'s data).

Data
    Rows {"prompt", "completion", "finish_reason"?}. The prompt is the fully rendered chat
    prompt: prompt and completion are tokenized separately without special tokens and
    concatenated; the eos token is appended when finish_reason is "stop" or absent (a
    length-stopped completion did not end); then truncated to ``max_len``. Labels are -100 on
    prompt tokens and padding (loss on completion tokens only). The order of an epoch is a
    permutation that is a pure function of (seed, epoch); an epoch has
    floor(rows / global_batch) optimizer steps (the remainder rows of an epoch are dropped).
    ``group_by_length: true`` groups rows of similar length into the same global batch (less
    padding): transformers' ``get_length_grouped_indices`` (mega-batches of 50 batches sorted by
    length), then the batches in a seeded random order, so a long-to-short sweep within each
    mega-batch does not become a curriculum.
"""

from __future__ import annotations

import numpy as np
import torch


def encode_row(row: dict, tok, max_len: int) -> tuple[list[int], list[int]]:
    """(input_ids, labels): prompt tokens labelled -100, completion (+eos if stopped) trained."""
    p = tok(row["prompt"], add_special_tokens=False)["input_ids"]
    c = tok(row["completion"], add_special_tokens=False)["input_ids"]
    if row.get("finish_reason", "stop") in ("stop", None):
        if tok.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token to append to stopped completions")
        c = c + [tok.eos_token_id]
    ids = (p + c)[:max_len]
    labels = ([-100] * len(p) + c)[:max_len]
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict:
    """Right-pad to the longest; padding has attention 0 and label -100."""
    n = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def n_loss_tokens(labels: list[int]) -> int:
    """Tokens that carry loss after the causal shift (label position 0 predicts nothing)."""
    return sum(1 for y in labels[1:] if y != -100)


def epoch_order(n_rows: int, seed: int, epoch: int, lengths: list[int] | None = None, batch: int = 1) -> list[int]:
    """The row order of an epoch: a pure function of (seed, epoch) (and, with ``lengths``, of
    the rows' lengths: length-grouped batches of ``batch`` rows in a random order)."""
    if lengths is None:
        return np.random.default_rng([seed, epoch]).permutation(n_rows).tolist()
    from transformers.trainer_pt_utils import get_length_grouped_indices

    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    grouped = get_length_grouped_indices(list(lengths), batch, generator=g)
    n_batches = len(grouped) // batch  # the remainder rows are dropped, as without grouping
    perm = np.random.default_rng([seed, epoch, 1]).permutation(n_batches)
    return [i for b in perm for i in grouped[b * batch : (b + 1) * batch]]


def global_batch_rows(
    step: int, n_rows: int, s: dict, steps_per_epoch: int, lengths: list[int] | None = None
) -> list[int]:
    """Row indices of 0-based optimizer step ``step`` (the data position); ``lengths`` (token
    counts per row) when ``s["group_by_length"]``."""
    epoch, k = divmod(step, steps_per_epoch)
    order = epoch_order(n_rows, s["seed"], epoch, lengths if s.get("group_by_length") else None, s["global_batch"])
    return order[k * s["global_batch"] : (k + 1) * s["global_batch"]]
