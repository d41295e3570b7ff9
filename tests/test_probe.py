"""The locks-and-forks probe (ssd_math.probe_positions, probe_forward, probe_stats, probe_analysis): nucleus math, classification, clustered CIs,
carriers and positions on the real tokenizer/model, and a planted-truth run end to end."""

import copy
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

from ssd_math import derive, synth
from ssd_math import probe_analysis as PA
from ssd_math import probe_forward as PF
from ssd_math import probe_positions as PP
from ssd_math import probe_stats as PS
from ssd_math.config import fill_defaults
from ssd_math.io import read_jsonl, write_jsonl
from ssd_math.schema import schema_defaults

from conftest import config_error, tiny_random_model

PROBE_DEFAULTS = schema_defaults("properties/probe")  # the schema owns every default
TH = PROBE_DEFAULTS["classify"]


# ------------------------------------------------------------------------------ nucleus math
def _brute_nucleus(p_row, top_k, top_p):
    """Smallest prefix of the top-k (renormalised) whose mass reaches top_p, by enumeration."""
    ps = sorted(p_row, reverse=True)
    k = len(ps) if top_k <= 0 else min(top_k, len(ps))
    if top_p >= 1:
        return k
    z = sum(ps[:k])
    for m in range(1, k + 1):
        if sum(ps[:m]) / z >= top_p:
            return m
    return k


@pytest.mark.parametrize("top_k,top_p", [(20, 0.95), (5, 0.95), (-1, 0.9), (20, 1.0), (3, 0.5), (-1, 1.0)])
def test_nucleus_matches_brute_force_and_transformers_warpers(top_k, top_p):
    import torch
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2.5, size=(64, 48))
    logits[::4, 0] += 9  # some peaked (lock-like) rows
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    m = PF.truncate_sorted(-np.sort(-p, axis=1), top_k, top_p)
    assert m.tolist() == [_brute_nucleus(r, top_k, top_p) for r in p]
    s = torch.tensor(logits)
    if top_k > 0:
        s = TopKLogitsWarper(top_k)(None, s)
    if top_p < 1:
        s = TopPLogitsWarper(top_p)(None, s)
    assert m.tolist() == torch.isfinite(s).sum(1).tolist()


def test_view_metrics_by_hand():
    p = np.array([[0.5, 0.3, 0.15, 0.05]])
    lg = np.log(p)
    a = PF.view_metrics(lg, {"temperature": 1.0, "top_k": 3, "top_p": 0.8})
    assert a["nucleus"][0] == 2  # top-3 renormalised: 0.526, 0.316, ... -> 0.526 < 0.8, 0.842 >= 0.8
    assert a["tail"][0] == pytest.approx(0.2)
    assert a["tail_k"][0] == pytest.approx(0.05)
    assert a["top1_before"][0] == pytest.approx(0.5)
    assert a["top1"][0] == pytest.approx(0.5 / 0.8)
    q = np.array([0.5, 0.3]) / 0.8
    assert a["entropy"][0] == pytest.approx(-(q * np.log(q)).sum())
    assert a["entropy_before"][0] == pytest.approx(-(p * np.log(p)).sum())
    b = PF.view_metrics(lg, {"temperature": 1.0, "top_k": 3, "top_p": 0.9})
    assert b["nucleus"][0] == 3 and b["tail"][0] == pytest.approx(0.05)
    # temperature first: T -> 0 keeps the argmax only
    c = PF.view_metrics(lg, {"temperature": 0.05, "top_k": -1, "top_p": 0.95})
    assert c["nucleus"][0] == 1 and c["top1"][0] == pytest.approx(1.0)


# ---------------------------------------------------------------------------- classification
def test_classify_thresholds_at_and_past_each_boundary():
    assert PS.classify(0.9, 0.05, 2, 0.05, TH) == "lock"  # every lock bound is inclusive
    assert PS.classify(0.8999, 0.05, 2, 0.05, TH) == "mixed"
    assert PS.classify(0.95, 0.03, 3, 0.0, TH) == "mixed"  # nucleus too large
    assert PS.classify(0.95, 0.03, 1, 0.051, TH) == "mixed"  # tail too heavy
    assert PS.classify(0.8, 0.1, 5, 0.1, TH) == "fork"  # every fork bound is inclusive
    assert PS.classify(0.8001, 0.1, 5, 0.0, TH) == "mixed"
    assert PS.classify(0.5, 0.0999, 5, 0.0, TH) == "mixed"
    assert PS.classify(0.5, 0.4, 5, 0.1001, TH) == "mixed"
    strict = {**TH, "lock_top1": 0.99}
    assert PS.classify(0.95, 0.03, 1, 0.0, strict) == "mixed"


