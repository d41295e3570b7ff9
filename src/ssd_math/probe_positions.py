"""Probing locks and forks (study §6), step 1 of 3 (rule probe_positions): the carriers and the
positions to probe in them.

:func:`build_positions` — carriers: prompt + completion pairs already sampled at the probe's
T_eval (the eval grid's generation files; nothing is generated again), stratified by length bin x
correctness x generator (:func:`select_carriers`); tokenized like training does (prompt and
completion separately); positions in each completion (:func:`carrier_positions`): regular
intervals, hot spots (before and right after each occurrence of a configured string, e.g.
``\\boxed``, ``Let``, ``Wait``, the method line) and seeded random ones; on the embedded task also
every labelled lock / fork (``synth.label_spans``) with its ground-truth target tokens. Step 2 is
:mod:`ssd_math.probe_forward`, step 3 :mod:`ssd_math.probe_analysis`.

Conventions: a *position* ``j`` of a completion is the next-token distribution that predicts
completion token ``j`` (logits at sequence index ``len(prompt_ids) + j - 1``). Probabilities are
softmax(logits / T) with the view's T; truncation follows the sampler's HF order (temperature ->
top-k -> top-p on the top-k-renormalised distribution, at least one token kept, top_p >= 1 off,
top_k <= 0 off). Entropies are in nats.
"""

from __future__ import annotations

import logging
import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .io import read_jsonl, stable_hash, write_jsonl
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)

#: The embedded task's method phrases: a fork span starting with their common prefix is moved to
#: the first character where the alternatives differ (the decision), e.g. "From the |left:".
FORK_ALTERNATIVES = ("From the left:", "From the right:")


# ----------------------------------------------------------------------------------- carriers
def select_carriers(
    rows_by_generator: dict[str, Sequence[dict]], *, per_generator: int, length_bins: int, seed: int
) -> list[dict]:
    """Stratified carriers: per generator, cells = length bin (quantiles of the completion's token
    count within that generator) x correct; ``per_generator`` rows drawn round-robin over the
    non-empty cells (each cell shuffled with ``random.Random(seed)``), so every cell is as even as
    its size allows. Rows without a completion are skipped."""
    rng = random.Random(seed)
    out = []
    for gen in sorted(rows_by_generator):
        rows = [r for r in rows_by_generator[gen] if r.get("completion")]
        if not rows:
            continue
        lens = np.array([int(r.get("n_completion_tokens") or len(r["completion"])) for r in rows])
        edges = np.quantile(lens, np.linspace(0, 1, length_bins + 1)[1:-1]) if length_bins > 1 else []
        cells: dict[tuple[int, bool], list[dict]] = defaultdict(list)
        for r, n in zip(rows, lens):
            cells[(int(np.searchsorted(edges, n, side="right")), bool(r.get("correct")))].append(r)
        keys = sorted(cells)
        for k in keys:
            rng.shuffle(cells[k])
        picked = 0
        while picked < per_generator and any(cells[k] for k in keys):
            for k in keys:
                if cells[k] and picked < per_generator:
                    r = cells[k].pop()
                    out.append(
                        {
                            "carrier_id": f"{gen}:{r['prompt_id']}:{r.get('sample_index', 0)}",
                            "generator": gen,
                            "prompt_id": str(r["prompt_id"]),
                            "prompt": r["prompt"],
                            "completion": r["completion"],
                            "correct": bool(r.get("correct")),
                            "length_bin": k[0],
                            "finish_reason": r.get("finish_reason"),
                        }
                    )
                    picked += 1
    return out


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int | None:
    """Index of the token whose character span contains ``char`` (the first one ending after it)."""
    for i, (a, b) in enumerate(offsets):
        if b > char and a <= char:
            return i
        if a > char:
            return i
    return None


def fork_decision_start(text: str, start: int) -> int:
    """A fork span that starts with the alternatives' common prefix is moved past it."""
    alts = FORK_ALTERNATIVES
    n = 0
    while all(len(a) > n for a in alts) and len({a[n] for a in alts}) == 1:
        n += 1
    prefix = alts[0][:n]
    return start + n if prefix and text.startswith(prefix, start) else start


def _lock_digit(text: str, start: int) -> int | None:
    """The forced result digit of the ``a+b=`` / ``a*b=`` step that ends right before ``start``."""
    m = re.search(r"(\d)([+*])(\d)=$", text[:start])
    if not m:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return (a + b) % 10 if op == "+" else (a * b) % 10


