"""Probing locks and forks (study §6): next-token distributions of the base and trained models at
chosen positions of "carrier" completions, compared before and after top-k/top-p truncation.

The pipeline (rules/probe.smk), one library function per rule:

1. :func:`build_positions` — carriers: prompt + completion pairs already sampled at the probe's
   T_eval (the eval grid's generation files; nothing is generated again), stratified by length
   bin x correctness x generator (:func:`select_carriers`); tokenized like training does (prompt
   and completion separately); positions in each completion (:func:`carrier_positions`): regular
   intervals, hot spots (before and right after each occurrence of a configured string, e.g.
   ``\\boxed``, ``Let``, ``Wait``, the method line) and seeded random ones; on the embedded task
   also every labelled lock / fork (``synth.label_spans``) with its ground-truth target tokens.
2. :func:`forward_model` — one model: ONE batched forward pass over each carrier (no
   generation); at every position the distribution's summary under each *view* (a temperature +
   top-k + top-p: the probe's reference decoding and each arm's training-sampling settings):
   top-1 probability after truncation, nucleus size (tokens kept), tail mass (untruncated mass
   outside the nucleus), entropy before and after truncation, mass outside the top-k, the top-5
   tokens, and the probability of the position's target tokens.
3. :func:`analyse` — classification (:func:`classify`: lock-like / fork-like / mixed from the
   base model's reference view; locks split into strict / swap / self-correction per trained
   model, :func:`lock_subclass`), per-class deltas (trained - base) with prompt-clustered bootstrap
   CIs (:func:`clustered_mean_ci`, over ``ssd_math.stats``' resampler), example top-5 tables,
   ground-truth recovery and the exact SSD effect at true locks / forks, fork-method shares in
   sampled solutions, and the control comparison (compare arm vs each control).

Conventions: a *position* ``j`` of a completion is the next-token distribution that predicts
completion token ``j`` (logits at sequence index ``len(prompt_ids) + j - 1``). Probabilities are
softmax(logits / T) with the view's T; truncation follows the sampler's HF order (temperature ->
top-k -> top-p on the top-k-renormalised distribution, at least one token kept, top_p >= 1 off,
top_k <= 0 off). Entropies are in nats.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from . import config as sc
from . import stats
from .io import read_jsonl, stable_hash, write_csv, write_jsonl
from .modeling import load_model
from .stats import matrix, wilson_ci
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)

CLASSES = ("lock", "fork", "mixed")
LOCK_SUBCLASSES = ("strict", "swap", "self-correction")
SELF_CORRECTION = ("Wait",)     # a lock whose carrier token or top-1 starts (stripped) with one
METRICS = ("top1_before", "top1", "nucleus", "tail", "tail_k", "entropy_before", "entropy")

#: The embedded task's method phrases: a fork span starting with their common prefix is moved to
#: the first character where the alternatives differ (the decision), e.g. "From the |left:".
FORK_ALTERNATIVES = ("From the left:", "From the right:")


# ------------------------------------------------------------------------------------- config
def views(cfg: dict) -> dict[str, dict]:
    """{view name: {temperature, top_k, top_p}}: ``ref`` (the probe's reference decoding at
    probe.temperature) and ``arm:<arm>`` (each probed arm's training-sampling settings)."""
    s = sc.probe_settings(cfg)
    out = {"ref": {"temperature": float(s["temperature"]), "top_k": int(s["reference"]["top_k"]),
                   "top_p": float(s["reference"]["top_p"])}}
    for a in s["arms"]:
        sa = sc.arm_sampling(cfg, a)
        out[f"arm:{a}"] = {"temperature": float(sa.temperature), "top_k": int(sa.top_k),
                           "top_p": float(sa.top_p)}
    return out


# ------------------------------------------------------------------------------ nucleus math
def truncate_sorted(p_desc: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """Number of tokens kept (the nucleus size) per row of probabilities sorted descending.

    HF order: top-k (``top_k <= 0``: off) keeps the k largest; top-p on the top-k-renormalised
    distribution keeps token i iff the mass of the tokens ranked before it is < top_p (so the
    smallest prefix reaching top_p, at least one token); ``top_p >= 1`` is off."""
    p = np.atleast_2d(np.asarray(p_desc, dtype=np.float64))
    v = p.shape[1]
    k = v if top_k <= 0 else min(int(top_k), v)
    if top_p >= 1.0:
        return np.full(p.shape[0], k, dtype=np.int64)
    q = p[:, :k] / p[:, :k].sum(axis=1, keepdims=True)
    before = np.cumsum(q, axis=1) - q  # mass ranked strictly before each token
    return np.maximum(1, (before < top_p).sum(axis=1)).astype(np.int64)


def view_metrics(logits: np.ndarray, view: dict) -> dict[str, np.ndarray]:
    """Per-row summary of ``logits`` (P x V) under one view: ``top1_before`` / ``top1`` (the
    largest probability untruncated / after truncation),
    ``nucleus`` (tokens kept), ``tail`` (untruncated mass outside the nucleus), ``entropy_before``
    / ``entropy`` (untruncated / truncated, nats), ``tail_k`` (untruncated mass outside the top-k;
    0 with top-k off)."""
    z = np.asarray(logits, dtype=np.float64) / float(view["temperature"])
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    ps = -np.sort(-p, axis=1)
    m = truncate_sorted(ps, int(view["top_k"]), float(view["top_p"]))
    cum = np.cumsum(ps, axis=1)
    kept = cum[np.arange(len(m)), m - 1]
    rank = np.arange(ps.shape[1])[None, :]
    q = np.where(rank < m[:, None], ps, 0.0) / kept[:, None]
    k = int(view["top_k"])
    tail_k = 1.0 - cum[:, min(k, ps.shape[1]) - 1] if k > 0 else np.zeros(len(m))
    return {"top1_before": ps[:, 0], "top1": ps[:, 0] / kept, "nucleus": m, "tail": np.clip(1.0 - kept, 0.0, 1.0),
            "entropy_before": _entropy(ps), "entropy": _entropy(q), "tail_k": np.clip(tail_k, 0.0, 1.0)}


def _entropy(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)


# ---------------------------------------------------------------------------- classification
def classify(top1: float, second: float, nucleus: int, tail: float, th: dict) -> str:
    """lock (high top-1, small nucleus, low tail), fork (top-1 below ``fork_top1_max`` with a
    runner-up of at least ``fork_second_min``, low tail) or mixed; thresholds: config
    ``probe.classify``. Read from the base model's reference view."""
    if top1 >= th["lock_top1"] and nucleus <= th["lock_nucleus_max"] and tail <= th["lock_tail_max"]:
        return "lock"
    if top1 <= th["fork_top1_max"] and second >= th["fork_second_min"] and tail <= th["fork_tail_max"]:
        return "fork"
    return "mixed"


def lock_subclass(base_top1_token: str, model_top1_token: str, carrier_token: str) -> str:
    """A lock's split per trained model: self-correction (the carrier's token or either top-1
    begins a self-correction word, e.g. "Wait"), swap (the trained model's top-1 differs from the
    base's) or strict (same top-1)."""
    if any(t.strip().startswith(w) for t in (base_top1_token, model_top1_token, carrier_token)
           for w in SELF_CORRECTION if t.strip()):
        return "self-correction"
    return "strict" if base_top1_token == model_top1_token else "swap"


# ----------------------------------------------------------------------------------- carriers
def select_carriers(rows_by_generator: dict[str, Sequence[dict]], *, per_generator: int,
                    length_bins: int, seed: int) -> list[dict]:
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
                    out.append({"carrier_id": f"{gen}:{r['prompt_id']}:{r.get('sample_index', 0)}",
                                "generator": gen, "prompt_id": str(r["prompt_id"]),
                                "prompt": r["prompt"], "completion": r["completion"],
                                "correct": bool(r.get("correct")), "length_bin": k[0],
                                "finish_reason": r.get("finish_reason")})
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


def carrier_positions(completion: str, offsets: Sequence[tuple[int, int]], *, every: int,
                      hot_spots: Sequence[str], n_random: int, seed: int,
                      spans: Sequence[dict] = ()) -> list[dict]:
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
            pos.setdefault(j, {"j": j, "sources": [], "label": None, "label_correct": None,
                               "span_start": None})["sources"].append(src)
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


def _stable_seed(*parts) -> int:
    return int(stable_hash(list(map(str, parts)), n=8), 16)


def build_positions(eval_files: dict[str, str | Path], tokenizer_dir: str | Path, out_path: str | Path, *,
                    probe: dict, seed: int, label_spans: Callable[[str], list[dict]] | None = None,
                    trust_remote_code: bool = False) -> dict:
    """Rule probe_positions: carriers from the graded eval files ``{generator: path}`` and their
    positions, one JSONL row per carrier: the carrier fields, ``prompt_ids`` / ``completion_ids``
    (tokenized like ``ssd_math.train``: prompt and completion separately, no special tokens), the
    completion tokens' text, and ``positions`` (:func:`carrier_positions`, each with ``targets``:
    token ids whose probability the forward pass records: the carrier's token, and at a labelled
    lock the forced digit, at a labelled fork each alternative's decision token)."""
    tok = load_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code)
    rows = {g: read_jsonl(p) for g, p in eval_files.items()}
    carriers = select_carriers(rows, per_generator=int(probe["carriers"]["per_generator"]),
                               length_bins=int(probe["carriers"]["length_bins"]), seed=seed)
    pc = probe["positions"]
    out = []
    for c in carriers:
        p_ids = tok(c["prompt"], add_special_tokens=False)["input_ids"]
        enc = tok(c["completion"], add_special_tokens=False, return_offsets_mapping=True)
        ids, offs = enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]
        spans = label_spans(c["completion"]) if label_spans is not None else []
        positions = carrier_positions(c["completion"], offs, every=int(pc["every"]),
                                      hot_spots=list(pc["hot_spots"]), n_random=int(pc["n_random"]),
                                      seed=_stable_seed(seed, c["carrier_id"]), spans=spans)
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
        out.append({**c, "prompt_ids": p_ids, "completion_ids": ids,
                    "positions": positions})
    n = write_jsonl(out_path, out)
    return {"n_carriers": n, "n_positions": sum(len(r["positions"]) for r in out),
            "by_generator": {g: sum(1 for r in out if r["generator"] == g) for g in rows}}


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