def test_lock_subclass():
    assert PS.lock_subclass(" 7", " 7", " 7") == "strict"
    assert PS.lock_subclass(" 7", " 8", " 7") == "swap"
    assert PS.lock_subclass("Wait", "Wait", "Wait") == "self-correction"
    assert PS.lock_subclass("\n", "\n", "Wait") == "self-correction"


# --------------------------------------------------------------------------- clustered CI
def test_clustered_ci_is_the_prompt_bootstrap_of_the_pooled_mean():
    from ssd_math import stats

    rng = np.random.default_rng(3)
    clusters = [f"p{i}" for i in range(30) for _ in range(1 + i % 4)]
    vals = rng.normal(0, 1, len(clusters)) + np.array([hash(c) % 5 for c in clusters])
    res = PS.clustered_mean_ci(vals, clusters, n_boot=500, seed=11, conf=0.9)
    assert res["estimate"] == pytest.approx(vals.mean())
    assert res["n_prompts"] == 30 and res["n_positions"] == len(vals)
    # brute force: resample prompts with the same index stream, pooled ratio per resample
    names = list(dict.fromkeys(clusters))
    num = np.array([vals[[c == n for c in clusters]].sum() for n in names])
    den = np.array([sum(c == n for c in clusters) for n in names], dtype=float)
    idx = np.random.default_rng(11).integers(0, len(names), size=(500, len(names)))
    boot = num[idx].sum(1) / den[idx].sum(1)
    lo, hi = np.quantile(boot, [0.05, 0.95])
    assert (res["lo"], res["hi"]) == pytest.approx((lo, hi))
    assert stats._CHUNK_ELEMS // len(names) >= 500  # one chunk: the brute force's single draw


def test_clustered_ci_wider_than_iid_when_positions_share_a_prompt():
    rng = np.random.default_rng(0)
    per_prompt = rng.normal(0, 1, 40)
    vals = np.repeat(per_prompt, 10) + rng.normal(0, 0.05, 400)
    clustered = PS.clustered_mean_ci(vals, np.repeat(np.arange(40), 10), n_boot=800, seed=1, conf=0.95)
    iid = PS.clustered_mean_ci(vals, np.arange(400), n_boot=800, seed=1, conf=0.95)
    assert clustered["hi"] - clustered["lo"] > 2.5 * (iid["hi"] - iid["lo"])


def test_precision_as_a_ratio():
    hit = [1, 0, 1, 0]
    pred = [1, 1, 1, 0]
    r = PS.clustered_mean_ci(hit, ["a", "a", "b", "c"], den=pred, n_boot=200, seed=0, conf=0.95)
    assert r["estimate"] == pytest.approx(2 / 3) and r["n_positions"] == 3


# ------------------------------------------------------------------------- label_spans, carriers
def _solution(seed=0, level=3, subject=None):
    rng = random.Random(seed)
    row = synth.make_problem(rng, level, subject)
    return row, synth.completion_after_prompt("x<think>\n", synth.worked_solution(row, rng, p_recheck=0.5))


def test_label_spans_finds_every_step_and_method_and_flags_wrong_digits():
    row, text = _solution(1, level=3, subject="sum")
    spans = synth.label_spans(text)
    n_methods = text.count("From the ")
    assert sum(s["kind"] == "fork" for s in spans) == n_methods
    assert sum(s["kind"] == "lock" for s in spans) == 3 * n_methods  # 3 steps per chain
    assert sum(s["kind"] == "recheck" for s in spans) == text.count("Wait")
    assert all(text[s["start"] : s["end"]] == s["correct"] for s in spans if s["kind"] == "lock")
    lock = next(s for s in spans if s["kind"] == "lock")
    wrong = str((int(text[lock["start"]]) + 1) % 10)
    bad = text[: lock["start"]] + wrong + text[lock["end"] :]
    flags = [bad[s["start"] : s["end"]] == s["correct"] for s in synth.label_spans(bad) if s["kind"] == "lock"]
    assert flags.count(False) == 1 and flags[0] is False