def carrier_positions(
    completion: str,
    offsets: Sequence[tuple[int, int]],
    *,
    every: int,
    hot_spots: Sequence[str],
    n_random: int,
    seed: int,
    spans: Sequence[dict] = (),
) -> list[dict]:
    """Positions of one completion (token offsets ``offsets``): ``{j, sources, label,
    label_correct, span_start}`` sorted by j; position j predicts completion token j.

    * regular: j = 0, every, 2 every, ...;
    * hot spots: for every occurrence of each string, the token where it starts ("hot:<s>") and
      the token right after it ("hot:<s>+");
    * random: ``n_random`` distinct j from ``random.Random(seed)``;
    * labelled (``spans`` from ``synth.label_spans``): the token where a lock / fork / recheck span
      starts (a fork moved to its decision, :func:`fork_decision_start`), with its kind and
      correctness."""
    n = len(offsets)
    pos: dict[int, dict] = {}

    def add(j, src):
        if j is not None and 0 <= j < n:
            pos.setdefault(j, {"j": j, "sources": [], "label": None, "label_correct": None, "span_start": None})[
                "sources"
            ].append(src)
            return pos[j]
        return None

    for j in range(0, n, max(1, int(every))) if every else ():
        add(j, "regular")
    for h in hot_spots:
        for m in re.finditer(re.escape(h), completion):
            add(_token_at(offsets, m.start()), f"hot:{h}")
            add(_token_at(offsets, m.end()), f"hot:{h}+")
    rng = random.Random(seed)
    for j in rng.sample(range(n), min(int(n_random), n)):
        add(j, "random")
    for sp in spans:
        start = fork_decision_start(completion, sp["start"]) if sp["kind"] == "fork" else sp["start"]
        p = add(_token_at(offsets, start), f"label:{sp['kind']}")
        if p is not None and p["label"] is None:
            p.update(label=sp["kind"], label_correct=bool(sp.get("correct", True)), span_start=start)
    return [pos[j] for j in sorted(pos)]


def stable_seed(*parts) -> int:
    return int(stable_hash(list(map(str, parts)), n=8), 16)


def build_positions(
    eval_files: dict[str, str | Path],
    tokenizer_dir: str | Path,
    out_path: str | Path,
    *,
    probe: dict,
    seed: int,
    label_spans: Callable[[str], list[dict]] | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Rule probe_positions: carriers from the graded eval files ``{generator: path}`` and their
    positions, one JSONL row per carrier: the carrier fields, ``prompt_ids`` / ``completion_ids``
    (tokenized like ``ssd_math.train``: prompt and completion separately, no special tokens), the
    completion tokens' text, and ``positions`` (:func:`carrier_positions`, each with ``targets``:
    token ids whose probability the forward pass records: the carrier's token, and at a labelled
    lock the forced digit, at a labelled fork each alternative's decision token)."""
    tok = load_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code)
    rows = {g: read_jsonl(p) for g, p in eval_files.items()}
    carriers = select_carriers(
        rows,
        per_generator=int(probe["carriers"]["per_generator"]),
        length_bins=int(probe["carriers"]["length_bins"]),
        seed=seed,
    )
    pc = probe["positions"]
    out = []
    for c in carriers:
        p_ids = tok(c["prompt"], add_special_tokens=False)["input_ids"]
        enc = tok(c["completion"], add_special_tokens=False, return_offsets_mapping=True)
        ids, offs = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
        spans = label_spans(c["completion"]) if label_spans is not None else []
        positions = carrier_positions(
            c["completion"],
            offs,
            every=int(pc["every"]),
            hot_spots=list(pc["hot_spots"]),
            n_random=int(pc["n_random"]),
            seed=stable_seed(seed, c["carrier_id"]),
            spans=spans,
        )
        for p in positions:
            p["token"] = tok.decode([ids[p["j"]]])
            p["char"] = offs[p["j"]][0]
            p["targets"] = {"carrier": ids[p["j"]]}
            if p["label"] == "lock":
                d = _lock_digit(c["completion"], p["span_start"])
                if d is not None:
                    t = tok(str(d), add_special_tokens=False)["input_ids"]
                    if len(t) == 1:
                        p["targets"]["correct"] = t[0]
            elif p["label"] == "fork":
                alts = _fork_alternative_tokens(tok, c["completion"], offs, p["j"], p["span_start"])
                if alts:
                    p["targets"].update({f"alt:{k}": v for k, v in alts.items()})
        out.append({**c, "prompt_ids": p_ids, "completion_ids": ids, "positions": positions})
    n = write_jsonl(out_path, out)
    return {
        "n_carriers": n,
        "n_positions": sum(len(r["positions"]) for r in out),
        "by_generator": {g: sum(1 for r in out if r["generator"] == g) for g in rows},
    }


def _fork_alternative_tokens(tok, text: str, offsets, j: int, start: int) -> dict[str, int]:
    """{alternative: its decision token id at position j}: the completion up to token j with each
    alternative's remainder (after the common prefix) substituted; kept only when the tokens
    before j are unchanged."""
    n = fork_decision_start(FORK_ALTERNATIVES[0], 0)
    tok_start = offsets[j][0]
    out = {}
    for alt in FORK_ALTERNATIVES:
        rest = alt[n:]
        ids = tok(text[:start] + rest, add_special_tokens=False, return_offsets_mapping=True)
        jj = _token_at([tuple(o) for o in ids["offset_mapping"]], tok_start)
        if jj == j:
            out[rest.rstrip(":").strip()] = ids["input_ids"][j]
    return out if len(out) == len(FORK_ALTERNATIVES) else {}
