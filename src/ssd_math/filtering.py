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
                f"{row.get('sample_index')!r}): finish_reason must be 'stop' or 'length', got {fr!r}"
            )
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
        raise ValueError(
            f"the filter kept no sample out of {n}: nothing to train on "
            "(raise train_sampling.max_new_tokens or turn the arm's filter_length_stop off)"
        )
    return kept, dropped, summary


def check_reach(
    arm: str,
    summary: dict,
    trainers: dict[str, dict],
    *,
    samples_path: str = "",
    min_kept_fraction: float | None = None,
) -> None:
    """Stop at the filter, not after all of an arm's sampling at its SFT's start, when the kept
    samples give fewer optimizer steps than a checkpoint step asks for (config validation checks
    the steps against ``train_sampling.min_kept_fraction``; a hot arm can keep fewer).

    ``trainers``: ``{arm: {global_batch, epochs, max_steps, checkpoint_steps,
    checkpoints_past_end}}`` of every arm that trains on these samples (the arm itself and those
    whose data it is). The steps are :func:`ssd_math.train.plan_steps`'s: kept rows //
    global_batch x epochs, capped by max_steps. Raises ValueError naming the arm, the kept count
    and the fixes."""
    n_kept, n = int(summary["n_kept"]), int(summary["n_samples"])
    problems = []
    for name, s in trainers.items():
        if s.get("checkpoints_past_end") == "final" or not s.get("checkpoint_steps"):
            continue
        steps = n_kept // int(s["global_batch"]) * int(s["epochs"])
        if s.get("max_steps") is not None:
            steps = min(steps, int(s["max_steps"]))
        late = [k for k in s["checkpoint_steps"] if k > steps]
        if late:
            problems.append(
                f"{name} (global_batch {s['global_batch']} x {s['epochs']} epoch(s)) "
                f"reaches optimizer step {steps}, but sft.checkpoint_steps asks for "
                f"{late[0]}: set {name}.sft.checkpoints_past_end: final (those "
                f"checkpoints get the final weights) or lower sft.checkpoint_steps "
                f"to steps <= {steps}"
            )
    if problems:
        assumed = (
            f"; train_sampling.min_kept_fraction assumed at least {min_kept_fraction:.0%}"
            if min_kept_fraction is not None
            else ""
        )
        raise ValueError(
            f"arm {arm}: the length filter kept {n_kept} of {n} samples "
            f"({n_kept / n if n else 0:.1%}{assumed}), too few for its SFT: "
            + "; ".join(problems)
            + ". Or raise the arm's max_new_tokens (fewer length stops; it resamples). The samples "
            f"stay{' in ' + samples_path if samples_path else ''}: after a config fix only the "
            "filter and what follows rerun."
        )