def test_select_carriers_stratifies_and_is_seeded():
    rows = [
        {
            "prompt_id": f"q{i}",
            "sample_index": 0,
            "prompt": "p",
            "completion": "c" * (5 + i),
            "n_completion_tokens": 5 + i,
            "correct": i % 3 == 0,
        }
        for i in range(60)
    ]
    a = PP.select_carriers({"base": rows, "ssd": rows[:10]}, per_generator=12, length_bins=3, seed=5)
    b = PP.select_carriers({"base": rows, "ssd": rows[:10]}, per_generator=12, length_bins=3, seed=5)
    assert a == b
    base = [c for c in a if c["generator"] == "base"]
    assert len(base) == 12 and len([c for c in a if c["generator"] == "ssd"]) == 10
    cells = {}
    for c in base:
        cells[(c["length_bin"], c["correct"])] = cells.get((c["length_bin"], c["correct"]), 0) + 1
    assert len(cells) == 6 and set(cells.values()) == {2}  # 3 length bins x correct/incorrect, even
    assert PP.select_carriers({"base": rows}, per_generator=12, length_bins=3, seed=6) != a[:12]


def test_carrier_positions_sources():
    text = "From the left: 3+4=7.\nWait, x \\boxed{7}"
    offs = [(i, i + 1) for i in range(len(text))]  # one character per token
    pos = PP.carrier_positions(
        text, offs, every=10, hot_spots=["Wait", "\\boxed"], n_random=2, seed=0, spans=synth.label_spans(text)
    )
    by_j = {p["j"]: p for p in pos}
    assert {0, 10, 20, 30} <= set(by_j)
    assert "hot:Wait" in by_j[text.index("Wait")]["sources"]
    assert "hot:Wait+" in by_j[text.index("Wait") + 4]["sources"]
    assert by_j[text.index("left")]["label"] == "fork"  # moved to the decision
    assert by_j[text.index("=7") + 1]["label"] == "lock"
    assert sum("random" in p["sources"] for p in pos) == 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("probe_tiny")
    mdir, tok, evals = tiny_random_model(d, n_eval=8)
    from ssd_math.prompting import render_prompt

    rng = random.Random(0)
    rows = []
    for i, r in enumerate(evals):
        prompt = render_prompt(tok, r["problem"])
        comp = synth.completion_after_prompt(prompt, synth.worked_solution(r, rng, p_recheck=0.3))
        rows.append(
            {
                "prompt_id": r["id"],
                "sample_index": 0,
                "prompt": prompt,
                "completion": comp,
                "n_completion_tokens": len(tok(comp)["input_ids"]),
                "correct": i % 2 == 0,
            }
        )
    ev = d / "eval.jsonl"
    write_jsonl(ev, rows)
    probe = copy.deepcopy(PROBE_DEFAULTS)
    probe["carriers"]["per_generator"] = 8
    probe["labeled"] = True
    out = d / "positions.jsonl"
    PP.build_positions({"base": ev}, mdir, out, probe=probe, seed=3, label_spans=synth.label_spans)
    return SimpleNamespace(d=d, mdir=mdir, tok=tok, positions=out, probe=probe)


def test_positions_targets_are_the_tasks_truth(tiny):
    carriers = read_jsonl(tiny.positions)
    assert len(carriers) == 8
    n_lock = n_fork = 0
    for c in carriers:
        text = c["completion"]
        assert tiny.tok(text, add_special_tokens=False)["input_ids"] == c["completion_ids"]
        for p in c["positions"]:
            assert p["targets"]["carrier"] == c["completion_ids"][p["j"]]
            if p["label"] == "lock":
                n_lock += 1
                digit = PP._lock_digit(text, p["span_start"])
                assert tiny.tok.decode([p["targets"]["correct"]]) == str(digit) == p["token"]
            if p["label"] == "fork":
                n_fork += 1
                alts = {k: tiny.tok.decode([v]) for k, v in p["targets"].items() if k.startswith("alt:")}
                # the first token where the methods differ (" left" / " right" once merged)
                assert set(alts) == {"alt:left", "alt:right"} and len(set(alts.values())) == 2
                assert "left".startswith(alts["alt:left"].strip()) and alts["alt:left"].strip()
                assert "right".startswith(alts["alt:right"].strip()) and alts["alt:right"].strip()
                assert p["token"] in alts.values()
    spans = [s for c in carriers for s in synth.label_spans(c["completion"])]
    assert n_lock == sum(s["kind"] == "lock" for s in spans) > 0
    assert n_fork == sum(s["kind"] == "fork" for s in spans) > 0