# ------------------------------------------------------------------------------ forward pass
def batches_by_tokens(carriers: Sequence[dict], max_batch_tokens: int) -> list[list[int]]:
    """Carrier indices grouped longest first so that each batch's padded size (rows x longest
    sequence) stays within ``max_batch_tokens`` (a longer carrier is a batch of its own)."""
    lens = [len(c["prompt_ids"]) + len(c["completion_ids"]) for c in carriers]
    order = sorted(range(len(carriers)), key=lambda i: (-lens[i], i))
    out: list[list[int]] = []
    for i in order:
        if out and (len(out[-1]) + 1) * lens[out[-1][0]] <= max_batch_tokens:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def position_logits(model, carriers: Sequence[dict], *, max_batch_tokens: int, device: str = "cpu"):
    """Yield ``(carrier, logits[P, V] as float32 numpy)`` at each carrier's positions: ONE
    right-padded, batched forward pass per batch of carriers (:func:`batches_by_tokens`), no
    generation; the output layer runs only at the positions asked for (``logits_to_keep`` = the
    union of the batch's sequence indices), so a long carrier never materialises L x V logits."""
    import torch

    for batch in batches_by_tokens(carriers, max_batch_tokens):
        chunk = [carriers[i] for i in batch]
        seqs = [c["prompt_ids"] + c["completion_ids"] for c in chunk]
        width = max(map(len, seqs))
        ids = torch.zeros((len(seqs), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, sq in enumerate(seqs):
            ids[i, :len(sq)] = torch.tensor(sq)
            mask[i, :len(sq)] = 1
        want = [[len(c["prompt_ids"]) + int(p["j"]) - 1 for p in c["positions"]] for c in chunk]
        keep = sorted({x for w in want for x in w})
        col = {x: i for i, x in enumerate(keep)}
        with torch.no_grad():
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           logits_to_keep=torch.tensor(keep, device=device)).logits
        for i, c in enumerate(chunk):
            yield c, logits[i, [col[x] for x in want[i]]].float().cpu().numpy()


def summarize_positions(carrier: dict, logits: np.ndarray, *, views_: dict[str, dict],
                        temperature: float, top_n: int, decode: Callable[[int], str]) -> list[dict]:
    """One row per position of ``carrier``: raw (T = ``temperature``, untruncated) top-n tokens
    with probabilities, the second-largest probability, target-token probabilities, and every
    view's metrics (keys ``<view>|<metric>``)."""
    z = logits.astype(np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    top = np.argsort(-p, axis=1)[:, :top_n]
    vm = {name: view_metrics(logits, v) for name, v in views_.items()}
    rows = []
    for r, pos in enumerate(carrier["positions"]):
        row = {"carrier_id": carrier["carrier_id"], "prompt_id": carrier["prompt_id"], "j": pos["j"],
               "raw_top1": float(p[r, top[r, 0]]), "raw_second": float(p[r, top[r, 1]]) if top_n > 1 else 0.0,
               "top_tokens": [decode(int(t)) for t in top[r]],
               "top_probs": [round(float(p[r, t]), 6) for t in top[r]],
               "target_probs": {k: float(p[r, v]) for k, v in pos.get("targets", {}).items()}}
        for name, m in vm.items():
            for k, arr in m.items():
                row[f"{name}|{k}"] = float(arr[r])
        rows.append(row)
    return rows


def forward_model(positions_path: str | Path, model_dir: str | Path, out_path: str | Path, *,
                  model_name: str, views_: dict[str, dict], temperature: float, top_n: int,
                  max_batch_tokens: int, device: str = "cpu", dtype: str = "float32",
                  trust_remote_code: bool = False, threads: int = 1) -> int:
    """Rule probe_forward: every position of every carrier through one model; JSONL of
    :func:`summarize_positions` rows (with ``model``) to ``out_path``."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    carriers = read_jsonl(positions_path)
    tok = load_tokenizer(model_dir, trust_remote_code=trust_remote_code)
    model = load_model(model_dir, dtype=dtype, device=device, trust_remote_code=trust_remote_code)
    rows = []
    for c, lg in position_logits(model, carriers, max_batch_tokens=max_batch_tokens, device=device):
        rows += [{"model": model_name, **r} for r in
                 summarize_positions(c, lg, views_=views_, temperature=temperature, top_n=top_n,
                                     decode=lambda t: tok.decode([t]))]
    rows.sort(key=lambda r: (r["carrier_id"], r["j"]))
    return write_jsonl(out_path, rows)


# --------------------------------------------------------------------------------- statistics
def clustered_mean_ci(values: Sequence[float], clusters: Sequence[str], *, n_boot: int, seed: int,
                      conf: float, den: Sequence[float] | None = None) -> dict:
    """Pooled mean over positions, sum(values) / sum(den) (``den`` default 1 per position: the
    plain mean; 0/1 ``values`` and ``den`` give a precision or recall), with a prompt-clustered
    percentile bootstrap: prompts are resampled with replacement, each keeping all its positions.
    The resampler and percentile are ``ssd_math.stats``' (one ``default_rng(seed)`` stream: the
    numerator's and denominator's per-prompt sums are resampled with the same indices)."""
    vals = np.asarray(values, dtype=float)
    dens = np.ones_like(vals) if den is None else np.asarray(den, dtype=float)
    keys = [str(c) for c in clusters]
    if dens.sum() == 0 or not keys:
        return {"estimate": math.nan, "lo": math.nan, "hi": math.nan, "n_prompts": len(set(keys)),
                "n_positions": int(dens.sum())}
    idx = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    num_c, den_c = np.zeros(len(idx)), np.zeros(len(idx))
    np.add.at(num_c, [idx[k] for k in keys], vals)
    np.add.at(den_c, [idx[k] for k in keys], dens)
    bn = stats._bootstrap_means(num_c, int(n_boot), int(seed))
    bd = stats._bootstrap_means(den_c, int(n_boot), int(seed))
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = bn / bd
    boot = boot[np.isfinite(boot)]
    lo, hi = stats._percentile(boot, float(conf)) if boot.size else (math.nan, math.nan)
    return {"estimate": float(num_c.sum() / den_c.sum()), "lo": lo, "hi": hi,
            "n_prompts": len(idx), "n_positions": int(den_c.sum())}


CI_METHOD = ("pooled mean over positions; prompt-clustered percentile bootstrap (prompts resampled "
             "with replacement, each keeping all its positions)")


# ----------------------------------------------------------------------------------- analysis
def _key(r: dict) -> tuple[str, int]:
    return (r["carrier_id"], int(r["j"]))


def method_entropy(alt_probs: dict[str, float]) -> tuple[float, float, float]:
    """(entropy in bits of the distribution renormalised over the valid methods, the mass on the
    valid methods, the share of the first alternative) from ``{alt: probability}``."""
    v = np.array(list(alt_probs.values()), dtype=float)
    mass = float(v.sum())
    if mass <= 0:
        return math.nan, 0.0, math.nan
    q = v / mass
    h = float(-(q[q > 0] * np.log2(q[q > 0])).sum())
    return h, mass, float(q[0])


def first_method(completion: str) -> str | None:
    """The first method a sampled solution names ("left" / "right" of :data:`FORK_ALTERNATIVES`)."""
    n = fork_decision_start(FORK_ALTERNATIVES[0], 0)
    prefix = FORK_ALTERNATIVES[0][:n]
    alts = [a[n:].rstrip(":").strip() for a in FORK_ALTERNATIVES]
    m = re.search(re.escape(prefix) + "(" + "|".join(map(re.escape, alts)) + ")", completion or "")
    return m.group(1) if m else None


def analyse(positions_path: str | Path, dists: dict[str, str | Path], *, probe: dict,
            views_: dict[str, dict], stats_cfg: dict, share_files: dict[tuple[str, str], str | Path],
            accuracy_files: dict[tuple[str, str, str], str | Path]) -> dict[str, list[dict]]:
    """Rule probe_tables: every table of the probe, as lists of rows (module docstring, 3).

    ``dists``: {model: forward_model output} (``base`` and every probed arm); ``share_files``:
    {(model, T): graded eval file} for the method shares; ``accuracy_files``: {(model, set, T):
    graded eval file} for the control comparison's accuracy rows."""
    th = probe["classify"]
    conf, n_boot, seed = float(stats_cfg["conf"]), int(stats_cfg["n_boot"]), int(stats_cfg["seed"])
    carriers = {c["carrier_id"]: c for c in read_jsonl(positions_path)}
    pos_meta = {(cid, int(p["j"])): p for cid, c in carriers.items() for p in c["positions"]}
    by_model = {m: {_key(r): r for r in read_jsonl(path)} for m, path in dists.items()}
    base = by_model[sc.BASE]
    keys = sorted(base)
    for m, rows in by_model.items():
        if set(rows) != set(keys):
            raise ValueError(f"probe dists of {m!r} and base cover different positions")
    arms = [m for m in dists if m != sc.BASE]

    def cls_of(r):
        return classify(r["raw_top1"], r["raw_second"], int(r["ref|nucleus"]), r["ref|tail"], th)

    base_cls = {k: cls_of(base[k]) for k in keys}
    sub = {a: {k: lock_subclass(base[k]["top_tokens"][0], by_model[a][k]["top_tokens"][0],
                                pos_meta[k].get("token", ""))
               for k in keys if base_cls[k] == "lock"} for a in arms}

    def ci(vals, ks, den=None, salt=""):
        return clustered_mean_ci(vals, [base[k]["prompt_id"] for k in ks], n_boot=n_boot,
                                 seed=seed + _stable_seed(salt) % 100000, conf=conf, den=den)

    def groups(a):
        g = {"all": keys}
        for c in CLASSES:
            g[c] = [k for k in keys if base_cls[k] == c]
        for s in LOCK_SUBCLASSES:
            g[f"lock:{s}"] = [k for k in keys if sub[a].get(k) == s]
        return g

    deltas, positions_tbl, examples = [], [], []
    for a in arms:
        for vname, view in (("ref", "ref"), ("own", f"arm:{a}")):
            for g, ks in groups(a).items():
                for m in METRICS:
                    bv = np.array([base[k][f"{view}|{m}"] for k in ks], dtype=float)
                    av = np.array([by_model[a][k][f"{view}|{m}"] for k in ks], dtype=float)
                    res = ci(av - bv, ks, salt=f"{a}{vname}{g}{m}")
                    deltas.append({"arm": a, "view": vname, "view_settings": _fmt_view(views_[view]),
                                   "class": g, "metric": m,
                                   "base_mean": float(bv.mean()) if len(ks) else math.nan,
                                   "arm_mean": float(av.mean()) if len(ks) else math.nan,
                                   "delta": res["estimate"], "lo": res["lo"], "hi": res["hi"],
                                   "n_positions": len(ks), "n_prompts": res["n_prompts"],
                                   "method": CI_METHOD, "n_boot": n_boot, "conf": conf})
        rng = random.Random(seed)
        for c in CLASSES:
            ks = [k for k in keys if base_cls[k] == c]
            for k in sorted(rng.sample(ks, min(int(probe["examples"]), len(ks)))):
                car = carriers[k[0]]
                ctx = _context(car, k[1])
                examples.append({"arm": a, "class": c, "subclass": sub[a].get(k, ""),
                                 "carrier_id": k[0], "j": k[1], "context": ctx,
                                 "carrier_token": pos_meta[k].get("token", ""),
                                 "base_top5": _fmt_top(base[k]), "arm_top5": _fmt_top(by_model[a][k])})
    for m, rows in by_model.items():
        for k in keys:
            r = rows[k]
            positions_tbl.append({"model": m, "carrier_id": k[0], "j": k[1], "prompt_id": r["prompt_id"],
                                  "generator": carriers[k[0]]["generator"], "class": base_cls[k],
                                  "own_class": cls_of(r), "label": pos_meta[k].get("label") or "",
                                  "sources": ";".join(pos_meta[k]["sources"]),
                                  "top1": r["raw_top1"], "second": r["raw_second"],
                                  "nucleus": int(r["ref|nucleus"]), "tail": r["ref|tail"],
                                  "entropy": r["ref|entropy_before"]})

    # --- ground truth: recovery of the labels, and the SSD effect where it is exact
    truth, effect = [], []
    labelled = [k for k in keys if pos_meta[k].get("label")]
    if labelled:
        for m, rows in by_model.items():
            pred = {k: cls_of(rows[k]) for k in keys}
            for c in ("lock", "fork"):
                is_true = np.array([pos_meta[k].get("label") == c for k in keys], dtype=float)
                is_pred = np.array([pred[k] == c for k in keys], dtype=float)
                hit = is_true * is_pred
                prec = ci(hit, keys, den=is_pred, salt=f"p{m}{c}")
                rec = ci(hit, keys, den=is_true, salt=f"r{m}{c}")
                truth.append({"model": m, "class": c, "n_true": int(is_true.sum()),
                              "n_predicted": int(is_pred.sum()), "n_both": int(hit.sum()),
                              "precision": prec["estimate"], "precision_lo": prec["lo"],
                              "precision_hi": prec["hi"], "recall": rec["estimate"],
                              "recall_lo": rec["lo"], "recall_hi": rec["hi"],
                              "n_positions": len(keys), "n_prompts": prec["n_prompts"],
                              "method": "pooled ratio; " + CI_METHOD, "n_boot": n_boot, "conf": conf})
        effect = _truth_effect(by_model, keys, pos_meta, views_, ci, conf, n_boot)
    shares = _fork_shares(share_files, conf) if labelled else []  # the task's methods only
    controls = _controls(probe, by_model, keys, base_cls, sub, effect, accuracy_files, ci, stats_cfg)
    return {"deltas": deltas, "positions": positions_tbl, "examples": examples, "truth": truth,
            "truth_effect": effect, "fork_shares": shares, "controls": controls}


def _fmt_view(v: dict) -> str:
    k = "off" if v["top_k"] <= 0 else v["top_k"]
    p = "off" if v["top_p"] >= 1 else f"{v['top_p']:g}"
    return f"T{v['temperature']:g}, top-k {k}, top-p {p}"


def _fmt_top(r: dict) -> str:
    return "  ".join(f"{t!r}:{p:.3f}" for t, p in zip(r["top_tokens"], r["top_probs"]))


def _context(car: dict, j: int, n: int = 32) -> str:
    """The ``n`` characters of the completion before position ``j`` (newlines shown as ⏎)."""
    p = next(p for p in car["positions"] if int(p["j"]) == j)
    return ("…" + car["completion"][:int(p["char"])][-n:]).replace("\n", "⏎")


def _truth_effect(by_model, keys, pos_meta, views_, ci, conf, n_boot) -> list[dict]:
    locks = [k for k in keys if pos_meta[k].get("label") == "lock" and "correct" in pos_meta[k]["targets"]]
    forks = [k for k in keys if pos_meta[k].get("label") == "fork"
             and any(t.startswith("alt:") for t in pos_meta[k]["targets"])]
    base = by_model[sc.BASE]
    out = []

    def fork_vals(rows, k):
        alts = {t[4:]: v for t, v in rows[k]["target_probs"].items() if t.startswith("alt:")}
        return method_entropy(alts)

    quantities = {
        "lock: P(correct digit)": (locks, lambda rows, k: rows[k]["target_probs"]["correct"]),
        "lock: top-1 is the correct digit": (locks, lambda rows, k: float(
            rows[k]["target_probs"]["correct"] >= rows[k]["raw_top1"] - 1e-12)),
        "lock: tail mass outside top-k (ref)": (locks, lambda rows, k: rows[k]["ref|tail_k"]),
        "lock: tail mass outside nucleus (ref)": (locks, lambda rows, k: rows[k]["ref|tail"]),
        "fork: entropy over valid methods (bits)": (forks, lambda rows, k: fork_vals(rows, k)[0]),
        "fork: mass on valid methods": (forks, lambda rows, k: fork_vals(rows, k)[1]),
        f"fork: share of '{FORK_ALTERNATIVES[0]}'": (forks, lambda rows, k: fork_vals(rows, k)[2]),
    }
    for m, rows in by_model.items():
        for q, (ks, f) in quantities.items():
            v = np.array([f(rows, k) for k in ks], dtype=float)
            b = np.array([f(base, k) for k in ks], dtype=float)
            ok = np.isfinite(v) & np.isfinite(b)
            kk = [k for k, o in zip(ks, ok) if o]
            est = ci(v[ok], kk, salt=f"e{m}{q}")
            d = ci(v[ok] - b[ok], kk, salt=f"d{m}{q}") if m != sc.BASE else None
            out.append({"model": m, "quantity": q, "estimate": est["estimate"], "lo": est["lo"],
                        "hi": est["hi"], "delta_vs_base": d["estimate"] if d else None,
                        "delta_lo": d["lo"] if d else None, "delta_hi": d["hi"] if d else None,
                        "n_positions": int(ok.sum()), "n_prompts": est["n_prompts"],
                        "method": CI_METHOD + "; delta paired at the same positions",
                        "n_boot": n_boot, "conf": conf, "_values": dict(zip(kk, v[ok]))})
    return out


def _fork_shares(share_files, conf) -> list[dict]:
    out = []
    alts = [a[fork_decision_start(FORK_ALTERNATIVES[0], 0):].rstrip(":").strip() for a in FORK_ALTERNATIVES]
    for (model, t), path in share_files.items():
        methods = [first_method(r.get("completion", "")) for r in read_jsonl(path)]
        named = [x for x in methods if x]
        for alt in alts:
            n_alt = sum(1 for x in named if x == alt)
            lo, hi = wilson_ci(n_alt, len(named), conf) if named else (math.nan, math.nan)
            out.append({"model": model, "T": t, "method": alt, "share": n_alt / len(named) if named else math.nan,
                        "lo": lo, "hi": hi, "n_with_method": len(named), "n_samples": len(methods),
                        "ci_method": "Wilson score interval (one sample per prompt)", "conf": conf})
    return out


def _controls(probe, by_model, keys, base_cls, sub, effect, accuracy_files, ci, stats_cfg) -> list[dict]:
    s_arm = probe["compare_arm"]
    out = []
    if s_arm not in by_model:
        return out
    eff = {(e["model"], e["quantity"]): e["_values"] for e in effect}
    for ctl in probe["controls"]:
        if ctl not in by_model:
            continue
        for g in ("lock", "fork", "mixed"):
            ks = [k for k in keys if base_cls[k] == g]
            for m in METRICS:
                sv = np.array([by_model[s_arm][k][f"ref|{m}"] for k in ks], dtype=float)
                cv = np.array([by_model[ctl][k][f"ref|{m}"] for k in ks], dtype=float)
                r = ci(sv - cv, ks, salt=f"c{ctl}{g}{m}")
                out.append(_ctl_row(s_arm, ctl, "probe (ref view)", f"{g}: {m}", sv.mean() if len(ks) else math.nan,
                                    cv.mean() if len(ks) else math.nan, r, CI_METHOD, stats_cfg))
        for (model, q), vals in eff.items():
            if model != s_arm or (ctl, q) not in eff:
                continue
            cvals = eff[(ctl, q)]
            kk = [k for k in vals if k in cvals]
            d = np.array([vals[k] - cvals[k] for k in kk])
            r = ci(d, kk, salt=f"t{ctl}{q}")
            out.append(_ctl_row(s_arm, ctl, "ground truth", q, np.mean([vals[k] for k in kk]),
                                np.mean([cvals[k] for k in kk]), r, CI_METHOD, stats_cfg))
        for (model, es, t), path in accuracy_files.items():
            if model != s_arm or (ctl, es, t) not in accuracy_files:
                continue
            rs, rc = read_jsonl(path), read_jsonl(accuracy_files[(ctl, es, t)])
            ids = sorted({r["prompt_id"] for r in rs} & {r["prompt_id"] for r in rc})
            _, a = matrix(rs, "correct", ids)
            _, b = matrix(rc, "correct", ids)
            res = stats.paired_delta(a, b, n_boot=int(stats_cfg["n_boot"]), seed=int(stats_cfg["seed"]),
                                     conf=float(stats_cfg["conf"]))
            out.append({"compare_arm": s_arm, "control": ctl, "family": "accuracy", "quantity": f"{es} @ T{t}",
                        "compare": res["estimate_a"], "control_value": res["estimate_b"],
                        "delta": res["estimate"], "lo": res["lo"], "hi": res["hi"], "p_boot": res["p_boot"],
                        "n": res["n_prompts"], "unit": "prompts", "method": res["method"],
                        "n_boot": res["n_boot"], "conf": res["conf"]})
    return out


def _ctl_row(s_arm, ctl, family, q, sv, cv, r, method, stats_cfg) -> dict:
    return {"compare_arm": s_arm, "control": ctl, "family": family, "quantity": q,
            "compare": float(sv), "control_value": float(cv), "delta": r["estimate"], "lo": r["lo"],
            "hi": r["hi"], "p_boot": None, "n": r["n_positions"], "unit": f"positions ({r['n_prompts']} prompts)",
            "method": method + "; paired at the same positions", "n_boot": int(stats_cfg["n_boot"]),
            "conf": float(stats_cfg["conf"])}


def write_tables(tables: dict[str, list[dict]], outputs: dict[str, str | Path]) -> None:
    """Each table to its CSV (``outputs``: {table name: path}); private ``_`` columns dropped."""
    for name, path in outputs.items():
        rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in tables[name]]
        df = pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame({"empty": []})
        write_csv(df, path)
