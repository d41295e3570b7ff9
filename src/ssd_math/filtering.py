"""The SSD truncation filter: drop length-stopped samples (truncated answers) before training.

Dropping them keeps the health metrics (think-close, boxed, length-stop) near the baseline; it
also adds a small bias toward correct answers, since a truncated answer is always wrong (study §4).
"""

from __future__ import annotations

from collections import Counter


def filter_samples(rows: list[dict], *, filter_length_stop: bool = True) -> tuple[list[dict], list[dict], dict]:
    """Split sample rows into (kept, dropped, summary).

    A row is dropped when ``filter_length_stop`` and its ``finish_reason`` is ``"length"``. Rows
    without a known finish_reason raise ``ValueError`` naming the row: silently keeping a
    truncated sample is how "the model got worse" goes unexplained."""
    kept: list[dict] = []
    dropped: list[dict] = []
    reasons: Counter = Counter()
    for i, row in enumerate(rows):
        fr = row.get("finish_reason")
        if fr not in ("stop", "length"):
            raise ValueError(
                f"sample row {i} (prompt_id={row.get('prompt_id')!r}, sample_index="
                f"{row.get('sample_index')!r}): finish_reason must be 'stop' or 'length', got {fr!r}")
        reasons[fr] += 1
        if filter_length_stop and fr == "length":
            dropped.append(row)
        else:
            kept.append(row)
    n = len(rows)
    tokens_kept = sum(int(r.get("n_completion_tokens", 0)) for r in kept)
    summary = {
        "n_samples": n,
        "n_kept": len(kept),
        "n_dropped": len(dropped),
        "filter_length_stop": filter_length_stop,
        "finish_reasons": dict(reasons),
        "length_stop_rate": reasons["length"] / n if n else 0.0,
        "kept_completion_tokens": tokens_kept,
        "mean_kept_completion_tokens": tokens_kept / len(kept) if kept else 0.0,
    }
    if not kept:
        raise ValueError(f"the filter kept no sample out of {n}: nothing to train on "
                         "(raise train_sampling.max_new_tokens or turn the arm's filter_length_stop off)")
    return kept, dropped, summary