def test_forward_equals_unbatched_full_logits(tiny):
    import torch

    from ssd_math.modeling import load_model

    carriers = read_jsonl(tiny.positions)
    model = load_model(tiny.mdir)
    got = {c["carrier_id"]: lg for c, lg in PF.position_logits(model, carriers, max_batch_tokens=600)}
    assert len(PF.batches_by_tokens(carriers, 600)) > 1  # several padded batches
    for c in carriers:
        ids = torch.tensor([c["prompt_ids"] + c["completion_ids"]])
        with torch.no_grad():
            full = model(input_ids=ids).logits[0].numpy()
        want = full[[len(c["prompt_ids"]) + p["j"] - 1 for p in c["positions"]]]
        np.testing.assert_allclose(got[c["carrier_id"]], want, atol=2e-4)
    out = tiny.d / "dists_base.jsonl"
    n = PF.forward_model(
        tiny.positions,
        tiny.mdir,
        out,
        model_name="base",
        views_={"ref": {"temperature": 1.0, "top_k": 20, "top_p": 0.95}},
        temperature=1.0,
        top_n=5,
        max_batch_tokens=600,
    )
    rows = read_jsonl(out)
    assert n == len(rows) == sum(len(c["positions"]) for c in carriers)
    r = rows[0]
    assert r["top_probs"] == sorted(r["top_probs"], reverse=True) and r["top_probs"][0] == pytest.approx(
        r["raw_top1"], abs=1e-6
    )


# -------------------------------------------------------------------------- planted truth
V = 16
EQ, THE, TILDE, WAIT, PAD = 1, 2, 3, 4, 0
DIG = {d: 6 + d for d in range(10)}
LEFT, RIGHT = 5, 15  # (15 doubles as the digit 9: never a target in this table)


def _row(top: dict[int, float]) -> np.ndarray:
    rest = (1.0 - sum(top.values())) / (V - len(top))
    p = np.full(V, rest)
    for t, v in top.items():
        p[t] = v
    return np.log(p)


def _table(kind: str) -> np.ndarray:
    """Next-token logits keyed by the previous token: '=' -> a lock on 7, 'the' -> a fork between
    left / right, '~' -> a lock on 7 (base) / on 8 (trained: a swap), anything else -> mixed (after
    token 12 the trained model is lock-like: the class is still the base model's)."""
    t = np.stack([_row({DIG[1]: 0.85, DIG[2]: 0.05})] * V)
    if kind == "base":
        t[EQ] = _row({DIG[7]: 0.93, DIG[4]: 0.04})  # nucleus 2 at top-p 0.95, tail 0.03
        t[THE] = _row({LEFT: 0.55, RIGHT: 0.4})
        t[TILDE] = _row({DIG[7]: 0.97})
    else:
        t[EQ] = _row({DIG[7]: 0.99, DIG[4]: 0.005})  # sharper: nucleus 1, tail 0.01
        t[THE] = _row({LEFT: 0.48, RIGHT: 0.47})  # the fork kept, more even
        t[TILDE] = _row({DIG[8]: 0.97})
        t[12] = _row({EQ: 0.97})  # mixed for the base, lock-like here
    return t


class Planted:
    """A stand-in causal LM: logits of each position = a hand-set table row of its input token."""

    def __init__(self, kind):
        self.table = _table(kind)

    def __call__(self, input_ids, attention_mask=None, logits_to_keep=None):
        import torch

        lg = torch.tensor(self.table)[input_ids]
        return SimpleNamespace(logits=lg[:, logits_to_keep] if logits_to_keep is not None else lg)


def _planted_carriers(n=12):
    rng = random.Random(0)
    out = []
    for i in range(n):
        comp = [THE, LEFT if i % 2 else RIGHT, 12, EQ, DIG[7], 13, TILDE, DIG[7], 14, 9]
        comp += [rng.randrange(8, 14) for _ in range(rng.randrange(0, 4))]
        pos = []
        for j in range(1, len(comp)):
            prev = comp[j - 1]
            label = {EQ: "lock", THE: "fork", TILDE: "lock"}.get(prev)
            targets = {"carrier": comp[j]}
            if prev in (EQ, TILDE):
                targets["correct"] = DIG[7]
            if prev == THE:
                targets.update({"alt:left": LEFT, "alt:right": RIGHT})
            pos.append(
                {
                    "j": j,
                    "sources": ["regular"],
                    "label": label,
                    "label_correct": True,
                    "span_start": j,
                    "char": j,
                    "token": str(comp[j]),
                    "targets": targets,
                }
            )
        out.append(
            {
                "carrier_id": f"g:{i}",
                "generator": "g",
                "prompt_id": f"q{i // 2}",
                "prompt": "",
                "completion": "x" * 20,
                "correct": True,
                "length_bin": 0,
                "prompt_ids": [PAD],
                "completion_ids": comp,
                "positions": pos,
            }
        )
    return out


def test_planted_truth_classes_deltas_and_controls(tmp_path):
    carriers = _planted_carriers()
    write_jsonl(tmp_path / "pos.jsonl", carriers)
    views_ = {
        "ref": {"temperature": 1.0, "top_k": 20, "top_p": 0.95},
        "arm:ssd": {"temperature": 1.0, "top_k": 20, "top_p": 0.95},
        "arm:naive": {"temperature": 1.0, "top_k": -1, "top_p": 1.0},
    }
    dists = {}
    for name, kind in (("base", "base"), ("ssd", "trained"), ("naive", "base")):
        rows = []
        for c, lg in PF.position_logits(Planted(kind), carriers, max_batch_tokens=40):
            rows += [
                {"model": name, **r}
                for r in PF.summarize_positions(c, lg, views_=views_, temperature=1.0, top_n=5, decode=str)
            ]
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
        dists[name] = tmp_path / f"{name}.jsonl"
    probe = {**copy.deepcopy(PROBE_DEFAULTS), "compare_arm": "ssd", "controls": ["naive"]}
    acc = {}
    for name, ok in (("ssd", lambda i: i % 2 == 0), ("naive", lambda i: i % 4 == 0)):
        write_jsonl(
            tmp_path / f"acc_{name}.jsonl",
            [{"prompt_id": f"q{i}", "sample_index": 0, "correct": ok(i)} for i in range(40)],
        )
        acc[(name, "eval_main", "0.7")] = tmp_path / f"acc_{name}.jsonl"
    t = PA.analyse(
        tmp_path / "pos.jsonl",
        dists,
        probe=probe,
        views_=views_,
        stats_cfg={"conf": 0.95, "n_boot": 400, "seed": 1},
        share_files={},
        accuracy_files=acc,
    )

    cls = {(r["carrier_id"], r["j"]): r["class"] for r in t["positions"] if r["model"] == "base"}
    for c in carriers:
        for p in c["positions"]:
            prev = c["completion_ids"][p["j"] - 1]
            want = {EQ: "lock", TILDE: "lock", THE: "fork"}.get(prev, "mixed")
            assert cls[(c["carrier_id"], p["j"])] == want
    own = {(r["carrier_id"], r["j"]): r["own_class"] for r in t["positions"] if r["model"] == "ssd"}
    after12 = sum(c["completion_ids"][p["j"] - 1] == 12 for c in carriers for p in c["positions"])
    assert after12 >= 12
    assert sum(v == "lock" for v in own.values()) == sum(v == "lock" for v in cls.values()) + after12

    d = {(r["arm"], r["view"], r["class"], r["metric"]): r for r in t["deltas"]}
    strict = d[("ssd", "ref", "lock:strict", "top1_before")]
    assert strict["delta"] == pytest.approx(0.99 - 0.93) and strict["lo"] == pytest.approx(0.06)
    assert strict["n_positions"] == 12 and strict["n_prompts"] == 6
    assert d[("ssd", "ref", "lock:strict", "nucleus")]["delta"] == pytest.approx(-1.0)
    assert d[("ssd", "ref", "lock:strict", "tail")]["delta"] == pytest.approx(0.01 - 0.03)
    assert d[("ssd", "ref", "lock:swap", "top1_before")]["n_positions"] == 12
    assert d[("ssd", "ref", "lock:swap", "top1_before")]["delta"] == pytest.approx(0.0, abs=1e-12)
    h = lambda *q: -sum(x * math.log(x) for x in q)  # noqa: E731
    rest_b, rest_s = 0.05 / 14, 0.05 / 14
    fork = d[("ssd", "ref", "fork", "entropy_before")]
    assert fork["delta"] == pytest.approx(h(0.48, 0.47, *[rest_s] * 14) - h(0.55, 0.4, *[rest_b] * 14))
    assert d[("naive", "ref", "lock", "top1_before")]["delta"] == pytest.approx(0.0, abs=1e-12)
    # with no truncation the own view's nucleus is the whole vocabulary
    assert d[("naive", "own", "lock", "nucleus")]["arm_mean"] == V

    truth = {(r["model"], r["class"]): r for r in t["truth"]}
    assert truth[("base", "lock")]["recall"] == 1.0 and truth[("base", "lock")]["precision"] == 1.0
    assert truth[("base", "fork")]["recall"] == 1.0
    eff = {(r["model"], r["quantity"]): r for r in t["truth_effect"]}
    pc = eff[("ssd", "lock: P(correct digit)")]
    # true locks: '=' (7 is right: 0.93 -> 0.99) and '~' (7 is right: 0.97 -> the trained model's
    # swap puts 0.05/15 on it)
    assert pc["delta_vs_base"] == pytest.approx(((0.99 - 0.93) + (0.03 / 15 - 0.97)) / 2)
    ent = eff[("ssd", "fork: entropy over valid methods (bits)")]
    hb = lambda a, b: -sum(x / (a + b) * math.log2(x / (a + b)) for x in (a, b))  # noqa: E731
    assert ent["estimate"] == pytest.approx(hb(0.48, 0.47))
    assert ent["delta_vs_base"] == pytest.approx(hb(0.48, 0.47) - hb(0.55, 0.4))

    ctl = {(r["family"], r["quantity"]): r for r in t["controls"]}
    assert ctl[("probe (ref view)", "lock: tail")]["delta"] == pytest.approx(
        d[("ssd", "ref", "lock", "tail")]["delta"]
    )  # naive == base here, so ssd - naive = ssd - base
    assert ctl[("ground truth", "lock: P(correct digit)")]["delta"] == pytest.approx(pc["delta_vs_base"])
    a = ctl[("accuracy", "eval_main @ T0.7")]
    assert (a["compare"], a["control_value"], a["delta"], a["n"]) == pytest.approx((0.5, 0.25, 0.25, 40))
    assert a["lo"] < 0.25 < a["hi"]
    ex = [r for r in t["examples"] if r["arm"] == "ssd" and r["class"] == "lock"]
    assert len(ex) == 3 and all("0.9" in r["base_top5"] for r in ex)


# ------------------------------------------------------------------------------ config, shares
def test_probe_config_checks_name_the_key(default):
    c = copy.deepcopy(default)
    c["probe"]["t_eval"] = 1.7
    assert "probe.t_eval = 1.7: not on eval.t_grid" in config_error(c)
    c = copy.deepcopy(default)
    c["probe"]["controls"] = ["nofilter"]
    assert "probe.controls[0] = 'nofilter': not a default arm" in config_error(c)
    c = copy.deepcopy(default)
    c["probe"]["compare_arm"] = "t13"
    c["probe"]["arms"] = ["ssd"]
    assert "probe.compare_arm = 't13': not among the probed arms" in config_error(c)
    c = copy.deepcopy(default)
    c["probe"]["classify"]["lock_top1"] = 1.5
    assert "probe.classify.lock_top1" in config_error(c)


def test_settings_fill_defaults(default):
    c = copy.deepcopy(default)
    del c["probe"]
    fill_defaults(c)  # what the rules see
    s = derive.probe_settings(c)
    assert s["arms"] == list(c["arms"]) and s["compare_arm"] == c["report"]["table1"]["ssd_arm"]
    assert s["eval_set"] == c["eval"]["sets"][0] and s["controls"] == []
    assert PF.views(c)["arm:ssd"] == {"temperature": 1.1, "top_k": 20, "top_p": 0.95}
    assert PF.views(c)["arm:naive"] == {"temperature": 1.0, "top_k": -1, "top_p": 1.0}


def test_first_method_and_method_entropy(tmp_path):
    assert PA.first_method("Wait\nFrom the right: 1+2=3.\nFrom the left:") == "right"
    assert PA.first_method("garbage") is None
    h, mass, share = PA.method_entropy({"left": 0.3, "right": 0.3})
    assert (h, mass, share) == pytest.approx((1.0, 0.6, 0.5))
    rows = [{"completion": "From the left: x"}] * 3 + [{"completion": "From the right: x"}, {"completion": "?"}]
    write_jsonl(tmp_path / "e.jsonl", rows)
    sh = PA._fork_shares({("base", "1.5"): tmp_path / "e.jsonl"}, 0.95)
    left = next(r for r in sh if r["method"] == "left")
    assert left["share"] == 0.75 and left["n_with_method"] == 4 and left["n_samples"] == 5
    from ssd_math.stats import wilson_ci

    assert (left["lo"], left["hi"]) == pytest.approx(wilson_ci(3, 4, 0.95))  # over solutions naming a method
